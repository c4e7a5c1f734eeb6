"""systemd notifications (``Type=notify``): READY=1, WATCHDOG=1, STATUS=, STOPPING=1.

Uses systemd-python's ``systemd.daemon.notify`` when it is installed and
falls back to a raw datagram on ``$NOTIFY_SOCKET`` otherwise. Without
``NOTIFY_SOCKET`` (not started by systemd) every call is a cheap no-op.
Notification failures are never fatal: they are logged once at debug level.
"""

import logging
import os
import socket

log = logging.getLogger(__name__)


def _raw_notify(message, env):
    """Send ``message`` to the datagram socket named by NOTIFY_SOCKET in ``env``.

    Return True if it was sent, False without a socket. Raise OSError.
    """
    address = env.get('NOTIFY_SOCKET')
    if not address:
        return False
    if address.startswith('@'):
        address = '\0' + address[1:]  # abstract namespace
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(address)
        sock.sendall(message.encode('utf-8'))
    finally:
        sock.close()
    return True


class Notifier:
    """Sends sd_notify messages; the watchdog interval comes from the environment.

    ``env`` defaults to os.environ (read once, at construction); systemd-python
    is used only then, since it reads os.environ itself. ``use_systemd`` False
    forces the raw-socket path (tests use it to cover both).
    """

    def __init__(self, env=None, use_systemd=True):
        self.env = dict(os.environ if env is None else env)
        self._send = None
        if use_systemd and env is None:
            try:
                from systemd import daemon as systemd_daemon

                self._send = lambda message: bool(systemd_daemon.notify(message))
            except ImportError:
                self._send = None
        if self._send is None:
            self._send = lambda message: _raw_notify(message, self.env)
        self._failed = False
        self.last_status = None

    @property
    def enabled(self):
        """True when a notification socket is configured."""
        return bool(self.env.get('NOTIFY_SOCKET'))

    def watchdog_interval(self):
        """Return the seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None.

        None when no watchdog is configured, or when WATCHDOG_PID names
        another process.
        """
        usec = self.env.get('WATCHDOG_USEC', '')
        if not usec.isdigit() or int(usec) == 0:
            return None
        pid = self.env.get('WATCHDOG_PID', '')
        if pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 1e6 / 2.0

    def send(self, message):
        """Send raw ``message`` (e.g. 'READY=1'); return True if it was delivered."""
        if not self.enabled:
            return False
        try:
            return bool(self._send(message))
        except OSError as error:
            if not self._failed:
                log.debug('sd_notify failed (%s); continuing without systemd notifications', error)
                self._failed = True
            return False

    def ready(self, status=None):
        """Tell systemd start-up is complete (READY=1, plus STATUS= if given)."""
        message = 'READY=1\nMAINPID={0}'.format(os.getpid())
        if status:
            message += '\nSTATUS=' + _one_line(status)
            self.last_status = status
        return self.send(message)

    def watchdog(self):
        """Ping the systemd watchdog (WATCHDOG=1)."""
        return self.send('WATCHDOG=1')

    def status(self, text):
        """Set the one-line STATUS= shown by systemctl status; unchanged text is not resent."""
        if text == self.last_status:
            return False
        self.last_status = text
        return self.send('STATUS=' + _one_line(text))

    def stopping(self):
        """Tell systemd the service is shutting down (STOPPING=1)."""
        return self.send('STOPPING=1')

    def reloading(self):
        """Tell systemd a configuration reload started (RELOADING=1)."""
        return self.send('RELOADING=1')


def _one_line(text):
    return ' '.join(str(text).split())
