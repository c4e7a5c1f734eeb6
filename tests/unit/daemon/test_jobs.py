"""Unit tests for pve_hooks.daemon.jobs: when each job is due, and what it publishes on the status board.

The board, the outbox, the breaker, alerts and metrics are real; the AccountDB
connection and the engines behind a job are small stand-ins whose only job is
to say "up/down" or record a call (the real ones run in test_loop.py).
"""

import os
import stat

import pytest

from pve_hooks import statedir
from pve_hooks.accountdb import breaker as breaker_mod
from pve_hooks.config import loader as config
from pve_hooks.daemon import jobs
from pve_hooks.observe import alerts
from pve_hooks.observe.metrics import Metrics
from pve_hooks.observe.status import Board
from pve_hooks.outbox.store import Outbox
from tests.support.clock import Clock


class Connection:
    """The parts of accountdb.connection.Connection a job looks at."""

    def __init__(self, state='up', next_try_at=0.0):
        self.state, self.next_try_at, self.kind, self.last_error = state, next_try_at, None, None

    def due(self, now):
        return now >= self.next_try_at

    def summary(self):
        return self.state


class Notifier:
    def __init__(self):
        self.statuses = []

    def status(self, text):
        self.statuses.append(text)


@pytest.fixture
def site(tmp_path):
    clock = Clock()
    settings = config.load(None, env={}, overrides=[
        'node=pve1', 'paths.state_dir=' + str(tmp_path / 'state'), 'paths.spool_dir=' + str(tmp_path / 'spool'),
        'metrics.textfile=' + str(tmp_path / 'pve-hooks.prom'), 'accountdb.url=http://127.0.0.1:9',
        'whitelist.refresh_interval=600'])
    outbox = Outbox.from_settings(settings, clock=clock)
    outbox.ensure()
    connection = Connection()
    board = Board(settings, clock, outbox, breaker_mod.from_settings(settings, clock=clock), connection)
    return settings, clock, connection, board


def test_whitelist_refresh_waits_for_accountdb_and_runs_as_soon_as_it_answers(site):
    settings, clock, connection, board = site

    class Cache:
        calls = 0

        def refresh_if_due(self, client, now):
            Cache.calls += 1
            return 'unchanged'

    job = jobs.WhitelistRefresh(settings, Cache(), connection, board)
    connection.state, connection.next_try_at = 'down', clock.now + 30
    assert job.next_due(clock.now) == 0.0 and job.run(clock.now) == 'deferred' and Cache.calls == 0
    assert job.next_due(clock.now) == clock.now + 600   # not before its interval while AccountDB is down
    connection.state, connection.next_try_at = 'up', 0.0   # another job got through
    assert job.next_due(clock.now + 1) == clock.now + 1
    version = board.version
    assert job.run(clock.now + 1) == 'unchanged' and Cache.calls == 1 and board.version == version + 1
    assert board.published['last_whitelist_refresh_at'] == clock.now + 1
    assert job.next_due(clock.now + 2) == clock.now + 601


def test_no_whitelist_job_without_a_cache_or_a_url(site):
    settings, clock, connection, board = site
    assert jobs.WhitelistRefresh(settings, None, connection, board).next_due(clock.now) == jobs.NEVER


def test_inventory_pass_rereads_proxmox_once_events_were_delivered(site):
    settings, clock, connection, board = site

    class Sync:
        next_at, pending, pvesh_failures, pvesh_error, last_sync_at = 0.0, None, 2, 'timed out', None

        def __init__(self):
            self.dirty = []
            self.settings = settings

        def mark_dirty(self, reason):
            self.dirty.append(reason)

        def run(self, now):
            self.next_at = now + 300
            return 'read-failed'

    sync = Sync()
    job = jobs.InventoryJob(sync, connection, board)
    assert job.run(clock.now) == 'read-failed' and sync.dirty == []
    assert board.snapshot()['inventory']['pvesh_failures'] == 2   # the pvesh alert reads this
    board.publish(last_delivery_at=clock.now)
    job.run(clock.now)
    assert sync.dirty == ['hookscript events delivered']
    sync.pending = ('inventory', 'hash', clock.now)
    connection.next_try_at = clock.now + 5
    assert job.next_due(clock.now) == clock.now + 5   # an unsent inventory is retried with the connection


def test_health_job_publishes_the_summary_and_survives_a_broken_runner(site):
    settings, clock, connection, board = site

    class Runner:
        fail = False

        def run(self, now, snapshot=None):
            assert snapshot['node'] == 'pve1'   # the checks judge pve-hooks by the live snapshot
            if Runner.fail:
                raise RuntimeError('boom')
            return [], [{'name': 'outbox', 'old': 'OK', 'new': 'WARNING', 'reason': 'x'}]

        @staticmethod
        def summary(results):
            return {'status': 'WARNING', 'checks': []}

    job = jobs.HealthJob(settings, Runner(), board)
    assert job.run(clock.now) == 'WARNING' and board.published['health']['status'] == 'WARNING'
    Runner.fail = True
    assert job.run(clock.now + 30) is None and board.published['health']['status'] == 'WARNING'
    assert job.next_due(clock.now + 30) == clock.now + 30 + settings['reconcile.heartbeat_interval']


def test_status_job_renders_when_something_was_published_and_at_least_every_interval(site):
    settings, clock, connection, board = site
    notifier = Notifier()
    old = os.umask(0o077)   # the unit's UMask: the text file must stay readable by node_exporter
    try:
        job = jobs.StatusJob(settings, board, alerts.Alerter(settings, clock=clock), Metrics(snapshot=board.snapshot),
                             notifier, connection)
        assert job.next_due(clock.now) == clock.now
        job.run(clock.now)
    finally:
        os.umask(old)
    written = statedir.read_json(statedir.path(settings, statedir.DAEMON))
    assert written['heartbeat_at'] == clock.now and written['pid'] == os.getpid() and written['alerts'] == []
    assert stat.S_IMODE(os.stat(settings['metrics.textfile']).st_mode) == 0o644
    with open(settings['metrics.textfile']) as stream:
        assert 'pve_hooks_outbox_depth 0.0' in stream.read()
    assert notifier.statuses == ['outbox 0 events; AccountDB up; breaker closed; inventory not synced yet']
    assert job.next_due(clock.now) == clock.now + jobs.STATUS_INTERVAL   # nothing new
    board.publish(last_heartbeat_sent_at=clock.now)
    assert job.next_due(clock.now) == clock.now
    job.run(clock.now + 1, stopped=True)
    assert statedir.read_json(statedir.path(settings, statedir.DAEMON))['stopped_at'] == clock.now + 1


def test_after_a_clock_step_back_no_job_waits_longer_than_its_interval(site):
    settings, clock, connection, board = site

    class Sync:
        settings = None
        next_at, pending = 0.0, None

    sync = Sync()
    sync.settings = settings
    whitelist = jobs.WhitelistRefresh(settings, object(), connection, board)
    health = jobs.HealthJob(settings, None, board)
    heartbeat = jobs.HeartbeatJob(settings, connection, board, clock)
    inventory = jobs.InventoryJob(sync, connection, board)
    status_job = jobs.StatusJob(settings, board, None, None, None, connection)
    day = 86400.0
    for job in (whitelist, health, heartbeat):
        job.at = clock.now + 60   # scheduled a minute ahead ...
    sync.next_at = clock.now + 60
    status_job.written_version, status_job.written_at = board.version, clock.now
    clock.now -= day              # ... then the clock stepped back a day
    assert whitelist.next_due(clock.now) == clock.now + settings['whitelist.refresh_interval']
    assert health.next_due(clock.now) == clock.now + settings['reconcile.heartbeat_interval']
    assert heartbeat.next_due(clock.now) == clock.now + settings['reconcile.heartbeat_interval']
    assert inventory.next_due(clock.now) == clock.now + settings['reconcile.interval']
    assert status_job.next_due(clock.now) == clock.now + jobs.STATUS_INTERVAL
    clock.now += 2 * day          # forward steps need nothing: the deadlines are simply past
    assert health.next_due(clock.now) < clock.now
