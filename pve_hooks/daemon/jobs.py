"""The reconciler's jobs: each says when it is next due and runs; the loop only schedules.

A job has one small interface::

    name              a short word for log lines
    next_due(now)     epoch seconds at which it wants to run next (``now`` or earlier: due)
    run(now)          do the work; return an outcome (for ``reconcile --once`` and tests)
    watch             optional: a dirwatch.DirWatch the loop waits on; when it fires
                      the loop calls ``woken(now)``

Clock steps: jobs schedule in epoch seconds, and a deadline set before the
clock stepped back would lie as far ahead as the step. So no job's next run
may lie further ahead than its own interval (:func:`within`): after a step
back, a job waits at most one interval.

No job calls back into the loop. What a job must report it publishes into
the status board (pve_hooks.observe.status.Board); another job that cares
reads it from there (the inventory pass re-reads Proxmox once events were
delivered: it sees ``last_delivery_at`` move). Jobs run in the order the
loop was given them; :class:`StatusJob` comes last and renders what the
others published (daemon.json, metrics text file, alerts, STATUS=).

Adding a job is a class here and one line in daemon.components.build_jobs.
"""

import logging

from pve_hooks import statedir
from pve_hooks.accountdb import errors
from pve_hooks.accountdb.connection import UP, Deferred
from pve_hooks.observe import alerts, status

log = logging.getLogger(__name__)

# Longest time between two status writes, so daemon.json's heartbeat_at stays fresh (health.reconciler_stale).
STATUS_INTERVAL = 30.0
NEVER = float('inf')


def within(deadline, now, interval):
    """Return ``deadline``, pulled in to ``now + interval`` when it lies further ahead (a clock step back)."""
    return min(deadline, now + interval)


class WhitelistRefresh:
    """Refresh the whitelist cache every ``whitelist.refresh_interval``, only while AccountDB answers.

    A refresh skipped because AccountDB was down is made as soon as the
    connection is up again. ``cache``: whitelist.cache.WhitelistCache or None.
    """

    name = 'whitelist'

    def __init__(self, settings, cache, connection, board):
        self.settings = settings
        self.cache = cache
        self.connection = connection
        self.board = board
        self.at = 0.0
        self.waiting_for_accountdb = False

    def next_due(self, now):
        if self.cache is None or not self.settings['accountdb.url']:
            return NEVER
        self.at = within(self.at, now, self.settings['whitelist.refresh_interval'])
        if self.waiting_for_accountdb:   # no sooner than AccountDB may be tried again
            if self.connection.state == UP and self.connection.due(now):
                return now
            return max(self.at, self.connection.next_try_at)
        return self.at

    def run(self, now):
        self.at = now + self.settings['whitelist.refresh_interval']
        if self.connection.state != UP or not self.connection.due(now):
            self.waiting_for_accountdb = True
            return 'deferred'
        self.waiting_for_accountdb = False
        outcome = self.cache.refresh_if_due(_ThroughConnection(self.connection), now)
        if outcome in ('updated', 'unchanged'):
            self.board.publish(last_whitelist_refresh_at=now)
        return outcome


class _ThroughConnection:
    """The whitelist cache's view of the client: its GET goes through the Connection."""

    def __init__(self, connection):
        self.connection = connection

    def get_whitelist(self, **kwargs):
        try:
            return self.connection.call('whitelist refresh', self.connection.client.get_whitelist, **kwargs)
        except Deferred as deferred:
            raise errors.TransientError('not attempted: ' + deferred.reason)


class DeliveryJob:
    """Deliver the outbox (daemon.delivery.Delivery) when events arrive or a retry is due.

    ``watch`` (a dirwatch.DirWatch on ready/) wakes it; without inotify it
    polls every ``delivery.poll_interval``. ``metrics`` counts each pass.
    """

    name = 'delivery'

    def __init__(self, settings, delivery, connection, board, metrics, watch, clock):
        self.settings = settings
        self.delivery = delivery
        self.connection = connection
        self.board = board
        self.metrics = metrics
        self.watch = watch
        self.clock = clock
        self.at = 0.0

    def woken(self, now):
        """New files in ready/: deliver now (or when the retry schedule allows)."""
        self.at = min(self.at, now)

    def next_due(self, now):
        longest = max(STATUS_INTERVAL, self.settings['reconcile.heartbeat_interval'],
                      self.settings['delivery.poll_interval'])
        self.at = within(self.at, now, longest)
        if not self.settings['accountdb.url']:
            return self.at
        return max(self.at, self.connection.next_try_at)

    def run(self, now):
        """Run one pass; return its daemon.delivery.PassResult (None without accountdb.url)."""
        if not self.settings['accountdb.url']:
            self.at = now + STATUS_INTERVAL
            return None
        result = self.delivery.run()
        now = self.clock()
        self.metrics.count_delivery(result)
        self.board.count('filtered_total', result.filtered)
        if result.error is not None or result.deferred:
            self.at = max(self.connection.next_try_at, now + 0.01)
        elif result.held or result.released or not (self.watch and self.watch.available):
            self.at = now + self.settings['delivery.poll_interval']
        else:   # inotify wakes us; a periodic look is only a safety net
            self.at = now + self.settings['reconcile.heartbeat_interval']
        if result.delivered or result.rejected or result.filtered or result.error is not None:
            depth = self.board.refresh_outbox(force=True)
            depth = (depth or {}).get('depth')
            if result.delivered:
                self.board.publish(last_delivery_at=self.delivery.last_delivery_at)
                log.info('delivered %d event%s to AccountDB (%d new, %d duplicate)%s', result.delivered,
                         '' if result.delivered == 1 else 's', result.accepted, result.duplicate,
                         '; {0} kept in the outbox'.format(depth) if depth else '',
                         extra={'BATCH_SIZE': result.delivered, 'NODE': self.settings['node']})
            else:
                self.board.publish()
        return result


class InventoryJob:
    """Reconcile the node's inventory (daemon.inventory_sync.InventorySync) when due.

    Events delivered since the last pass (``last_delivery_at`` moved on the
    board) make the next pass read Proxmox even if .vmlist did not change.
    """

    name = 'inventory'

    def __init__(self, sync, connection, board):
        self.sync = sync
        self.connection = connection
        self.board = board
        self.delivered_seen = board.published.get('last_delivery_at')

    def next_due(self, now):
        self.sync.next_at = within(self.sync.next_at, now, self.sync.settings['reconcile.interval'])
        if self.sync.pending is not None:
            return min(self.sync.next_at, self.connection.next_try_at)
        return self.sync.next_at

    def run(self, now):
        delivered = self.board.published.get('last_delivery_at')
        if delivered != self.delivered_seen:
            self.delivered_seen = delivered
            self.sync.mark_dirty('hookscript events delivered')
        outcome = self.sync.run(now)
        self.board.publish(last_inventory_sync_at=self.sync.last_sync_at,
                           inventory={'outcome': outcome, 'pvesh_failures': self.sync.pvesh_failures,
                                      'pvesh_error': self.sync.pvesh_error})
        return outcome


class HealthJob:
    """Run the node health checks (health.runner.HealthRunner) every ``reconcile.heartbeat_interval``.

    The results go on the board, so the heartbeat that follows carries them
    and metrics and alerts read them; status changes are logged here.
    """

    name = 'health'

    def __init__(self, settings, runner, board):
        self.settings = settings
        self.runner = runner
        self.board = board
        self.at = 0.0

    def next_due(self, now):
        self.at = within(self.at, now, self.settings['reconcile.heartbeat_interval'])
        return self.at

    def run(self, now):
        """Return the overall status, or None when the checks could not run."""
        self.at = now + self.settings['reconcile.heartbeat_interval']
        try:
            results, transitions = self.runner.run(now, snapshot=self.board.snapshot())
        except Exception as error:  # noqa: BLE001 - health must never stop delivery
            log.error('node health checks failed to run (%s); heartbeat sent without health', error)
            return None
        for change in transitions:
            if change['old'] is not None:
                log.log(logging.INFO if change['new'] == 'OK' else logging.WARNING,
                        'node health check %s changed from %s to %s: %s', change['name'], change['old'],
                        change['new'], change['reason'])
        summary = self.runner.summary(results)
        self.board.publish(health=summary)
        return summary['status']


class HeartbeatJob:
    """Send the heartbeat (rendered from the status snapshot) every ``reconcile.heartbeat_interval``."""

    name = 'heartbeat'

    def __init__(self, settings, connection, board, clock):
        self.settings = settings
        self.connection = connection
        self.board = board
        self.clock = clock
        self.at = 0.0

    def next_due(self, now):
        self.at = within(self.at, now, self.settings['reconcile.heartbeat_interval'])
        return self.at if self.settings['accountdb.url'] else NEVER

    def run(self, now):
        """Return True when AccountDB took the heartbeat."""
        self.at = now + self.settings['reconcile.heartbeat_interval']
        body = status.heartbeat_body(self.board.snapshot())
        try:
            self.connection.call('heartbeat', self.connection.client.heartbeat, self.settings['node'], body)
        except (Deferred, errors.AccountDBError):
            return False  # logged once by the connection; the next heartbeat is on schedule
        self.board.publish(last_heartbeat_sent_at=self.clock())
        return True


class StatusJob:
    """Render what the other jobs published: alerts, daemon.json, the metrics text file, STATUS=.

    Due whenever something was published, and at least every STATUS_INTERVAL
    (daemon.json's ``heartbeat_at`` is how ``pve-hooks status`` and the
    ``reconciler`` health check know the daemon is alive).
    """

    name = 'status'

    def __init__(self, settings, board, alerter, metrics, notifier, connection):
        self.settings = settings
        self.board = board
        self.alerter = alerter
        self.metrics = metrics
        self.notifier = notifier
        self.connection = connection
        self.written_version = None
        self.written_at = None

    def next_due(self, now):
        if self.written_version != self.board.version or self.written_at is None:
            return now
        return within(self.written_at + STATUS_INTERVAL, now, STATUS_INTERVAL)

    def run(self, now, stopped=False):
        """Write everything; ``stopped`` marks daemon.json as left by a stopped daemon. Return the snapshot."""
        self.written_version = self.board.version
        self.written_at = now
        snapshot = self.board.snapshot()
        self.board.remember(alerts=alerts.evaluate(self.alerter, snapshot))
        figures = dict(self.board.figures(), heartbeat_at=now, stopped_at=now if stopped else None)
        path = statedir.path(self.settings, statedir.DAEMON)
        try:
            statedir.write_json(path, figures)
        except OSError as error:
            log.error('cannot write %s (%s); health checks may report the reconciler as dead',
                      path, error.strerror or error)
        if self.settings['metrics.textfile']:
            self.metrics.write_textfile(self.settings['metrics.textfile'])
        self.notifier.status(status.one_line(snapshot, self.connection.summary()))
        return snapshot
