"""Unit tests for pve_hooks.observe.status: one snapshot, read from real files, rendered every way."""

import os

import pytest

from pve_hooks import statedir
from pve_hooks.accountdb import breaker as breaker_mod
from pve_hooks.config import loader as config
from pve_hooks.observe import status
from pve_hooks.outbox.store import Outbox

NOW = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path):
    return config.load(None, env={}, overrides=[
        'node=pve1', 'paths.state_dir=' + str(tmp_path / 'state'), 'paths.spool_dir=' + str(tmp_path / 'spool'),
        'breaker.reset_timeout=60'])


def _event(vmid):
    return {'schema': 1, 'node': 'pve1', 'vmid': vmid, 'guest_type': 'qemu', 'phase': 'post-start',
            'occurred_at': '2026-11-26T10:35:26.123456Z', 'source': 'hookscript'}


def test_read_gathers_every_source_into_one_snapshot(settings):
    outbox = Outbox.from_settings(settings, clock=lambda: NOW)
    outbox.ensure()
    outbox.spool(_event(100))
    statedir.write_json(statedir.path(settings, statedir.DAEMON), {
        'pid': os.getpid(), 'heartbeat_at': NOW - 3, 'connection': 'up', 'last_delivery_at': NOW - 60,
        'last_heartbeat_sent_at': NOW - 30, 'health': {'status': 'OK', 'checks': []}, 'alerts': ['dead_letters']})
    statedir.write_json(statedir.path(settings, statedir.INVENTORY), {'last_sync_at': NOW - 20, 'guests': 4})
    real = breaker_mod.from_settings(settings, clock=lambda: NOW - 100)
    for _ in range(settings['breaker.failure_threshold']):
        real.record_failure()
    snapshot = status.read(settings, clock=lambda: NOW)
    assert snapshot['daemon']['running'] and snapshot['daemon']['heartbeat_age'] == 3
    assert snapshot['outbox']['depth'] == 1 and snapshot['outbox']['spooled'] == 1
    # the breaker's own reading: open for 100 s with a 60 s timeout is half-open
    assert snapshot['breaker']['state'] == breaker_mod.HALF_OPEN
    assert snapshot['last_inventory_sync_at'] == NOW - 20 and snapshot['inventory']['guests'] == 4
    assert snapshot['alerts'] == ['dead_letters'] and snapshot['health']['status'] == 'OK'
    lines = status.lines(snapshot)
    assert lines[0].startswith('reconciler:      running (pid {0})'.format(os.getpid()))
    assert 'breaker:         half-open' in lines and 'alerts active:   dead_letters' in lines
    body = status.heartbeat_body(snapshot)
    assert body['outbox']['depth'] == 1 and body['breaker'] == 'half_open' and body['health']['status'] == 'OK'
    assert body['sent_at'] == '2027-01-15T08:00:00.000000Z'
    assert status.one_line(snapshot).startswith('outbox 1 event (oldest ')


def test_a_stopped_daemon_is_not_running_and_its_connection_is_not_shown(settings):
    statedir.write_json(statedir.path(settings, statedir.DAEMON),
                        {'pid': os.getpid(), 'stopped_at': NOW - 5, 'connection': 'up', 'last_error': 'x'})
    snapshot = status.read(settings, clock=lambda: NOW)
    assert snapshot['daemon'] == dict(snapshot['daemon'], running=False, pid=None, connection=None, last_error=None)
    assert status.lines(snapshot)[0] == ('reconciler:      not running (start it: systemctl start '
                                         'pve-hooks-reconciler)')


def test_a_dead_pid_is_not_running():
    assert not status.pid_alive(2 ** 22 + 12345) and status.pid_alive(os.getpid())


def test_board_publishes_and_carries_last_times_over_a_restart(settings):
    class Connection:
        state, kind, last_error = 'down', 'auth', 'HTTP 401'

    outbox = Outbox.from_settings(settings, clock=lambda: NOW)
    outbox.ensure()
    board = status.Board(settings, lambda: NOW, outbox, breaker_mod.from_settings(settings, clock=lambda: NOW),
                         Connection(), published={'last_delivery_at': NOW - 99, 'pid': 1, 'health': 'old'})
    version = board.version
    board.publish(last_heartbeat_sent_at=NOW - 1)
    board.count('filtered_total', 0)
    assert board.version == version + 1
    board.remember(alerts=['x'])
    assert board.version == version + 1   # derived figures are not news
    snapshot = board.snapshot()
    assert snapshot['last_delivery_at'] == NOW - 99 and snapshot['last_heartbeat_sent_at'] == NOW - 1
    assert snapshot['daemon']['pid'] == os.getpid() and snapshot['health'] is None   # not carried over
    assert snapshot['daemon']['connection_kind'] == 'auth' and snapshot['daemon']['last_error'] == 'HTTP 401'
    assert snapshot['outbox']['depth'] == 0 and board.pending() == 0
