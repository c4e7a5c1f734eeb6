"""The daemon's view of its AccountDB connection: breaker, backoff, health probe, log-once.

Every AccountDB call the daemon makes (event batches, inventory, heartbeat,
whitelist refresh) goes through :meth:`Connection.call`, so there is one
notion of "AccountDB is up / down / refusing our token", one retry schedule
and one place that logs state changes — once per change, not on every
attempt. The client itself never retries (see :mod:`pve_hooks.accountdb.client`).

Policy:

- transient failure (refused, timeout, 5xx, 429, garbage): counted by the
  circuit breaker; next try after capped exponential backoff with full
  jitter, or after the server's Retry-After (capped by
  ``retry.max_retry_after``) when it sent one;
- configuration (404/405, TLS) and auth (401/403) failures: every event is
  kept, an alert is raised, and the call is retried with the same capped
  backoff (the client re-reads the token file before each auth retry); they
  do not open the breaker, which is about availability;
- rejected (400/422 for a lone item): the item's own problem, not the
  connection's: the caller handles it, the connection stays up.

The health endpoint is probed before the first call after start, after any
failure, and whenever the breaker half-opens.
"""

import logging
import random
import time

from pve_hooks.accountdb import backoff
from pve_hooks.accountdb import errors
from pve_hooks.accountdb.transport import display_url
from pve_hooks.observe.logs import RepeatSummariser

log = logging.getLogger(__name__)

UP = 'up'
DOWN = 'down'
UNKNOWN = 'unknown'


class Deferred(Exception):
    """The call was not attempted: backoff or an open breaker. ``until`` is the epoch to retry at."""

    def __init__(self, until, reason):
        self.until = until
        self.reason = reason
        super().__init__(reason)


class Connection:
    """Retry schedule and state of the link to AccountDB.

    ``settings`` gives retry.* options; ``client`` is an accountdb.Client;
    ``breaker`` a breaker.Breaker; ``clock`` returns epoch seconds; ``rand``
    returns a float in [0, 1) for jitter; ``on_change(old, new, error)`` is
    called on every state change (alerts use it); ``pending`` returns the
    number of events kept in the outbox (for the log line).
    """

    def __init__(self, settings, client, breaker, clock=time.time, rand=random.random,
                 on_change=None, pending=None):
        self.settings = settings
        self.client = client
        self.breaker = breaker
        self.clock = clock
        self.rand = rand
        self.on_change = on_change
        self.pending = pending
        self.state = UNKNOWN
        self.kind = None          # error kind of the last failure
        self.last_error = None    # the AccountDBError itself
        self.attempt = 0          # consecutive failed attempts
        self.next_try_at = 0.0
        self.last_ok_at = None
        self.server_version = None
        self._probe_needed = True
        self._repeats = RepeatSummariser(clock=clock)

    def inherit(self, other):
        """Take over ``other``'s state and schedule (a configuration reload), so nothing is logged twice."""
        for name in ('state', 'kind', 'last_error', 'attempt', 'next_try_at', 'last_ok_at', 'server_version',
                     '_probe_needed', '_repeats'):
            setattr(self, name, getattr(other, name))

    # -- scheduling -----------------------------------------------------------------
    def due(self, now=None):
        """True when no backoff is pending (the breaker is asked by :meth:`call` itself)."""
        now = self.clock() if now is None else now
        self._unstep(now)
        return now >= self.next_try_at

    def _unstep(self, now):
        """Pull ``next_try_at`` back when it lies further ahead than any delay this connection chooses.

        That only happens when the wall clock stepped back after it was set
        (a day's step made "next try in 86016 s"); retry at the longest
        possible delay from now instead.
        """
        longest = max(float(self.settings['retry.max_delay']), float(self.settings['retry.max_retry_after']),
                      float(self.settings['breaker.reset_timeout'])) + 1.0
        if self.next_try_at - now > longest:
            self.next_try_at = now + longest

    def _breaker_allows(self):
        try:
            return bool(self.breaker.allow())
        except Exception as error:  # a broken breaker file must never stop delivery
            log.warning('circuit breaker state unusable (%s); treating it as closed', error)
            return True

    # -- calls ----------------------------------------------------------------------
    def call(self, what, function, *args, **kwargs):
        """Call ``function(*args, **kwargs)`` (an accountdb.Client method) under the retry policy.

        ``what`` names the call in log lines ('event batch', 'inventory',
        ...). Return its result. Raise :class:`Deferred` when the call is
        not attempted now, :class:`errors.RejectedError` for a rejection
        (connection state unchanged), or another errors.AccountDBError after
        recording the failure and scheduling the next try.
        """
        now = self.clock()
        self._unstep(now)
        if now < self.next_try_at:
            raise Deferred(self.next_try_at, 'next try in {0} s'.format(_secs(self.next_try_at - now)))
        if not self._breaker_allows():
            self.next_try_at = now + max(0.05, self._breaker_retry_in())
            raise Deferred(self.next_try_at, 'circuit breaker open, next probe in {0} s'.format(
                _secs(self.next_try_at - now)))
        if self._probe_needed or self._breaker_state() == 'half_open':
            self._health(what)
        return self._run(what, function, *args, **kwargs)

    def probe(self):
        """Check the health endpoint now (start-up, ``--once``); return True if AccountDB answered.

        Ignores backoff and the breaker; a success closes the breaker and
        marks the connection up, a failure is recorded like any call. Never raises.
        """
        try:
            self._health('start-up')
        except errors.AccountDBError:
            return False
        self._succeeded(self.clock())
        return True

    def _health(self, what):
        """GET the health endpoint before ``what``; a failure is recorded and raised.

        A success only clears the need to probe: the breaker and the state
        follow the real call that comes next, so an AccountDB whose health
        answers but whose event endpoint fails is still 'down' (and logged once).
        """
        started = self.clock()
        try:
            result = self.client.health()
        except errors.AccountDBError as error:
            self._failed('health check before ' + what, error, started)
            raise
        self._probe_needed = False
        if isinstance(result, dict):
            self.server_version = result.get('version', self.server_version)
        return result

    def _run(self, what, function, *args, **kwargs):
        started = self.clock()
        try:
            result = function(*args, **kwargs)
        except errors.RejectedError:
            self._succeeded(started)  # AccountDB answered; the item is at fault
            raise
        except errors.AccountDBError as error:
            self._failed(what, error, started)
            raise
        self._succeeded(started)
        return result

    # -- outcomes -------------------------------------------------------------------
    def _delay(self, error):
        return backoff.delay_for(self.settings, max(self.attempt, 1), self.rand,
                                 retry_after=getattr(error, 'retry_after', None))

    def _failed(self, what, error, now):
        self.attempt += 1
        kind = getattr(error, 'kind', 'transient')
        self._breaker_call('record_failure', kind)
        self._probe_needed = True
        delay = self._delay(error)
        self.next_try_at = now + delay
        self.last_error = error
        self.kind = kind
        old, self.state = self.state, DOWN
        pending = self._pending()
        extra = {'BREAKER_STATE': self._breaker_state()}
        if getattr(error, 'status', None) is not None:
            extra['HTTP_STATUS'] = error.status
        repeat = self._repeats.failed('accountdb', '{0}: {1}'.format(kind, _reason(error)))
        if repeat:
            level = logging.CRITICAL if kind == 'auth' else logging.ERROR if kind == 'configuration' \
                else logging.WARNING
            log.log(level, '%s (%s, during %s); %s kept in outbox, next try in %s s%s',
                    _headline(kind), _reason(error), what, _events(pending), _secs(delay), repeat.suffix,
                    extra=extra)
        else:
            log.debug('%s still failing (%s, attempt %d); next try in %s s',
                      what, _reason(error), self.attempt, _secs(delay), extra=extra)
        if old != DOWN and self.on_change:
            self.on_change(old, DOWN, error)

    def _succeeded(self, now):
        self._breaker_call('record_success')
        old, self.state = self.state, UP
        self.last_ok_at = now
        was_failing = self.attempt
        self.attempt = 0
        self.next_try_at = 0.0
        self.kind = None
        self.last_error = None
        self._repeats.succeeded('accountdb')
        if old == DOWN:
            log.info('AccountDB reachable again after %d failed attempt%s; delivering the %s kept in '
                     'the outbox', was_failing, '' if was_failing == 1 else 's', _events(self._pending()),
                     extra={'BREAKER_STATE': self._breaker_state()})
        elif old == UNKNOWN:
            log.info('connected to AccountDB at %s; delivering events',
                     display_url(self.settings['accountdb.url']))
        if old != UP and self.on_change:
            self.on_change(old, UP, None)

    def _breaker_call(self, name, *args):
        try:
            getattr(self.breaker, name)(*args)
        except OSError as error:
            log.warning('cannot persist the circuit breaker state (%s); continuing in memory', error)

    def _breaker_retry_in(self):
        try:
            return float(self.breaker.retry_in())
        except Exception:  # pragma: no cover - defensive
            return float(self.settings['breaker.reset_timeout'])

    def _breaker_state(self):
        try:
            return str(self.breaker.state)
        except Exception:  # pragma: no cover - defensive
            return 'unknown'

    def _pending(self):
        if self.pending is None:
            return None
        try:
            return self.pending()
        except OSError:
            return None

    def headline(self):
        """What is wrong, as the start of a sentence: 'AccountDB unreachable', 'AccountDB refused the token', ..."""
        return _headline(self.kind)

    def summary(self):
        """A short text for STATUS=/status: 'up', 'down (reason), next try in N s'."""
        if self.state != DOWN:
            return self.state
        return 'down ({0}), next try in {1} s'.format(
            _reason(self.last_error), _secs(max(0.0, self.next_try_at - self.clock())))


def _headline(kind):
    return {'auth': 'AccountDB refused the token',
            'configuration': 'AccountDB endpoint misconfigured',
            'transient': 'AccountDB unreachable'}.get(kind, 'AccountDB call failed')


def _reason(error):
    if error is None:
        return 'no error'
    return ' '.join((str(error) or type(error).__name__).split())[:200]


def _events(count):
    if count is None:
        return 'all events'
    return '{0} event{1}'.format(count, '' if count == 1 else 's')


def _secs(seconds):
    if seconds >= 10:
        return str(int(round(seconds)))
    if seconds >= 1:
        return '{0:.1f}'.format(seconds)
    return '{0:.2f}'.format(seconds)
