"""The reconciler daemon (``pve-hooks reconcile``): main loop, signals, sd_notify, scheduling.

One thread does everything, in this order each time it wakes up:

1. handle signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration;
2. refresh the whitelist when due (only while AccountDB answers);
3. run a delivery pass when events arrived (inotify on the outbox ready
   directory), when a retry is due, or at the polling interval without inotify;
4. run an inventory pass when due (:mod:`pve_hooks.daemon.inventory_sync`);
5. send a heartbeat (with node health) every ``reconcile.heartbeat_interval``;
6. update metrics, alerts, ``<state_dir>/daemon.json``, the systemd watchdog and STATUS=;
7. sleep in ``select`` until the next deadline, an inotify event or a signal.

Every AccountDB call goes through one :class:`~pve_hooks.accountdb.connection.Connection`
(breaker, capped backoff with jitter, health probe, log-once); nothing that
AccountDB, pvesh or pmxcfs does makes the daemon exit.

Shutdown: SIGTERM starts a timer of ``reconcile.shutdown_timeout`` seconds. A
batch in flight may finish within it; when the timer fires first, the call in
progress is interrupted and its events return to ready (they are sent again
after the restart; AccountDB deduplicates by event_id). State is saved and
the process exits 0.

Only one reconciler runs per state directory (``reconcile.lock``, flock), so
``reconcile --once`` cannot race a running daemon for the same events.
"""

import fcntl
import logging
import os
import random
import signal
import time

from pve_hooks import __version__
from pve_hooks.accountdb import client as accountdb
from pve_hooks.observe import alerts
from pve_hooks.accountdb import breaker
from pve_hooks.config import loader as config
from pve_hooks.daemon import dirwatch
from pve_hooks.accountdb import errors
from pve_hooks.observe import logs as logsetup
from pve_hooks.observe import metrics
from pve_hooks.proxmox import pvesh
from pve_hooks import statedir as state
from pve_hooks.accountdb.connection import UP, Connection, Deferred
from pve_hooks.daemon.delivery import Delivery, Interrupted
from pve_hooks.daemon.systemd import Notifier
from pve_hooks.outbox.store import Outbox
from pve_hooks.daemon.inventory_sync import InventorySync
from pve_hooks.hook.spool import READY

log = logging.getLogger(__name__)

STATE_FILE = 'daemon.json'
LOCK_FILE = 'reconcile.lock'
# Alert condition for 404/405/TLS failures (alerts.CONDITIONS has the auth one).
ACCOUNTDB_CONFIGURATION = 'accountdb_configuration'
# Longest sleep between two loop iterations, so daemon.json's heartbeat_at stays fresh.
MAX_SLEEP = 30.0
# daemon.json is rewritten at most this often (it is fsync'ed).
STATE_WRITE_INTERVAL = 1.0
# Longest wait after repeated unexpected errors in the loop.
MAX_ERROR_WAIT = 60.0
# Least seconds between two watchdog pings made around calls (pings are cheap datagrams).
KEEPALIVE_THROTTLE = 1.0
# Shortest wait before retrying a job whose retry time has already passed.
MIN_RETRY_WAIT = 0.05


class AlreadyRunning(Exception):
    """Another reconciler holds the lock on this state directory; the message names its pid."""


def daemon_state_path(settings):
    """Return ``<paths.state_dir>/daemon.json``."""
    return os.path.join(settings['paths.state_dir'], STATE_FILE)


def acquire_lock(state_dir):
    """Take ``<state_dir>/reconcile.lock`` (flock, non-blocking); return its file descriptor.

    Raise AlreadyRunning naming the holder's pid, or OSError when the state
    directory cannot be created.
    """
    state.ensure_dir(state_dir)
    path = os.path.join(state_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode('ascii', 'replace').strip() or 'unknown'
        os.close(fd)
        raise AlreadyRunning('another pve-hooks reconciler (pid {0}) is running on {1}; stop it first '
                             '(systemctl stop pve-hooks) or wait for it'.format(holder, state_dir))
    os.ftruncate(fd, 0)
    os.pwrite(fd, '{0}\n'.format(os.getpid()).encode('ascii'), 0)
    return fd


class _ThroughConnection:
    """The whitelist cache's view of the client: its GET goes through the Connection."""

    def __init__(self, connection):
        self.connection = connection

    def get_whitelist(self, **kwargs):
        try:
            return self.connection.call('whitelist refresh', self.connection.client.get_whitelist, **kwargs)
        except Deferred as deferred:
            raise errors.TransientError('not attempted: ' + deferred.reason)


class _ClientMetrics:
    """accountdb.Client's ``metrics`` hook: counts requests by endpoint and status class.

    It also keeps the systemd watchdog fed while a batch is bisected (several
    requests inside one call): ``keepalive()`` pings when a ping is due.
    """

    def __init__(self, registry, keepalive=None):
        self.registry = registry
        self.keepalive = keepalive

    def on_request(self, method, endpoint, status_class, duration_s):
        self.registry.inc(metrics.ACCOUNTDB_REQUESTS, endpoint=endpoint, status_class=status_class)
        if self.keepalive is not None:
            self.keepalive()


class Components:
    """Everything built from one Settings; rebuilt on a successful SIGHUP reload."""

    def __init__(self, settings, daemon):
        self.settings = settings
        clock = daemon.clock
        self.outbox = Outbox.from_settings(settings, clock=clock)
        self.client = accountdb.Client(settings, session=daemon.session_factory(),
                                       metrics=_ClientMetrics(daemon.registry, daemon.keepalive))
        self.breaker = breaker.from_settings(settings, clock=clock, on_change=daemon.on_breaker_change)
        self.connection = Connection(settings, self.client, self.breaker, clock=clock, rand=daemon.rand,
                                     on_change=daemon.on_connection_change, pending=daemon.pending_count)
        self.whitelist = _whitelist_cache(settings, clock)
        self.delivery = Delivery(settings, self.outbox, self.connection, whitelist=self.whitelist,
                                 clock=clock, should_stop=lambda: daemon.stopping)
        self.inventory = InventorySync(settings, self.connection, whitelist=self.whitelist,
                                       pvesh_run=daemon.pvesh_runner(), clock=clock,
                                       on_pvesh_failure=daemon.on_pvesh_result)
        self.health = _health_runner(settings, clock, daemon.command_runner())
        self.ready_dir = os.path.join(self.outbox.root, READY)

    def close(self):
        try:
            self.client.close()
        except Exception:  # pragma: no cover - closing a pool must never fail a reload
            pass


def _whitelist_cache(settings, clock):
    try:
        from pve_hooks.whitelist.cache import WhitelistCache
    except ImportError:
        log.warning('whitelist module unavailable; reporting every guest')
        return None
    return WhitelistCache.from_settings(settings, clock=clock)


def _health_runner(settings, clock, runner):
    """Return the health module's HealthRunner (AccountDB is checked by the daemon itself), or None.

    ``runner(argv, timeout)`` runs pvesh and systemctl. None when the module
    is unavailable: heartbeats are then sent without health.
    """
    try:
        from pve_hooks.health.checks import HealthRunner
    except ImportError:
        log.warning('health module unavailable; heartbeats are sent without node health')
        return None
    return HealthRunner(settings, offline=True, clock=clock, runner=runner)


class Daemon:
    """The reconciler.

    ``settings``: the loaded Settings; ``reload_settings()``: returns fresh
    Settings or raises config.ConfigError (SIGHUP); ``clock``: epoch seconds;
    ``rand``: [0, 1) for jitter; ``session_factory()``: a requests.Session (or
    None for the client's default); ``notifier``: notify.Notifier;
    ``pvesh_run``: pvesh.run-compatible; ``install_signals``: False in
    in-process tests that drive :meth:`step` themselves; ``watch_factory(directory)``:
    returns a dirwatch.DirWatch (tests pass one without inotify to cover polling).
    """

    def __init__(self, settings, reload_settings=None, clock=time.time, rand=random.random,
                 session_factory=lambda: None, notifier=None, pvesh_run=None, install_signals=True,
                 watch_factory=dirwatch.DirWatch):
        self.settings = settings
        self.reload_settings = reload_settings
        self.clock = clock
        self.rand = rand
        self.session_factory = session_factory
        self.notifier = notifier or Notifier()
        self._pvesh_run = pvesh_run
        self.install_signals = install_signals
        self.watch_factory = watch_factory
        self.registry = metrics.Registry()
        # Channels run in a worker thread: a hanging alert command or webhook never stalls the loop or the watchdog.
        self.alerter = alerts.Alerter(settings, clock=clock, background=True)
        self.metrics_server = None
        self.stopping = False
        self.reload_requested = False
        self._interruptible = False
        self._wake_r = self._wake_w = None
        self._lock_fd = None
        self.watch = None
        self.c = None
        self.state = {}
        self.stats = {}
        self._stats_at = None
        self._state_written_at = None
        self._state_written = None    # daemon.json's figures as last written (without heartbeat_at)
        self._watchdog_mono = float('-inf')   # time.monotonic() of the last WATCHDOG=1
        self._ready = False                   # READY=1 sent
        self._errors = 0                      # unexpected errors in a row (iterate)
        self._error_until = 0.0               # no iteration before this after an unexpected error
        self._repeats = logsetup.RepeatSummariser(clock=clock)
        self._delivery_at = 0.0
        self._heartbeat_at = 0.0
        self._whitelist_at = 0.0
        self._dropped_seen = None
        self._breaker_left_closed_at = None
        self.last_heartbeat_sent_at = None

    # -- collaborators --------------------------------------------------------------
    def keepalive(self):
        """Ping the systemd watchdog (at most once a second, and at half its interval when idle).

        Called between jobs and before and after every pvesh, systemctl and
        AccountDB request, so the gap between two pings is at most one
        bounded call (``proxmox.pvesh_timeout``, ``accountdb.timeout.*``) plus
        a second: WatchdogSec must exceed the longest such timeout. Return None.
        """
        interval = self.notifier.watchdog_interval()
        if not interval or not self._ready:
            return   # before READY=1, systemd's start timeout applies, not the watchdog
        now = time.monotonic()
        if now - self._watchdog_mono >= min(KEEPALIVE_THROTTLE, interval * 0.5):
            self.notifier.watchdog()
            self._watchdog_mono = now

    def command_runner(self):
        """Return pvesh.run_bounded wrapped with :meth:`keepalive` (for the health checks)."""
        def run(argv, timeout):
            self.keepalive()
            try:
                return pvesh.run_bounded(argv, timeout)
            finally:
                self.keepalive()
        return run

    def pvesh_runner(self):
        """Return the pvesh runner (records pvesh call durations and failures in the metrics)."""
        inner = self._pvesh_run or pvesh.run

        def run(settings, path, **kwargs):
            self.keepalive()
            started = time.monotonic()
            ok = False
            try:
                result = inner(settings, path, **kwargs)
                ok = True
                return result
            finally:
                call = path.rstrip('/').rsplit('/', 1)[-1] or path
                try:
                    metrics.record_pvesh(self.registry, call, time.monotonic() - started, ok)
                except Exception:  # pragma: no cover - metrics must never break a read
                    pass
                self.keepalive()
        return run

    def pending_count(self):
        """Events waiting in the outbox (from the last stats), for log lines."""
        return self.stats.get('depth') if self.stats else None

    def on_breaker_change(self, old, new):
        """Breaker transitions (made by this process): logged once, tracked for the alert."""
        if new == breaker.CLOSED:
            self._breaker_left_closed_at = None
        elif self._breaker_left_closed_at is None:
            self._breaker_left_closed_at = self.clock()
        level = logging.INFO if new != breaker.OPEN else logging.WARNING
        log.log(level, 'circuit breaker to AccountDB %s (was %s)%s', new.replace('_', '-'), old.replace('_', '-'),
                '; events wait in the outbox until a probe succeeds' if new == breaker.OPEN else '',
                extra={'BREAKER_STATE': new})

    def on_connection_change(self, old, new, error):
        """Connection up/down transitions: a whitelist refresh is due as soon as AccountDB answers again."""
        if new == UP:
            self._whitelist_at = 0.0

    def on_pvesh_result(self, consecutive_failures, reason):
        """Called after each inventory read: the pvesh alert."""
        self.alerter.pvesh(consecutive_failures, reason)

    # -- start and stop -------------------------------------------------------------
    def start(self):
        """Lock, recover the outbox, probe AccountDB, tell systemd we are ready.

        Raise AlreadyRunning, or OSError when the spool or state directory is unusable.
        """
        self._lock_fd = acquire_lock(self.settings['paths.state_dir'])
        self.state = state.read_json(daemon_state_path(self.settings), {}) or {}
        self.c = Components(self.settings, self)
        self.c.outbox.ensure()
        recovered = self.c.outbox.recover()
        if self.install_signals:
            self._install_signals()
        self._watch(self.c.ready_dir)
        self._start_metrics_server()
        self._refresh_stats(force=True)
        if self.settings['accountdb.url']:
            try:
                self._interruptible = True   # a SIGTERM during a slow first probe must not wait for it
                self.c.connection.probe()
            except Interrupted:
                log.warning('stopped during the start-up check of AccountDB')
            finally:
                self._interruptible = False
        else:
            log.error('accountdb.url is not set; events are kept in the outbox until it is configured '
                      '(pve-hooks config sample shows the option)')
        log.info('pve-hooks %s reconciler started for node %s: %d events in the outbox%s', __version__,
                 self.settings['node'], recovered.get('depth', 0),
                 ', {0} returned from an interrupted run'.format(recovered['released'])
                 if recovered.get('released') else '', extra={'NODE': self.settings['node']})
        self._write_state(force=True)
        self.notifier.ready(self.status_line())
        self._ready = True

    def _install_signals(self):
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_stop(self, signum, frame):
        if not self.stopping:
            self.stopping = True
            signal.setitimer(signal.ITIMER_REAL, max(0.01, self.settings['reconcile.shutdown_timeout']))

    def _on_hup(self, signum, frame):
        self.reload_requested = True

    def _on_alarm(self, signum, frame):
        if self._interruptible:
            self._interruptible = False
            raise Interrupted()

    def _watch(self, directory):
        if self.watch is not None:
            self.watch.close()
        self.watch = self.watch_factory(directory)
        if not self.watch.available:
            log.warning('%s; polling the outbox every %s s instead (delivery.poll_interval)',
                        self.watch.reason, self.settings['delivery.poll_interval'])

    def _start_metrics_server(self):
        metrics.stop(self.metrics_server)
        self.metrics_server = metrics.serve(self.registry, self.settings['metrics.listen'])

    def shutdown(self):
        """Return in-flight events, save state, release everything. Return None."""
        self.notifier.stopping()
        if self.c is not None:
            returned = self.c.delivery.return_in_flight()
            if returned:
                log.info('returned %d in-flight events to the outbox; they are sent after the restart '
                         '(AccountDB deduplicates them)', returned)
        signal.setitimer(signal.ITIMER_REAL, 0) if self.install_signals else None
        self._refresh_stats(force=True)
        self._write_state(force=True, stopped=True)
        self._write_metrics()
        metrics.stop(self.metrics_server)
        self.metrics_server = None
        if self.watch is not None:
            self.watch.close()
        if self.c is not None:
            self.c.close()
        if not self.alerter.close(timeout=self.settings['reconcile.shutdown_timeout']):
            log.warning('alerts still queued at shutdown were not sent within %g s (reconcile.shutdown_timeout)',
                        self.settings['reconcile.shutdown_timeout'])
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info('pve-hooks reconciler stopped; %s events kept in the outbox', self.stats.get('depth', '?'))

    # -- the loop -------------------------------------------------------------------
    def run(self):
        """Start, loop until SIGTERM/SIGINT, shut down. Return the exit code (0)."""
        self.start()
        try:
            while not self.stopping:
                self.iterate()
                if self.stopping:
                    break
                self.sleep()
        finally:
            self.shutdown()
        return 0

    def iterate(self):
        """Run :meth:`step`; an unexpected error (a bug) is logged and retried later, never fatal.

        The next iteration waits 1, 2, 4 ... up to 60 s while errors repeat.
        Return True when the step completed.
        """
        try:
            self.step()
        except Exception as error:  # the last line of defence: the daemon must not die on a bug
            self._errors += 1
            wait = min(MAX_ERROR_WAIT, 2.0 ** (self._errors - 1))
            self._error_until = self.clock() + wait
            repeat = self._repeats.failed('loop', '{0}: {1}'.format(type(error).__name__, error))
            if repeat:
                log.error('unexpected error in the reconciler loop (%s: %s); events stay in the outbox, '
                          'next try in %.0f s%s; please report this', type(error).__name__, error, wait,
                          repeat.suffix)
            log.debug('traceback of the unexpected error', exc_info=True)  # log-policy: traceback for developers
            return False
        if self._errors:
            self._errors = 0
            self._repeats.succeeded('loop')
            log.info('reconciler loop works again after an unexpected error')
        return True

    def step(self):
        """One loop iteration: reload, whitelist, delivery, inventory, heartbeat, bookkeeping."""
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        now = self.clock()
        try:
            self._interruptible = True
            self._whitelist(now)
            self.keepalive()
            if not self.stopping and self._delivery_due(now):
                self._deliver()
                self.keepalive()
            if not self.stopping and self.c.inventory.due(self.clock()):
                self._inventory()
                self.keepalive()
            if not self.stopping and self.clock() >= self._heartbeat_at:
                self._heartbeat()
        except Interrupted:
            returned = self.c.delivery.returned_on_interrupt
            log.warning('shutdown timeout (reconcile.shutdown_timeout %s s) reached during a call to '
                        'AccountDB or pvesh; %sstopping now', self.settings['reconcile.shutdown_timeout'],
                        'returned {0} in-flight event{1} to the outbox (sent again after the restart, '
                        'AccountDB deduplicates them); '.format(returned, '' if returned == 1 else 's')
                        if returned else '')
        finally:
            self._interruptible = False
        self._bookkeeping()

    def next_wakeup(self, now):
        """Return the epoch of the earliest scheduled job (at most MAX_SLEEP after ``now``).

        Every deadline here moves forward when its job runs or is skipped,
        so the loop never spins while AccountDB is down.
        """
        deadlines = [now + MAX_SLEEP, self.c.inventory.next_at, self._heartbeat_at, self._delivery_at,
                     self._whitelist_at]
        if self.c.inventory.pending is not None:
            deadlines.append(max(self.c.connection.next_try_at, now + MIN_RETRY_WAIT))
        interval = self.notifier.watchdog_interval()
        if interval:
            deadlines.append(now + max(0.0, self._watchdog_mono + interval * 0.5 - time.monotonic()))
        return max(min(deadlines), self._error_until)

    def sleep(self):
        """Wait for an outbox event, a signal or the next deadline (never a busy loop)."""
        now = self.clock()
        timeout = max(0.0, self.next_wakeup(now) - now)
        if self.watch is not None and not self.watch.available and self.watch.rewatch():
            log.info('watching %s for new events again', self.watch.path)
        readable = dirwatch.wait([self.watch if self.watch and self.watch.available else None,
                                  self._wake_r], timeout)
        for item in readable:
            if item is self.watch:
                if self.watch.drain():
                    self._delivery_at = min(self._delivery_at, self.clock())
            elif item == self._wake_r:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass

    # -- jobs -----------------------------------------------------------------------
    def _whitelist(self, now):
        """Refresh the whitelist when due, only while AccountDB answers (it is re-armed when it does again)."""
        if now < self._whitelist_at:
            return
        if self.c.whitelist is None or not self.settings['accountdb.url']:
            self._whitelist_at = float('inf')
            return
        self._whitelist_at = now + self.settings['whitelist.refresh_interval']
        if self.c.connection.state != UP or not self.c.connection.due(now):
            return   # on_connection_change re-arms it when AccountDB answers again
        outcome = self.c.whitelist.refresh_if_due(_ThroughConnection(self.c.connection), now)
        if outcome in ('updated', 'unchanged'):
            self.registry.set(metrics.LAST_WHITELIST_REFRESH, now)

    def _delivery_due(self, now):
        if now < self._delivery_at:
            return False
        if not self.c.connection.due(now):
            self._delivery_at = self.c.connection.next_try_at
            return False
        return True

    def _deliver(self):
        if not self.settings['accountdb.url']:
            self._delivery_at = self.clock() + MAX_SLEEP
            return None
        result = self.c.delivery.run()
        now = self.clock()
        self._count_delivery(result)
        if result.delivered:
            self.c.inventory.mark_dirty('hookscript events delivered')
        if result.error is not None or result.deferred:
            self._delivery_at = max(self.c.connection.next_try_at, now + 0.01)
        elif result.held or result.released:
            self._delivery_at = now + self.settings['delivery.poll_interval']
        elif self.watch is not None and self.watch.available:
            # inotify wakes us; a periodic look is only a safety net.
            self._delivery_at = now + self.settings['reconcile.heartbeat_interval']
        else:
            self._delivery_at = now + self.settings['delivery.poll_interval']
        if result.delivered or result.rejected or result.filtered or result.error is not None:
            self._refresh_stats(force=True)
            if result.delivered:
                log.info('delivered %d event%s to AccountDB (%d new, %d duplicate)%s', result.delivered,
                         '' if result.delivered == 1 else 's', result.accepted, result.duplicate,
                         '; {0} kept in the outbox'.format(self.stats.get('depth'))
                         if self.stats.get('depth') else '',
                         extra={'BATCH_SIZE': result.delivered, 'NODE': self.settings['node']})
        return result

    def _count_delivery(self, result):
        registry = self.registry
        registry.inc(metrics.EVENTS_DELIVERED, result.accepted)
        registry.inc(metrics.EVENTS_DUPLICATE, result.duplicate)
        registry.inc(metrics.EVENTS_REJECTED, result.rejected)
        registry.inc(metrics.EVENTS_FILTERED, result.filtered)
        for latency in result.latencies:
            registry.observe(metrics.DELIVERY_LATENCY, latency)
        if result.delivered:
            self.state['last_delivery_at'] = self.c.delivery.last_delivery_at
            registry.set(metrics.LAST_DELIVERY, self.c.delivery.last_delivery_at)
        if result.filtered:
            self.state['filtered_total'] = self.state.get('filtered_total', 0) + result.filtered

    def _inventory(self):
        outcome = self.c.inventory.run()
        if self.c.inventory.last_sync_at:
            self.state['last_inventory_sync_at'] = self.c.inventory.last_sync_at
            self.registry.set(metrics.LAST_INVENTORY_SYNC, self.c.inventory.last_sync_at)
        self.state['last_inventory_outcome'] = outcome
        return outcome

    def _heartbeat(self):
        now = self.clock()
        self._heartbeat_at = now + self.settings['reconcile.heartbeat_interval']
        self._refresh_stats(force=True)
        health = self._run_health(now)
        if not self.settings['accountdb.url']:
            return False
        body = self.heartbeat_body(now, health)
        try:
            self.c.connection.call('heartbeat', self.c.client.heartbeat, self.settings['node'], body)
        except (Deferred, errors.AccountDBError):
            return False  # logged once by the connection; the next heartbeat is on schedule
        self.last_heartbeat_sent_at = self.clock()
        self.state['last_heartbeat_sent_at'] = self.last_heartbeat_sent_at
        return True

    def heartbeat_body(self, now, health=None):
        """Return the heartbeat document: node, sent_at, agent_version, outbox, breaker, health."""
        stats = self.stats or {}
        body = {
            'node': self.settings['node'],
            'sent_at': _rfc3339(now),
            'agent_version': __version__,
            'outbox': {key: stats.get(key) for key in ('depth', 'oldest_age', 'dead', 'quarantine', 'dropped')},
            'breaker': self._breaker_state(),
            'last_delivery_at': _rfc3339(self.state.get('last_delivery_at')),
            'last_inventory_sync_at': _rfc3339(self.state.get('last_inventory_sync_at')),
        }
        if self.c.whitelist is not None:
            body['whitelist'] = {'age': self.c.whitelist.age(now), 'state': self.c.whitelist.state(now)}
        if health is not None:
            body['health'] = health
        return body

    def _run_health(self, now):
        """Run the health checks; return a JSON-able summary, or None when unavailable."""
        runner = self.c.health
        if runner is None:
            return None
        try:
            results, transitions = runner.run(now)
        except Exception as error:  # health must never stop delivery
            log.error('node health checks failed to run (%s); heartbeat sent without health', error)
            return None
        try:
            metrics.collect_health(self.registry, results)
        except Exception as error:  # pragma: no cover - metrics must never break a heartbeat
            log.warning('cannot export health metrics (%s); the heartbeat is sent with them anyway', error)
        from pve_hooks.health.checks import CRITICAL, OK, overall as worst

        for change in transitions:
            if change['old'] is not None:
                level = logging.INFO if change['new'] == OK else logging.WARNING
                log.log(level, 'node health check %s changed from %s to %s: %s', change['name'], change['old'],
                        change['new'], change['reason'])
        status = worst(results)
        reason = '; '.join('{0}: {1}'.format(r.name, r.reason) for r in results if r.status == CRITICAL)
        self.alerter.health(status, reason)
        return {'status': status, 'checks': [result.to_dict() for result in results]}

    # -- bookkeeping ----------------------------------------------------------------
    def _bookkeeping(self):
        now = self.clock()
        self._refresh_stats()
        self._alerts(now)
        self._write_metrics()
        self._write_state()
        self.keepalive()
        self.notifier.status(self.status_line())

    def _refresh_stats(self, force=False):
        now = self.clock()
        if not force and self._stats_at is not None and now - self._stats_at < STATE_WRITE_INTERVAL:
            return self.stats
        try:
            self.stats = self.c.outbox.stats()
        except OSError as error:
            log.error('cannot read the outbox state (%s); retrying', error)
            return self.stats
        self._stats_at = now
        metrics.collect_outbox(self.registry, self.stats)
        return self.stats

    def _breaker_state(self):
        try:
            return self.c.breaker.state
        except Exception:  # pragma: no cover - defensive
            return 'unknown'

    def _alerts(self, now):
        stats = self.stats or {}
        try:
            current = self._breaker_state()
            if current != breaker.CLOSED and self._breaker_left_closed_at is None:
                changed = self.c.breaker.snapshot().get('changed_at') or now
                self._breaker_left_closed_at = changed
            self.registry.set_state(metrics.BREAKER_STATE, current, metrics.BREAKER_STATES)
            self.alerter.breaker(current, self._breaker_left_closed_at)
            dropped = stats.get('dropped') or 0
            dropped_since = 0 if self._dropped_seen is None else max(0, dropped - self._dropped_seen)
            self._dropped_seen = dropped
            self.alerter.outbox(stats.get('depth') or 0, dropped_since)
            self.alerter.dead_letters(stats.get('dead') or 0)
            connection = self.c.connection
            failing = connection.state != UP and connection.last_error is not None
            reason = str(connection.last_error) if failing else ''
            self.alerter.accountdb_auth(failing and connection.kind == 'auth', reason)
            self.alerter.update(ACCOUNTDB_CONFIGURATION, failing and connection.kind == 'configuration',
                                'AccountDB endpoint or TLS misconfigured ({0}); events wait in the outbox'.format(
                                    reason) if failing else 'AccountDB configuration works again',
                                {'reason': reason})
            if self.c.whitelist is not None:
                age = self.c.whitelist.age(now)
                if age is not None:
                    self.registry.set(metrics.WHITELIST_AGE, age)
                self.alerter.whitelist(age)
            for condition in alerts.CONDITIONS + (ACCOUNTDB_CONFIGURATION,):
                self.registry.set(metrics.ALERT_ACTIVE, 1 if condition in self.alerter.active() else 0,
                                  condition=condition)
        except Exception as error:  # alerts and metrics never stop the daemon
            log.error('alert evaluation failed (%s); continuing', error)

    def _write_metrics(self):
        path = self.settings['metrics.textfile']
        if path:
            metrics.write_textfile(self.registry, path)

    def _write_state(self, force=False, stopped=False):
        """Write daemon.json: at once when a figure changed, else at most every STATE_WRITE_INTERVAL."""
        now = self.clock()
        figures = dict(self.state, pid=os.getpid(), version=__version__, node=self.settings['node'],
                       connection=self.c.connection.state if self.c else None,
                       breaker=self._breaker_state() if self.c else None,
                       last_heartbeat_sent_at=self.last_heartbeat_sent_at
                       or self.state.get('last_heartbeat_sent_at'),
                       stopped_at=now if stopped else None, last_error=None)
        if self.c is not None and self.c.connection.state != UP and self.c.connection.last_error is not None:
            figures['last_error'] = str(self.c.connection.last_error)
        figures.pop('heartbeat_at', None)
        recent = self._state_written_at is not None and now - self._state_written_at < STATE_WRITE_INTERVAL
        if not force and recent and figures == self._state_written:
            return
        self.state = dict(figures, heartbeat_at=now)
        try:
            state.write_json(daemon_state_path(self.settings), self.state)
            self._state_written_at = now
            self._state_written = figures
        except OSError as error:
            log.error('cannot write %s (%s); health checks may report the reconciler as dead',
                      daemon_state_path(self.settings), error.strerror or error)

    def status_line(self):
        """One line for systemd's STATUS=: outbox, AccountDB, breaker, last inventory."""
        stats = self.stats or {}
        depth = stats.get('depth')
        parts = ['outbox {0} event{1}'.format(depth, '' if depth == 1 else 's') if depth is not None
                 else 'outbox ?']
        if stats.get('oldest_age') is not None:
            parts[0] += ' (oldest {0})'.format(logsetup.format_duration(stats['oldest_age']))
        parts.append('AccountDB ' + (self.c.connection.summary() if self.c else 'unknown'))
        parts.append('breaker ' + (self._breaker_state() if self.c else 'unknown').replace('_', '-'))
        synced = self.state.get('last_inventory_sync_at')
        parts.append('inventory synced {0} ago'.format(logsetup.format_duration(self.clock() - synced))
                     if synced else 'inventory not synced yet')
        return '; '.join(parts)

    # -- reload ---------------------------------------------------------------------
    def reload(self):
        """Reload the configuration (SIGHUP). An invalid one is logged and the old one kept.

        Return True when the new configuration is in use.
        """
        if self.reload_settings is None:
            return False
        self.notifier.reloading()
        try:
            new = self.reload_settings()
        except config.ConfigError as error:
            log.error('configuration reload rejected, keeping the running configuration: %s',
                      '; '.join(error.errors))
            self.notifier.ready(self.status_line())
            return False
        old_settings, old = self.settings, self.c
        logsetup.configure(new)
        try:
            self.settings = new
            components = Components(new, self)
            components.outbox.ensure()
        except OSError as error:
            self.settings = old_settings
            log.error('configuration reload rejected (%s), keeping the running configuration',
                      error.strerror or error)
            logsetup.configure(old_settings)
            self.notifier.ready(self.status_line())
            return False
        old.delivery.return_in_flight()
        old.close()
        if new['accountdb.url'] == old_settings['accountdb.url']:
            components.connection.inherit(old.connection)
        components.inventory.pvesh_failures = old.inventory.pvesh_failures
        self.c = components
        self.alerter.settings = new
        if new['paths.state_dir'] != old_settings['paths.state_dir']:
            log.warning('paths.state_dir changed on reload; the lock stays on %s until a restart',
                        old_settings['paths.state_dir'])
        if components.ready_dir != old.ready_dir or not (self.watch and self.watch.available):
            self._watch(components.ready_dir)
        if new['metrics.listen'] != old_settings['metrics.listen']:
            self._start_metrics_server()
        self._delivery_at = 0.0
        self._heartbeat_at = 0.0
        self._refresh_stats(force=True)
        changed = sorted(key for key in new if new.get(key) != old_settings.get(key))
        log.info('configuration reloaded (%d option%s changed%s)', len(changed), '' if len(changed) == 1 else 's',
                 ': ' + ', '.join(changed[:10]) if changed else '')
        self.notifier.ready(self.status_line())
        return True


def run_once(settings, clock=time.time, rand=random.random, session_factory=lambda: None, pvesh_run=None):
    """``reconcile --once``: recover, drain the outbox, reconcile the inventory, heartbeat.

    Return (exit code, message): 0 when AccountDB answered throughout, 1
    when it was unreachable or refused us (the message says why and how
    many events are kept). Raise AlreadyRunning when the daemon runs.
    """
    daemon = Daemon(settings, clock=clock, rand=rand, session_factory=session_factory,
                    notifier=Notifier(env={}), pvesh_run=pvesh_run, install_signals=False)
    daemon._lock_fd = acquire_lock(settings['paths.state_dir'])
    try:
        daemon.state = state.read_json(daemon_state_path(settings), {}) or {}
        heartbeat_at = daemon.state.get('heartbeat_at')
        daemon.c = Components(settings, daemon)
        daemon.c.outbox.ensure()
        daemon.c.outbox.recover()
        daemon._refresh_stats(force=True)
        if not settings['accountdb.url']:
            return 1, 'accountdb.url is not set; set it in the configuration file'
        reachable = daemon.c.connection.probe()
        if reachable:
            daemon._whitelist(clock())
            result = daemon._deliver()
            daemon._inventory()
            daemon._heartbeat()
        else:
            result = None
        daemon._refresh_stats(force=True)
        daemon._alerts(clock())
        daemon._write_metrics()
        daemon.state['heartbeat_at'] = heartbeat_at  # a one-shot run is not a live daemon
        try:
            state.write_json(daemon_state_path(settings), dict(daemon.state, once_at=clock()))
        except OSError as error:
            log.error('cannot write %s (%s)', daemon_state_path(settings), error.strerror or error)
        connection = daemon.c.connection
        depth = daemon.stats.get('depth', 0)
        if connection.state != UP:
            return 1, '{0} ({1}); {2} kept in the outbox'.format(
                connection.headline(), connection.last_error or 'no answer', _plural(depth, 'event'))
        delivered = result.delivered if result is not None else 0
        return 0, 'delivered {0}; {1} kept in the outbox; inventory {2}'.format(
            _plural(delivered, 'event'), depth, daemon.c.inventory.last_outcome)
    finally:
        if daemon.c is not None:
            daemon.c.delivery.return_in_flight()
            daemon.c.close()
        os.close(daemon._lock_fd)


def _plural(count, noun):
    return '{0} {1}{2}'.format(count, noun, '' if count == 1 else 's')


def _rfc3339(epoch):
    if epoch is None:
        return None
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(epoch)) + '.{0:06d}Z'.format(
        int((epoch % 1) * 1e6))
