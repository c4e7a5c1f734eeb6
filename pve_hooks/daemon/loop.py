"""The reconciler daemon (``pve-hooks reconcile``): start, schedule jobs, sleep, reload, stop.

The loop only schedules. Each time it wakes it runs, in order, every job
that is due (daemon.jobs: whitelist refresh, delivery, inventory, health,
heartbeat, then the status job that renders daemon.json, metrics, alerts and
STATUS=), then sleeps in ``select`` until the earliest job is due, a job's
watch fires (inotify on the outbox), a signal arrives or the systemd
watchdog wants a ping. Nothing that AccountDB, pvesh or pmxcfs does makes
the daemon exit, and an unexpected error (a bug) in a job is logged and the
step retried later with a growing wait.

Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration. SIGTERM
starts a timer of ``reconcile.shutdown_timeout`` seconds: a call in
progress may finish within it; when the timer fires first, the call is
interrupted and its events return to ready (sent again after the restart;
AccountDB deduplicates by event_id). State is saved and the process exits 0.

Only one reconciler runs per state directory (daemon.lock), so
``reconcile --once`` (:func:`run_once`, the same jobs run once each) cannot
race a running daemon for the same events.
"""

import logging
import os
import random
import signal
import time

from pve_hooks import __version__, statedir
from pve_hooks.config import loader as config
from pve_hooks.daemon import dirwatch, lock
from pve_hooks.daemon.components import Components, Tools
from pve_hooks.daemon.delivery import Interrupted
from pve_hooks.daemon.systemd import Notifier, Watchdog, watchdog_problem
from pve_hooks.observe import alerts, listener, logs, metrics
from pve_hooks.observe.status import LAST_KEYS, one_line
from pve_hooks.outbox import recovery

log = logging.getLogger(__name__)

AlreadyRunning = lock.AlreadyRunning
# Longest sleep between two loop iterations.
MAX_SLEEP = 30.0
# Longest wait after repeated unexpected errors in the loop.
MAX_ERROR_WAIT = 60.0
# Shortest sleep when a job is due again at once (a job can never make the loop spin).
MIN_SLEEP = 0.01


class Shutdown:
    """Set by SIGTERM/SIGINT; jobs read ``requested`` to stop between batches."""

    def __init__(self):
        self.requested = False


class Daemon:
    """The reconciler.

    ``settings``: the loaded Settings; ``reload_settings()``: returns fresh
    Settings or raises config.ConfigError (SIGHUP); ``clock``: epoch seconds;
    ``rand``: [0, 1) for jitter; ``session_factory()``: a requests.Session (or
    None for the client's default); ``notifier``: systemd.Notifier;
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
        self.install_signals = install_signals
        self.shutdown_flag = Shutdown()
        notifier = notifier or Notifier()
        self.metrics = metrics.Metrics(snapshot=self.snapshot, node=settings['node'])
        # Channels run in a worker thread: a hanging alert command or webhook never stalls the loop or the watchdog.
        self.tools = Tools(clock, rand, session_factory, pvesh_run, watch_factory, notifier, Watchdog(notifier),
                           self.metrics, alerts.Alerter(settings, clock=clock, background=True), self.shutdown_flag)
        self.metrics_server = None
        self.reload_requested = False
        self._interruptible = False
        self._wake_r = self._wake_w = None
        self._lock_fd = None
        self.c = None
        self._errors = 0                      # unexpected errors in a row (iterate)
        self._error_until = 0.0               # no iteration before this after an unexpected error
        self._repeats = logs.RepeatSummariser(clock=clock)

    @property
    def stopping(self):
        """True once SIGTERM/SIGINT was received."""
        return self.shutdown_flag.requested

    def snapshot(self):
        """Return the live status snapshot (observe.status), or None before start."""
        return self.c.board.snapshot() if self.c is not None else None

    def status_line(self):
        """Return systemd's STATUS= line for the current snapshot."""
        return one_line(self.snapshot(), self.c.connection.summary())

    # -- start and stop -------------------------------------------------------------
    def start(self):
        """Lock, recover the outbox, probe AccountDB, tell systemd we are ready.

        Raise AlreadyRunning, OSError when the spool or state directory is unusable, or
        config.ConfigError when the hookscript would read the configuration file differently or
        accountdb.timeout.total is not below the systemd watchdog.
        """
        config.check_hookscript_reads(self.settings)
        _check_watchdog(self.settings, self.tools.notifier)
        statedir.check_dir(self.settings['paths.state_dir'])     # owner and mode: fixed or refused
        recovery.check_dirs(self.settings['paths.spool_dir'])
        self._lock_fd = lock.acquire(self.settings['paths.state_dir'])
        published = statedir.clamp_future(
            statedir.read_json(statedir.path(self.settings, statedir.DAEMON), {}) or {}, self.clock())
        self.c = Components(self.settings, self.tools, published)
        recovered = self.c.outbox.recover()
        if self.install_signals:
            self._install_signals()
        self._start_metrics_server()
        self.c.board.refresh_outbox(force=True)
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
        self.tools.notifier.ready(self.status_line())
        self.c.status_job.run(self.clock())
        self.tools.watchdog.arm()

    def _install_signals(self):
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_stop(self, signum, frame):
        if not self.shutdown_flag.requested:
            self.shutdown_flag.requested = True
            signal.setitimer(signal.ITIMER_REAL, max(0.01, self.settings['reconcile.shutdown_timeout']))

    def _on_hup(self, signum, frame):
        self.reload_requested = True

    def _on_alarm(self, signum, frame):
        if self._interruptible:
            self._interruptible = False
            raise Interrupted()

    def _start_metrics_server(self):
        listener.stop(self.metrics_server)
        self.metrics_server = listener.serve(self.metrics, self.settings['metrics.listen'])

    def shutdown(self):
        """Return in-flight events, save state, release everything. Return None."""
        self.tools.notifier.stopping()
        if self.c is not None:
            returned = self.c.delivery.return_in_flight()
            if returned:
                log.info('returned %d in-flight events to the outbox; they are sent after the restart '
                         '(AccountDB deduplicates them)', returned)
        if self.install_signals:
            signal.setitimer(signal.ITIMER_REAL, 0)
        depth = '?'
        if self.c is not None:
            self.c.board.refresh_outbox(force=True)
            self.c.status_job.run(self.clock(), stopped=True)
            depth = self.c.board.pending()
        listener.stop(self.metrics_server)
        self.metrics_server = None
        if self.c is not None:
            self.c.close()
        timeout = self.settings['reconcile.shutdown_timeout']
        if not self.tools.alerter.close(timeout=timeout):
            log.warning('alerts still queued at shutdown were not sent within %g s (reconcile.shutdown_timeout)',
                        timeout)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info('pve-hooks reconciler stopped; %s events kept in the outbox', depth)

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
        except Exception as error:  # noqa: BLE001 - the last line of defence: the daemon must not die on a bug
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
        """Reload if asked, then run every job that is due, in order. Return the names of the jobs run."""
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        ran = []
        try:
            self._interruptible = True
            for job in self.c.jobs:
                if self.stopping and job is not self.c.status_job:
                    continue
                now = self.clock()
                if job.next_due(now) <= now:
                    job.run(now)
                    ran.append(job.name)
                    self.tools.watchdog.ping()
        except Interrupted:
            returned = self.c.delivery.returned_on_interrupt
            log.warning('shutdown timeout (reconcile.shutdown_timeout %s s) reached during a call to '
                        'AccountDB or pvesh; %sstopping now', self.settings['reconcile.shutdown_timeout'],
                        'returned {0} in-flight event{1} to the outbox (sent again after the restart, '
                        'AccountDB deduplicates them); '.format(returned, '' if returned == 1 else 's')
                        if returned else '')
        finally:
            self._interruptible = False
        self.tools.watchdog.ping()
        return ran

    def next_wakeup(self, now):
        """Return the epoch at which the loop should wake: the earliest job, at most MAX_SLEEP ahead.

        Every job moves its own time forward when it runs, so the loop
        never spins while AccountDB is down.
        """
        deadlines = [now + MAX_SLEEP] + [job.next_due(now) for job in self.c.jobs]
        ping_in = self.tools.watchdog.next_in()
        if ping_in is not None:
            deadlines.append(now + ping_in)
        return max(min(deadlines), self._error_until, now + MIN_SLEEP)

    def _watched(self):
        return [job for job in self.c.jobs if getattr(job, 'watch', None) is not None]

    def sleep(self):
        """Wait for a watch, a signal or the next deadline (never a busy loop). Return None."""
        now = self.clock()
        timeout = max(0.0, self.next_wakeup(now) - now)
        for job in self._watched():
            if not job.watch.available and job.watch.rewatch():
                log.info('watching %s for new events again', job.watch.path)
        watches = {job.watch: job for job in self._watched() if job.watch.available}
        for item in dirwatch.wait(list(watches) + [self._wake_r], timeout):
            if item in watches:
                if item.drain():
                    watches[item].woken(self.clock())
            elif item == self._wake_r:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass

    # -- reload ---------------------------------------------------------------------
    def reload(self):
        """Reload the configuration (SIGHUP). An invalid one is logged and the old one kept.

        Return True when the new configuration is in use.
        """
        if self.reload_settings is None:
            return False
        notifier = self.tools.notifier
        notifier.reloading()
        try:
            new = self.reload_settings()
            _check_watchdog(new, notifier)
        except config.ConfigError as error:
            log.error('configuration reload rejected, keeping the running configuration: %s',
                      '; '.join(error.errors))
            notifier.ready(self.status_line())
            return False
        if not self._hookscript_reads(new):
            notifier.ready(self.status_line())
            return False
        old_settings, old = self.settings, self.c
        logs.configure(new)
        try:
            components = Components(new, self.tools, dict(old.board.published))
        except OSError as error:
            log.error('configuration reload rejected (%s), keeping the running configuration',
                      error.strerror or error)
            logs.configure(old_settings)
            notifier.ready(self.status_line())
            return False
        old.delivery.return_in_flight()
        old.close()
        components.take_over(old)
        self.settings, self.c = new, components
        self.tools.alerter.settings = new
        if new['paths.state_dir'] != old_settings['paths.state_dir']:
            log.warning('paths.state_dir changed on reload; the lock stays on %s until a restart',
                        old_settings['paths.state_dir'])
        if new['metrics.listen'] != old_settings['metrics.listen']:
            self._start_metrics_server()
        components.board.refresh_outbox(force=True)
        changed = sorted(key for key in new if new.get(key) != old_settings.get(key))
        log.info('configuration reloaded (%d option%s changed%s)', len(changed), '' if len(changed) == 1 else 's',
                 ': ' + ', '.join(changed[:10]) if changed else '')
        notifier.ready(self.status_line())
        return True

    def _hookscript_reads(self, new):
        """Return True if the hookscript reads ``new``'s file as the daemon does; else log, alert, False."""
        condition = alerts.CONFIG_UNREADABLE_BY_HOOKSCRIPT
        try:
            config.check_hookscript_reads(new)
        except config.ConfigError as error:
            message = 'the hookscript would read the new configuration file differently ({0}); fix it ' \
                      '(pve-hooks config check) and reload'.format('; '.join(error.errors))
            log.critical('configuration reload rejected, keeping the running configuration: %s', message)
            self.tools.alerter.update(condition, True, message, {'file': new.file})
            return False
        self.tools.alerter.update(condition, False, 'the hookscript reads the configuration file again')
        return True


def _check_watchdog(settings, notifier):
    """Raise config.ConfigError (one line) when accountdb.timeout.total is not below systemd's watchdog timeout."""
    problem = watchdog_problem(settings, notifier)
    if problem:
        raise config.ConfigError([problem])


def run_once(settings, clock=time.time, rand=random.random, session_factory=lambda: None, pvesh_run=None):
    """``reconcile --once``: recover, then run each job once (whitelist, delivery, inventory, health, heartbeat).

    The same Components and jobs as the daemon, through their public
    interface. Return (exit code, message): 0 when AccountDB answered
    throughout, 1 when it was unreachable or refused us (the message says
    why and how many events are kept). Raise AlreadyRunning when the daemon
    runs, OSError when the spool or state directory is unusable.
    """
    daemon = Daemon(settings, clock=clock, rand=rand, session_factory=session_factory,
                    notifier=Notifier(env={}), pvesh_run=pvesh_run, install_signals=False)
    lock_fd = lock.acquire(settings['paths.state_dir'])
    components = None
    try:
        published = statedir.read_json(statedir.path(settings, statedir.DAEMON), {}) or {}
        components = daemon.c = Components(settings, daemon.tools, published)
        components.outbox.recover()
        if not settings['accountdb.url']:
            return 1, 'accountdb.url is not set; set it in the configuration file'
        result = None
        if components.connection.probe():
            now = clock()
            for job in components.jobs:
                if job is components.status_job:
                    continue
                outcome = job.run(now)
                if job is components.delivery_job:
                    result = outcome
        components.board.refresh_outbox(force=True)
        _write_once(settings, components, published, clock())
        depth = components.board.pending() or 0
        connection = components.connection
        if connection.state != 'up':
            return 1, '{0} ({1}); {2} kept in the outbox'.format(
                connection.headline(), connection.last_error or 'no answer', _plural(depth, 'event'))
        delivered = result.delivered if result is not None else 0
        return 0, 'delivered {0}; {1} kept in the outbox; inventory {2}'.format(
            _plural(delivered, 'event'), depth, components.inventory.last_outcome)
    finally:
        if components is not None:
            components.delivery.return_in_flight()
            components.close()
        daemon.tools.alerter.close(timeout=settings['reconcile.shutdown_timeout'])
        os.close(lock_fd)


def _write_once(settings, components, published, now):
    """Save what a one-shot run learnt (last_* times) without making it look like a live daemon."""
    snapshot = components.board.snapshot()
    components.board.remember(alerts=alerts.evaluate(components.status_job.alerter, snapshot))
    figures = dict(published, **{key: components.board.published.get(key) for key in LAST_KEYS
                                 if components.board.published.get(key) is not None})
    figures.update(once_at=now, filtered_total=components.board.published.get('filtered_total', 0))
    try:
        statedir.write_json(statedir.path(settings, statedir.DAEMON), figures)
    except OSError as error:
        log.error('cannot write %s (%s)', statedir.path(settings, statedir.DAEMON), error.strerror or error)
    if settings['metrics.textfile']:
        components.status_job.metrics.write_textfile(settings['metrics.textfile'])


def _plural(count, noun):
    return '{0} {1}{2}'.format(count, noun, '' if count == 1 else 's')
