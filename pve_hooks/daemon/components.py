"""Everything the reconciler builds from one Settings: the AccountDB link, the outbox, the jobs.

Components are built at start and again on a successful SIGHUP reload
(the new Components then take over the old ones' connection state, pvesh
failure count and published figures, so nothing is logged or alerted twice).
"""

import logging
import os
import time

from pve_hooks.accountdb import breaker as breaker_mod
from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb.connection import Connection
from pve_hooks.daemon import jobs
from pve_hooks.daemon.delivery import Delivery
from pve_hooks.daemon.inventory_sync import InventorySync
from pve_hooks.health.runner import HealthRunner
from pve_hooks.hook.spool import READY
from pve_hooks.observe.status import Board
from pve_hooks.outbox.store import Outbox
from pve_hooks.proxmox import pvesh
from pve_hooks.whitelist.cache import WhitelistCache

log = logging.getLogger(__name__)


class Tools:
    """What outlives a reload: clocks, randomness, HTTP sessions, pvesh, systemd, metrics, alerts, shutdown.

    ``clock`` returns epoch seconds; ``rand`` [0, 1) for jitter;
    ``session_factory()`` a requests.Session (or None for the client's
    default); ``pvesh_run`` is pvesh.run-compatible (None: pvesh.run);
    ``watch_factory(directory)`` a dirwatch.DirWatch; ``notifier`` a
    systemd.Notifier, ``watchdog`` its systemd.Watchdog; ``metrics`` an
    observe.metrics.Metrics; ``alerter`` an observe.alerts.Alerter;
    ``shutdown`` an object whose ``requested`` attribute turns True on SIGTERM.
    """

    def __init__(self, clock, rand, session_factory, pvesh_run, watch_factory, notifier, watchdog, metrics,
                 alerter, shutdown):
        self.clock = clock
        self.rand = rand
        self.session_factory = session_factory
        self.pvesh_run = pvesh_run or pvesh.run
        self.watch_factory = watch_factory
        self.notifier = notifier
        self.watchdog = watchdog
        self.metrics = metrics
        self.alerter = alerter
        self.shutdown = shutdown


class _RequestObserver:
    """accountdb.Client's ``metrics`` hook: counts each request and keeps the watchdog fed meanwhile
    (a batch bisected after a rejection makes several requests inside one call)."""

    def __init__(self, metrics, watchdog):
        self.metrics = metrics
        self.watchdog = watchdog

    def on_request(self, method, endpoint, status_class, duration_s):
        self.metrics.on_request(method, endpoint, status_class, duration_s)
        self.watchdog.ping()

    def on_wait(self):
        """Called about once a second from the client's deadline thread while a request is in flight."""
        self.watchdog.ping()


def pvesh_runner(tools):
    """Return a pvesh.run-compatible runner that pings the watchdog around each call and times it."""
    def run(settings, path, **kwargs):
        tools.watchdog.ping()
        started = time.monotonic()
        ok = False
        try:
            result = tools.pvesh_run(settings, path, **kwargs)
            ok = True
            return result
        finally:
            tools.metrics.count_pvesh(path.rstrip('/').rsplit('/', 1)[-1] or path, time.monotonic() - started, ok)
            tools.watchdog.ping()
    return run


def command_runner(watchdog):
    """Return pvesh.run_bounded wrapped with watchdog pings (for the health checks' pvesh and systemctl)."""
    def run(argv, timeout):
        watchdog.ping()
        try:
            return pvesh.run_bounded(argv, timeout)
        finally:
            watchdog.ping()
    return run


def log_breaker_change(old, new):
    """Log a circuit breaker transition made by this process (once: the breaker calls this on change)."""
    log.log(logging.WARNING if new == breaker_mod.OPEN else logging.INFO,
            'circuit breaker to AccountDB %s (was %s)%s', new.replace('_', '-'), old.replace('_', '-'),
            '; events wait in the outbox until a probe succeeds' if new == breaker_mod.OPEN else '',
            extra={'BREAKER_STATE': new})


class Components:
    """The objects and jobs built from one Settings; ``published``: the figures to carry over.

    Creates the outbox directories if missing; raise OSError when that fails.
    """

    def __init__(self, settings, tools, published=None):
        clock = tools.clock
        self.settings = settings
        self.outbox = Outbox.from_settings(settings, clock=clock)
        self.client = accountdb.Client(settings, session=tools.session_factory(),
                                       metrics=_RequestObserver(tools.metrics, tools.watchdog))
        self.breaker = breaker_mod.from_settings(settings, clock=clock, on_change=log_breaker_change)
        self.whitelist = WhitelistCache.from_settings(settings, clock=clock)
        self.board = None
        self.connection = Connection(settings, self.client, self.breaker, clock=clock, rand=tools.rand,
                                     pending=lambda: self.board.pending())
        self.board = Board(settings, clock, self.outbox, self.breaker, self.connection, self.whitelist, published)
        self.delivery = Delivery(settings, self.outbox, self.connection, whitelist=self.whitelist, clock=clock,
                                 should_stop=lambda: tools.shutdown.requested)
        self.inventory = InventorySync(settings, self.connection, whitelist=self.whitelist,
                                       pvesh_run=pvesh_runner(tools), clock=clock, tick=tools.watchdog.ping)
        self.health = HealthRunner(settings, offline=True, clock=clock, runner=command_runner(tools.watchdog))
        self.ready_dir = os.path.join(self.outbox.root, READY)
        self.outbox.ensure()   # before the watch: inotify needs ready/ to exist
        self.watch = tools.watch_factory(self.ready_dir)
        if not self.watch.available:
            log.warning('%s; polling the outbox every %s s instead (delivery.poll_interval)',
                        self.watch.reason, settings['delivery.poll_interval'])
        self.delivery_job = jobs.DeliveryJob(settings, self.delivery, self.connection, self.board, tools.metrics,
                                             self.watch, clock)
        self.status_job = jobs.StatusJob(settings, self.board, tools.alerter, tools.metrics, tools.notifier,
                                         self.connection)
        self.jobs = build_jobs(self, tools)

    def take_over(self, old):
        """Continue from ``old`` (the Components before a reload): connection state when the URL is
        unchanged, the pvesh failure count. Return None."""
        if self.settings['accountdb.url'] == old.settings['accountdb.url']:
            self.connection.inherit(old.connection)
        self.inventory.pvesh_failures = old.inventory.pvesh_failures
        self.inventory.pvesh_error = old.inventory.pvesh_error

    def close(self):
        """Release the watch and the HTTP session. Return None."""
        self.watch.close()
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a pool must never fail a reload
            pass


def build_jobs(components, tools):
    """Return the jobs in the order the loop runs them when several are due at once."""
    settings, board, connection = components.settings, components.board, components.connection
    return [
        jobs.WhitelistRefresh(settings, components.whitelist, connection, board),
        components.delivery_job,
        jobs.InventoryJob(components.inventory, connection, board),
        jobs.HealthJob(settings, components.health, board),
        jobs.HeartbeatJob(settings, connection, board, tools.clock),
        components.status_job,   # last: renders what the others published
    ]
