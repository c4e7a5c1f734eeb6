"""The AccountDB circuit breaker, persisted so the daemon and the CLI share it.

States: ``closed`` (requests flow) → ``open`` after ``threshold`` consecutive
*transient* failures (requests are held back) → ``half_open`` once
``reset_timeout`` seconds have passed (requests are allowed again as a
probe) → ``closed`` on a success, or ``open`` again on a transient failure.

Only transient failures count. The breaker measures whether AccountDB is
*available*; configuration and auth failures (404, TLS, 401) come from a
reachable AccountDB and need an operator, not fewer probes: the caller
retries them at the capped backoff and alerts. Rejections are answers.
So :meth:`Breaker.record_failure` ignores every kind but ``transient``.

The state lives in ``<paths.state_dir>/breaker.json`` (:data:`pve_hooks.statedir.BREAKER`),
replaced atomically by :func:`pve_hooks.statedir.write_json`, and re-read
before every decision, so a transition made by one process is seen by the
other. Every read-modify-write (the daemon's and the CLI's) holds an
advisory lock on ``breaker.json.lock``, so two processes never both act on
the same old state; a read alone takes no lock and creates nothing (the
file is only ever replaced whole, so a reader sees the old or the new
state), which keeps read-only commands such as ``pve-hooks status`` from
creating the state directory. The process that makes a transition calls
``on_change(old, new)`` once, so it is logged once. A corrupt file counts as
closed (with one warning) and is overwritten at the next transition.
"""

import fcntl
import json
import logging
import os
import time

from pve_hooks import statedir

log = logging.getLogger(__name__)

CLOSED = 'closed'
OPEN = 'open'
HALF_OPEN = 'half_open'
STATES = (CLOSED, OPEN, HALF_OPEN)


def breaker_path(settings):
    """Given Settings, return the breaker file's path under ``paths.state_dir``."""
    return statedir.path(settings, statedir.BREAKER)


def from_settings(settings, clock=time.time, on_change=None):
    """Return the :class:`Breaker` configured by ``breaker.*`` in ``paths.state_dir``."""
    return Breaker(breaker_path(settings), settings['breaker.failure_threshold'],
                   settings['breaker.reset_timeout'], clock=clock, on_change=on_change)


class Breaker:
    """A circuit breaker whose state is the JSON file at ``path``.

    ``threshold``: consecutive transient failures that open it;
    ``reset_timeout``: seconds open before half-open; ``clock``: wall-clock
    seconds (shared across processes, so not monotonic); ``on_change``:
    called with (old, new) after this instance changed the state.
    """

    def __init__(self, path, threshold, reset_timeout, clock=time.time, on_change=None):
        self.path = path
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.on_change = on_change
        self._warned_corrupt = False
        self._memory = None  # the state, while it cannot be saved

    # -- public -----------------------------------------------------------

    @property
    def state(self):
        """Return 'closed', 'open' or 'half_open' (an open breaker past its timeout reads half_open).

        Reading changes nothing (``pve-hooks status`` may read it); the
        open → half_open transition is recorded by :meth:`allow`.
        """
        return self.snapshot()['state']

    def snapshot(self):
        """Return the record without changing it: state (as :attr:`state`), failures, opened_at, changed_at.

        Takes no lock and creates no file: the state file is only ever
        replaced whole, so this reads a complete old or new state.
        """
        data = self._read()
        if data['state'] == OPEN and self.clock() - data['opened_at'] >= self.reset_timeout:
            data['state'] = HALF_OPEN
        return data

    def allow(self):
        """Return True when a request may be sent now (closed, or half-open: the probe).

        An open breaker past its timeout is recorded as half_open here, and
        ``on_change`` is called by the process that does so.
        """
        return self._update(lambda data: None)['state'] != OPEN

    def retry_in(self):
        """Return the seconds until an open breaker half-opens (0 when not open)."""
        data = self.snapshot()
        if data['state'] != OPEN:
            return 0.0
        return max(0.0, data['opened_at'] + self.reset_timeout - self.clock())

    def record_success(self):
        """Record a request that reached AccountDB and got an answer: close the breaker."""
        def change(data):
            data['failures'] = 0
            if data['state'] != CLOSED:
                data['state'] = CLOSED
        self._update(change)

    def record_failure(self, kind='transient'):
        """Record a failed request of ``kind``; only 'transient' counts (see the module doc)."""
        if kind != 'transient':
            return

        def change(data):
            data['failures'] += 1
            if data['state'] == HALF_OPEN or (
                    data['state'] == CLOSED and data['failures'] >= self.threshold):
                data['state'] = OPEN
                data['opened_at'] = self.clock()
            elif data['state'] == OPEN:
                # Another process let a request through while we thought it open: restart the wait.
                data['opened_at'] = self.clock()
        self._update(change)

    # -- persistence ------------------------------------------------------

    def _fresh(self):
        return {'state': CLOSED, 'failures': 0, 'opened_at': None, 'changed_at': None}

    def _read(self):
        if self._memory is not None:
            return dict(self._memory)
        try:
            with open(self.path, 'rb') as stream:
                raw = stream.read(65536)
        except FileNotFoundError:
            return self._fresh()
        except OSError as error:
            self._warn('{0}: cannot read the circuit breaker state ({1}); treating it as closed'.format(
                self.path, error.strerror or error))
            return self._fresh()
        try:
            data = json.loads(raw.decode('utf-8'))
            if not (isinstance(data, dict) and data.get('state') in STATES
                    and isinstance(data.get('failures'), int) and not isinstance(data.get('failures'), bool)
                    and (data['state'] != OPEN or isinstance(data.get('opened_at'), (int, float)))):
                raise ValueError('unexpected content')
        except ValueError:
            self._warn('{0}: corrupt circuit breaker state; treating it as closed and rewriting it'.format(
                self.path))
            return self._fresh()
        fresh = self._fresh()
        fresh.update(data)
        clamped = statedir.clamp_future(dict(fresh), self.clock())
        if clamped != fresh:   # written before the clock stepped back: keep the clamp, or it moves with the clock
            try:
                statedir.write_json(self.path, clamped, mode=0o600)
            except OSError:
                pass
        return clamped

    def _warn(self, message):
        if not self._warned_corrupt:
            self._warned_corrupt = True
            log.warning(message, extra={'BREAKER_STATE': CLOSED})

    def _lock(self):
        """Take the exclusive lock for a read-modify-write (creating the lock file and its directory).

        Return the file descriptor holding it, or None when it cannot be
        taken (then the caller goes on unlocked, with one warning).
        """
        try:
            os.makedirs(os.path.dirname(self.path) or '.', mode=0o700, exist_ok=True)
            lock_fd = os.open(self.path + '.lock', os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            self._warn('{0}: cannot lock the circuit breaker state ({1}); using it unlocked'.format(
                self.path, error.strerror or error))
            return None
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        return lock_fd

    def _update(self, change):
        """Read the state under the lock, expire open → half_open, apply ``change``, persist if changed."""
        lock_fd = self._lock()
        try:
            data = self._read()
            before = dict(data)
            if data['state'] == OPEN and self.clock() - data['opened_at'] >= self.reset_timeout:
                data['state'] = HALF_OPEN
            change(data)
            if data != before:
                if data['state'] != before['state']:
                    data['changed_at'] = self.clock()
                try:
                    statedir.write_json(self.path, data, mode=0o600)
                    self._memory = None
                except OSError as error:
                    if self._memory is None:
                        log.error('%s: cannot save the circuit breaker state (%s); keeping it in memory '
                                  'for this process', self.path, error.strerror or error)
                    self._memory = dict(data)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
        if data['state'] != before['state'] and self.on_change is not None:
            self.on_change(before['state'], data['state'])
        return data
