"""``pve-hooks outbox ...`` through click's CliRunner over a real spool directory."""

import json
import os

import pytest
from click.testing import CliRunner

from pve_hooks.cli import main
from pve_hooks.outbox import admin
from pve_hooks.outbox.store import Outbox


def _event(vmid):
    return {'schema': 1, 'node': 'pve1', 'vmid': vmid, 'guest_type': 'lxc', 'phase': 'post-stop',
            'occurred_at': '2026-11-26T10:35:26.123456Z', 'source': 'hookscript'}


@pytest.fixture
def spool(tmp_path):
    return str(tmp_path / 'spool')


def cli(spool, *args):
    env = {'PVE_HOOKS_PATHS__SPOOL_DIR': spool, 'PVE_HOOKS_CONFIG': '', 'PVE_HOOKS_NODE': 'pve1'}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_status_json_and_text(spool):
    box = Outbox(spool)
    for vmid in (100, 101, 102):
        box.spool(_event(vmid))
    entry = admin.list_ready(box)[0]
    box.claim(entry)
    box.dead(entry, 'rejected: 422')
    result = cli(spool, 'outbox', 'status', '--json')
    assert result.exit_code == 0
    stats = json.loads(result.output)
    assert (stats['depth'], stats['dead'], stats['quarantine'], stats['dropped']) == (2, 1, 0, 0)
    text = cli(spool, 'outbox', 'status').output
    assert 'waiting:     2 events' in text and 'dead:        1 (see pve-hooks outbox list --dead)' in text


def test_list_show_retry_purge(spool):
    box = Outbox(spool)
    for vmid in (100, 101):
        box.spool(_event(vmid))
    first, second = admin.list_ready(box)
    lines = cli(spool, 'outbox', 'list').output.splitlines()
    assert [line.split()[0] for line in lines] == [first.event_id, second.event_id]
    assert cli(spool, 'outbox', 'list', '--limit', '1').output.count('\n') == 1

    shown = cli(spool, 'outbox', 'show', first.event_id)
    assert shown.exit_code == 0 and shown.output.startswith('state: ready\n')
    assert json.loads(shown.output.split('\n', 1)[1])['vmid'] == 100
    missing = cli(spool, 'outbox', 'show', '0f8fad5b-d9cb-469f-a165-70867728950e')
    assert missing.exit_code == 1 and 'is not in the outbox' in missing.output

    box.claim(first)
    box.dead(first, 'AccountDB rejected it: 422')
    assert 'AccountDB rejected it: 422' in cli(spool, 'outbox', 'list', '--dead').output
    assert '1 events are waiting' in cli(spool, 'outbox', 'retry').output
    assert cli(spool, 'outbox', 'retry', '--dead').output.startswith('1 dead events moved back')
    assert len(admin.list_ready(box)) == 2

    box.claim(first)
    box.dead(first, 'again')
    usage = cli(spool, 'outbox', 'purge')
    assert usage.exit_code == 2 and 'needs --dead' in usage.output
    assert cli(spool, 'outbox', 'purge', '--dead').output.startswith('1 dead events deleted')
    assert box.stats()['dead'] == 0


def test_list_quarantine(spool):
    box = Outbox(spool)
    box.ensure()
    with open(os.path.join(box.root, 'ready', 'garbage'), 'w') as stream:
        stream.write('x')
    admin.list_ready(box)
    out = cli(spool, 'outbox', 'list', '--quarantine').output
    assert out.startswith('garbage  file name is not')


def test_unusable_spool_is_one_clear_error(spool, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    result = cli(str(blocker / 'spool'), 'outbox', 'status')
    assert result.exit_code == 1
    assert result.output.startswith('Error: cannot use the outbox at ') and 'Traceback' not in result.output
