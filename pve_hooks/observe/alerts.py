"""Alerts for the conditions an operator must act on, rate-limited per condition.

An :class:`Alerter` is told each pass whether a condition holds
(:meth:`Alerter.update`, or :meth:`Alerter.raise_` / :meth:`Alerter.resolve`).
When a condition starts it logs at CRITICAL (journald PRIORITY=2, field
``ALERT=<condition>``) and sends the alert through the configured channels:

``alerts.command``
    an argv list run without a shell, the alert as JSON on stdin, killed
    after ``alerts.timeout`` seconds;
``alerts.webhook``
    a JSON POST, with the same timeout.

While the condition holds, nothing more is sent until ``alerts.repeat_interval``
seconds have passed, then it is sent again. When it clears, a "resolved"
notice is logged (INFO) and sent. A failing channel (missing program,
non-zero exit, timeout, refused connection, HTTP error) logs one error and
never raises into the caller: delivery goes on.

The JSON body::

    {"source": "pve-hooks", "node": "pve1", "condition": "breaker_open",
     "status": "firing" | "resolved", "severity": "critical",
     "message": "...", "details": {...}, "since": 1764150000.0,
     "time": 1764150300.0, "repeat": false}

Alert state lives in memory: after a daemon restart a condition that still
holds is alerted again once.
"""

import json
import logging
import queue
import subprocess
import threading
import time

from pve_hooks import __version__

log = logging.getLogger(__name__)

ACCOUNTDB_AUTH = 'accountdb_auth'
BREAKER_OPEN = 'breaker_open'
OUTBOX_FULL = 'outbox_full'
OUTBOX_DEPTH = 'outbox_depth'
DEAD_LETTERS = 'dead_letters'
WHITELIST_STALE = 'whitelist_stale'
PVESH_FAILING = 'pvesh_failing'
NODE_HEALTH_CRITICAL = 'node_health_critical'
ACCOUNTDB_CONFIGURATION = 'accountdb_configuration'   # 404/405/TLS failures: the endpoint or TLS is wrong
CONFIG_UNREADABLE_BY_HOOKSCRIPT = 'config_unreadable_by_hookscript'   # a reload the hookscript would read otherwise
CONDITIONS = (ACCOUNTDB_AUTH, BREAKER_OPEN, OUTBOX_FULL, OUTBOX_DEPTH, DEAD_LETTERS,
              WHITELIST_STALE, PVESH_FAILING, NODE_HEALTH_CRITICAL, ACCOUNTDB_CONFIGURATION,
              CONFIG_UNREADABLE_BY_HOOKSCRIPT)

CRITICAL, WARNING = 'critical', 'warning'
FIRING, RESOLVED = 'firing', 'resolved'


class Alerter:
    """Per-condition alert state and the channels alerts go through.

    ``settings`` supplies ``alerts.*``, ``node`` and ``whitelist.max_stale``;
    ``clock`` returns Unix time; ``runner`` runs the alert command
    (``subprocess.run``'s signature); ``session`` posts to the webhook (a
    requests Session, created on first use when None).

    With ``background=True`` the channels run in one worker thread, so a
    slow command or webhook (up to ``alerts.timeout`` each) never holds up
    the caller's loop (and systemd's watchdog); the CRITICAL log line is
    still written at once. Call :meth:`close` at exit to send what is
    queued. Otherwise channels run in the caller's thread.
    """

    QUEUE_SIZE = 100

    def __init__(self, settings, clock=time.time, runner=subprocess.run, session=None, background=False):
        self.settings = settings
        self.clock = clock
        self.runner = runner
        self.session = session
        self._active = {}  # condition -> {'since', 'last_sent', 'severity', 'message', 'details'}
        self._dropped_seen = None   # the outbox's dropped counter at the previous evaluation
        self._queue = None
        self._worker = None
        if background:
            self._queue = queue.Queue(self.QUEUE_SIZE)
            self._worker = threading.Thread(target=self._work, name='alerts', daemon=True)
            self._worker.start()

    def close(self, timeout=None):
        """Send the alerts still queued (background mode) and stop the worker.

        Waits at most ``timeout`` seconds (default: 2 x alerts.timeout).
        Return True if everything queued was sent. Without background mode,
        return True at once.
        """
        if self._worker is None:
            return True
        if timeout is None:
            timeout = 2 * self.settings['alerts.timeout'] + 1
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._worker.join(timeout)
        done = not self._worker.is_alive()
        if done:
            self._worker = None
        return done

    def _work(self):
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                self._deliver(payload)
            except Exception:  # pragma: no cover - _deliver already catches everything per channel
                log.exception('alert worker failed on %s; continuing', payload.get('condition'))

    # -- state ---------------------------------------------------------------------------------

    def active(self):
        """Return {condition: since (Unix time)} for the conditions currently raised."""
        return {condition: state['since'] for condition, state in self._active.items()}

    def update(self, condition, active, message, details=None, severity=CRITICAL):
        """Raise ``condition`` when ``active`` is true, else resolve it. Return what was sent (see raise_)."""
        if active:
            return self.raise_(condition, severity, message, details)
        return self.resolve(condition, message)

    def raise_(self, condition, severity, message, details=None):
        """Report that ``condition`` holds; ``message`` is one line for the operator.

        The first report logs at CRITICAL (``severity`` 'warning' logs at
        WARNING) and sends the alert; later reports send it again only after
        ``alerts.repeat_interval`` seconds. Return True if the alert was
        sent (or logged) now, False if it was suppressed as a repeat.
        """
        now = self.clock()
        state = self._active.get(condition)
        repeat = state is not None
        if repeat and now - state['last_sent'] < self.settings['alerts.repeat_interval']:
            state.update(message=message, details=details)
            return False
        if not repeat:
            state = self._active[condition] = {'since': now}
        state.update(last_sent=now, severity=severity, message=message, details=details)
        level = logging.WARNING if severity == WARNING else logging.CRITICAL
        log.log(level, 'ALERT %s: %s%s', condition, message,
                ' (still active since {0:.0f} s)'.format(now - state['since']) if repeat else '',
                extra={'ALERT': condition, 'ALERT_STATUS': FIRING})
        self._send(self._payload(condition, FIRING, severity, message, details, state['since'], now, repeat))
        return True

    def resolve(self, condition, message=None):
        """Report that ``condition`` no longer holds. Return True if a resolved notice was sent.

        Nothing happens (False) when the condition was not raised.
        """
        state = self._active.pop(condition, None)
        if state is None:
            return False
        now = self.clock()
        message = message or 'condition cleared'
        log.info('ALERT %s resolved after %.0f s: %s', condition, now - state['since'], message,
                 extra={'ALERT': condition, 'ALERT_STATUS': RESOLVED})
        self._send(self._payload(condition, RESOLVED, state['severity'], message, state['details'],
                                 state['since'], now, False))
        return True

    # -- the documented conditions, with thresholds from the settings ----------------------------

    def breaker(self, state, open_since):
        """Given the breaker state and when it last left 'closed' (Unix time, None if closed),
        raise BREAKER_OPEN once it has not been closed for ``alerts.after`` seconds."""
        duration = 0 if open_since is None or state == 'closed' else self.clock() - open_since
        after = self.settings['alerts.after']
        return self.update(BREAKER_OPEN, state != 'closed' and duration >= after,
                           'circuit breaker to AccountDB not closed for {0:.0f} s (alerts.after {1:.0f} s); '
                           'events wait in the outbox'.format(duration, after) if state != 'closed'
                           else 'circuit breaker to AccountDB closed again',
                           {'state': state, 'open_seconds': round(duration, 1)})

    def outbox(self, depth, dropped_since_last=0):
        """Given the outbox depth and events dropped since the previous call, raise OUTBOX_DEPTH
        (depth >= ``alerts.outbox_depth``) and OUTBOX_FULL (events dropped)."""
        limit = self.settings['alerts.outbox_depth']
        sent = self.update(OUTBOX_DEPTH, depth >= limit,
                           'outbox holds {0} events (alerts.outbox_depth {1}); check AccountDB and '
                           'pve-hooks status'.format(depth, limit), {'depth': depth, 'threshold': limit})
        full = self.update(OUTBOX_FULL, dropped_since_last > 0,
                           'outbox full: {0} events dropped; raise outbox.max_events/max_bytes or fix '
                           'delivery'.format(dropped_since_last) if dropped_since_last
                           else 'outbox accepts events again',
                           {'dropped': dropped_since_last, 'depth': depth})
        return sent or full

    def dropped_since_last(self, dropped_total):
        """Given the outbox's running count of dropped events, return how many were dropped since the last call."""
        seen, self._dropped_seen = self._dropped_seen, dropped_total
        return 0 if seen is None else max(0, dropped_total - seen)

    def dead_letters(self, dead_count):
        """Given the number of events in dead/, raise DEAD_LETTERS while it is above 0."""
        return self.update(DEAD_LETTERS, dead_count > 0,
                           '{0} events rejected by AccountDB are in the dead directory; see pve-hooks '
                           'outbox list --dead'.format(dead_count) if dead_count else 'no dead events left',
                           {'dead': dead_count})

    def whitelist(self, age):
        """Given the whitelist cache age in seconds (None: no cache), raise WHITELIST_STALE
        when it is older than ``whitelist.max_stale``."""
        limit = self.settings['whitelist.max_stale']
        stale = age is not None and age > limit
        return self.update(WHITELIST_STALE, stale,
                           'whitelist cache is {0:.0f} s old (whitelist.max_stale {1:.0f} s); refresh '
                           'from AccountDB keeps failing'.format(age, limit) if stale
                           else 'whitelist cache is fresh again', {'age_seconds': age, 'max_stale': limit})

    def pvesh(self, consecutive_failures, reason=''):
        """Given the number of pvesh calls that failed in a row, raise PVESH_FAILING at
        ``alerts.pvesh_failures``."""
        limit = self.settings['alerts.pvesh_failures']
        failing = consecutive_failures >= limit
        return self.update(PVESH_FAILING, failing,
                           'pvesh failed {0} times in a row ({1}); inventory is not reconciled'.format(
                               consecutive_failures, reason or 'see earlier errors') if failing
                           else 'pvesh works again', {'failures': consecutive_failures, 'reason': reason})

    def health(self, status, reason=''):
        """Given the node's overall health status ('OK'...'CRITICAL'), raise NODE_HEALTH_CRITICAL
        while it is CRITICAL."""
        critical = str(status).upper() == 'CRITICAL'
        return self.update(NODE_HEALTH_CRITICAL, critical,
                           'node health CRITICAL: {0}'.format(reason or 'see pve-hooks health') if critical
                           else 'node health is {0}'.format(status), {'status': status, 'reason': reason})

    def accountdb_auth(self, failing, reason=''):
        """Raise ACCOUNTDB_AUTH while AccountDB refuses the token (401/403)."""
        return self.update(ACCOUNTDB_AUTH, failing,
                           'AccountDB refuses the token ({0}); check accountdb.token_file; events wait in '
                           'the outbox'.format(reason or 'HTTP 401/403') if failing
                           else 'AccountDB accepts the token again', {'reason': reason})

    def accountdb_configuration(self, failing, reason=''):
        """Raise ACCOUNTDB_CONFIGURATION while AccountDB's endpoint or TLS is misconfigured (404/405/TLS)."""
        return self.update(ACCOUNTDB_CONFIGURATION, failing,
                           'AccountDB endpoint or TLS misconfigured ({0}); events wait in the outbox'.format(reason)
                           if failing else 'AccountDB configuration works again', {'reason': reason})

    # -- channels -------------------------------------------------------------------------------

    def _payload(self, condition, status, severity, message, details, since, now, repeat):
        return {'source': 'pve-hooks', 'version': __version__, 'node': self.settings['node'],
                'condition': condition, 'status': status, 'severity': severity, 'message': message,
                'details': details or {}, 'since': since, 'time': now, 'repeat': repeat}

    def _send(self, payload):
        if self._queue is None:
            self._deliver(payload)
            return
        try:
            self._queue.put_nowait(payload)
        except queue.Full:  # the channels are far behind
            log.error('alert queue full (%d waiting); alert %s for %s not sent through the channels, only logged',
                      self.QUEUE_SIZE, payload['status'], payload['condition'], extra={'ALERT': payload['condition']})

    def _deliver(self, payload):
        body = json.dumps(payload, sort_keys=True, default=str).encode('utf-8')
        if self.settings['alerts.command']:
            self._run_command(self.settings['alerts.command'], body, payload['condition'])
        if self.settings['alerts.webhook']:
            self._post_webhook(self.settings['alerts.webhook'], body, payload['condition'])

    def _run_command(self, argv, body, condition):
        timeout = self.settings['alerts.timeout']
        program = argv[0]
        try:
            result = self.runner(list(argv), input=body, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            log.error('alert command %s for %s timed out after %.0f s and was killed; check alerts.command',
                      program, condition, timeout, extra={'ALERT': condition})
            return False
        except OSError as error:
            log.error('alert command %s for %s cannot run (%s); check alerts.command', program, condition,
                      error.strerror or error, extra={'ALERT': condition})
            return False
        except Exception as error:  # a runner must never break delivery
            log.error('alert command %s for %s failed (%s: %s)', program, condition, type(error).__name__,
                      error, extra={'ALERT': condition})
            return False
        if result.returncode != 0:
            stderr = (result.stderr or b'').decode('utf-8', 'replace').strip().splitlines()
            log.error('alert command %s for %s exited with status %s%s; check alerts.command', program,
                      condition, result.returncode, ': ' + stderr[-1][:200] if stderr else '',
                      extra={'ALERT': condition})
            return False
        return True

    def _post_webhook(self, url, body, condition):
        timeout = self.settings['alerts.timeout']
        try:
            if self.session is None:
                import requests
                self.session = requests.Session()
            response = self.session.post(url, data=body, timeout=timeout,
                                         headers={'Content-Type': 'application/json'})
            status = response.status_code
        except Exception as error:  # requests.RequestException and anything a session may raise
            log.error('alert webhook %s for %s failed (%s); check alerts.webhook', safe_url(url), condition,
                      _describe(error, timeout), extra={'ALERT': condition})
            return False
        if not 200 <= status < 300:
            log.error('alert webhook %s for %s answered HTTP %s; check alerts.webhook', safe_url(url),
                      condition, status, extra={'ALERT': condition, 'HTTP_STATUS': status})
            return False
        return True


def _describe(error, timeout):
    """Return a short reason for a webhook failure without the URL (its path may hold a secret)."""
    name = type(error).__name__
    if 'Timeout' in name:
        return 'timed out after {0:g} s'.format(timeout)
    seen = set()
    current = error
    while current is not None and id(current) not in seen:  # find the socket error underneath
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return '{0}: {1}'.format(name, current.strerror)
        current = current.__cause__ or current.__context__ or getattr(current, 'reason', None)
        if not isinstance(current, BaseException):
            current = None
    return name


def safe_url(url):
    """Return ``url`` with everything after the host replaced by ``/***`` and any user:password dropped.

    Webhook paths and queries often embed the secret (``https://hooks.example.com/T0/B0/XXXX``),
    so this is how a webhook URL is shown anywhere (logs, ``pve-hooks config show``).
    """
    scheme, sep, rest = str(url).partition('://')
    host, slash, tail = rest.partition('/')
    host, query, more = host.partition('?')
    host = host.rsplit('@', 1)[-1]
    return scheme + sep + host + ('/***' if (slash and tail) or query else '')



def evaluate(alerter, snapshot):
    """Raise or resolve every condition from the status snapshot (pve_hooks.observe.status).

    ``alerter`` is an :class:`Alerter` (it keeps what was raised, so each
    transition is sent once). Return the sorted list of active conditions.
    Never raises: an error is logged and the previous alerts stay as they are.
    """
    try:
        outbox, breaker, daemon = snapshot['outbox'], snapshot['breaker'], snapshot['daemon']
        state = breaker.get('state') or 'closed'
        alerter.breaker(state, None if state == 'closed' else breaker.get('changed_at') or snapshot['taken_at'])
        dropped = outbox.get('dropped') or 0
        alerter.outbox(outbox.get('depth') or 0, alerter.dropped_since_last(dropped))
        alerter.dead_letters(outbox.get('dead') or 0)
        kind, reason = daemon.get('connection_kind'), daemon.get('last_error') or ''
        alerter.accountdb_auth(kind == 'auth', reason)
        alerter.accountdb_configuration(kind == 'configuration', reason)
        whitelist = snapshot.get('whitelist')
        if whitelist is not None:
            alerter.whitelist(whitelist.get('age'))
        inventory = snapshot.get('inventory') or {}
        alerter.pvesh(inventory.get('pvesh_failures') or 0, inventory.get('pvesh_error') or '')
        health = snapshot.get('health')
        if health is not None:
            alerter.health(health.get('status'), '; '.join(
                '{0}: {1}'.format(check.get('name'), check.get('reason')) for check in health.get('checks', ())
                if check.get('status') == 'CRITICAL'))
    except Exception as error:  # noqa: BLE001 - alerts never stop the daemon
        log.error('alert evaluation failed (%s: %s); continuing', type(error).__name__, error)
    return sorted(alerter.active())
