"""Unit tests for pve_hooks.cli.reconcile: ``status`` and ``reconcile`` through click's CliRunner."""

import json
import logging
import os

import pytest
from click.testing import CliRunner

from pve_hooks.daemon import lock
from pve_hooks import statedir as state
from pve_hooks.cli import main
from pve_hooks.outbox.store import Outbox
from tests.support.logstate import restored_logging


@pytest.fixture
def sets(tmp_path):
    empty = tmp_path / 'config.yaml'
    empty.write_text('{}\n')
    return ['--config', str(empty), '--set', 'node=pve1', '--set', 'paths.state_dir=' + str(tmp_path / 'state'),
            '--set', 'paths.spool_dir=' + str(tmp_path / 'spool'), '--set', 'metrics.textfile=',
            '--set', 'logging.target=stderr']


@pytest.fixture(autouse=True)
def restore_logging():
    """``reconcile`` configures the root logger (logsetup); put it back for the next tests."""
    with restored_logging():
        yield


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False, env={'PVE_HOOKS_CONFIG': ''})


def test_status_of_a_fresh_node(sets):
    result = _run(sets + ['status'])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == 'reconciler:      not running (start it: systemctl start pve-hooks-reconciler)'
    assert 'outbox:          0 events waiting' in lines
    assert 'breaker:         closed' in lines
    assert 'last delivery:   never' in lines
    assert 'whitelist:       none cached (every guest reported)' in lines


def test_status_json_reports_outbox_breaker_daemon_and_whitelist(sets, tmp_path):
    outbox = Outbox(str(tmp_path / 'spool'))
    outbox.ensure()
    outbox.spool({'schema': 1, 'node': 'pve1', 'vmid': 100, 'guest_type': 'qemu', 'phase': 'pre-start',
                  'occurred_at': '2026-11-26T10:35:26.123456Z', 'source': 'hookscript'})
    state.write_json(str(tmp_path / 'state' / 'daemon.json'),
                     {'pid': os.getpid(), 'heartbeat_at': 1.0, 'last_delivery_at': 2.0, 'connection': 'down',
                      'last_error': 'connection to AccountDB refused', 'last_heartbeat_sent_at': 3.0})
    state.write_json(str(tmp_path / 'state' / 'inventory.json'), {'last_sync_at': 4.0, 'guests': 2})
    state.write_json(str(tmp_path / 'state' / 'breaker.json'),
                     {'state': 'open', 'failures': 5, 'opened_at': 9e12, 'changed_at': 5.0})
    result = _run(sets + ['status', '--json'])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data['outbox']['depth'] == 1 and data['outbox']['dead'] == 0 and data['outbox']['oldest_age'] >= 0
    assert data['breaker']['state'] == 'open' and data['breaker']['failures'] == 5
    assert data['daemon']['running'] and data['daemon']['pid'] == os.getpid()
    assert data['daemon']['last_error'] == 'connection to AccountDB refused'
    assert (data['last_delivery_at'], data['last_inventory_sync_at'], data['last_heartbeat_sent_at']) == (2.0, 4.0, 3.0)
    assert data['whitelist']['state'] == 'no-cache'
    human = _run(sets + ['status']).output
    assert 'AccountDB down' in human and 'last error:      connection to AccountDB refused' in human
    assert 'outbox:          1 event waiting, oldest' in human and 'breaker:         open' in human


def test_status_of_a_stopped_daemon(sets, tmp_path):
    state.write_json(str(tmp_path / 'state' / 'daemon.json'), {'pid': os.getpid(), 'stopped_at': 5.0})
    assert not json.loads(_run(sets + ['status', '--json']).output)['daemon']['running']


def test_reconcile_once_without_url_is_one_clear_error(sets):
    result = _run(sets + ['reconcile', '--once'])
    assert result.exit_code == 1
    assert result.output.strip() == 'Error: accountdb.url is not set; set it in the configuration file'


def test_second_reconciler_is_refused(sets, tmp_path):
    fd = lock.acquire(str(tmp_path / 'state'))
    try:
        result = _run(sets + ['--set', 'accountdb.url=http://127.0.0.1:9', 'reconcile', '--once'])
    finally:
        os.close(fd)
    assert result.exit_code == 1
    assert 'another pve-hooks reconciler (pid {0}) is running'.format(os.getpid()) in result.output
