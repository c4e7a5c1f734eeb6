"""systemd glue (``Type=notify``): READY=1, WATCHDOG=1, STATUS=, STOPPING=1, and the watchdog's pacing.

Uses systemd-python's ``systemd.daemon.notify`` when it is installed and
falls back to a raw datagram on ``$NOTIFY_SOCKET`` otherwise. Without
``NOTIFY_SOCKET`` (not started by systemd) every call is a cheap no-op.
Notification failures are never fatal: they are logged once at debug level.
"""

import logging
import os
import socket
import time

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


class Watchdog:
    """Keeps systemd's watchdog fed while the daemon works.

    :meth:`ping` is called between jobs and before and after every pvesh,
    systemctl and AccountDB request, so the gap between two pings is at most
    one bounded call (``proxmox.pvesh_timeout``, ``accountdb.timeout.*``)
    plus a second: WatchdogSec must exceed the longest such timeout. Pings
    are throttled (at most one a second, or half the interval) and start
    only once :meth:`arm` was called (READY=1 sent: before it, systemd's
    start timeout applies, not the watchdog).

    ``notifier``: a :class:`Notifier`; ``monotonic``: a monotonic clock.
    """

    THROTTLE = 1.0   # least seconds between two pings made around calls

    def __init__(self, notifier, monotonic=time.monotonic):
        self.notifier = notifier
        self.monotonic = monotonic
        self.interval = notifier.watchdog_interval()
        self.armed = False
        self._last = float('-inf')

    def arm(self):
        """Start pinging (after READY=1). Return None."""
        self.armed = True

    def ping(self):
        """Send WATCHDOG=1 if one is due. Return None."""
        if not self.interval or not self.armed:
            return
        now = self.monotonic()
        if now - self._last >= min(self.THROTTLE, self.interval * 0.5):
            self.notifier.watchdog()
            self._last = now

    def next_in(self):
        """Seconds until the next ping is needed (half the interval after the last), or None without a watchdog."""
        if not self.interval:
            return None
        return max(0.0, self._last + self.interval * 0.5 - self.monotonic())


def watchdog_problem(settings, notifier):
    """Given Settings and a :class:`Notifier`, return a one-line error when a request may outlast the watchdog, else None.

    systemd kills the daemon after WATCHDOG_USEC without a ping. Calls to
    AccountDB ping while they wait, but a configuration whose
    ``accountdb.timeout.total`` is not below that timeout says the operator
    expects calls systemd will not allow: refuse it at start (and on reload).
    """
    interval = notifier.watchdog_interval()
    if not interval:
        return None
    timeout = interval * 2.0
    total = settings['accountdb.timeout.total']
    if total < timeout:
        return None
    return ('accountdb.timeout.total is {0:g} s but systemd\'s watchdog (WatchdogSec, WATCHDOG_USEC) is {1:g} s; '
            'set accountdb.timeout.total below {1:g} or raise WatchdogSec with '
            '"systemctl edit pve-hooks-reconciler"'.format(total, timeout))


def _one_line(text):
    return ' '.join(str(text).split())
