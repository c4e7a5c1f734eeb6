"""Scenario 6: the spool file system fills up.

The spool directory is a tiny tmpfs mounted in a private mount namespace
(``unshare -m``; the host never sees it); the hookscripts and the daemon run
inside that namespace (``nsenter``). AccountDB is down, so events pile up
until the disk is full. Every hookscript must still exit 0 with a clear line;
the loss must be counted (``dropped`` in the outbox state) and alerted; every
event that WAS spooled must reach AccountDB once it is back.

A second test does the same with the outbox's own bound (outbox.max_events),
which needs no privileges.
"""

import json
import os
import shutil
import subprocess

import pytest

from tests.end_to_end.harness import assert_delivered_exactly_once, assert_per_guest_order, wait_drained, wait_for

def _namespace_reason():
    if os.geteuid() != 0:
        return 'needs root for a mount namespace with a tmpfs'
    for program in ('unshare', 'nsenter', 'mount'):
        if shutil.which(program) is None:
            return '{0} not found (apt install util-linux)'.format(program)
    return None


@pytest.fixture
def tiny_spool(tmp_path):
    """A holder process in a new mount namespace with a 64 KiB tmpfs over tmp_path/pve1/spool; yield its pid."""
    reason = _namespace_reason()
    if reason:
        pytest.skip(reason)
    spool = tmp_path / 'pve1' / 'spool'
    spool.mkdir(parents=True)
    holder = subprocess.Popen(
        ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
         'mount -n -t tmpfs -o size=64k,mode=0700 pve-hooks-test "$0" && echo mounted && exec sleep 600',
         str(spool)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline().strip()
        if line != 'mounted':
            pytest.skip('cannot mount a tmpfs in a mount namespace: ' + holder.stderr.read().strip()[:200])
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(10)


def _alert_script(tmp_path):
    path = tmp_path / 'alert.sh'
    path.write_text('#!/bin/sh\ncat >> {0}\necho >> {0}\n'.format(tmp_path / 'alerts.jsonl'))
    path.chmod(0o755)
    return str(path)


def _alerts(tmp_path):
    try:
        text = (tmp_path / 'alerts.jsonl').read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _dropped(node):
    result = node.cli('outbox', 'status', '--json')
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)['dropped']


def _fill(node, accountdb, tmp_path, count):
    """AccountDB down, daemon up: fire ``count`` pre-starts; return the hookscripts' stderr lines."""
    accountdb.stop()
    node.start_daemon()
    messages = []
    for vmid in range(101, 101 + count):
        result = node.hook(vmid, 'pre-start')
        assert result.returncode == 0, 'a full spool must never fail a start: {0}'.format(result.stderr)
        assert 'Traceback' not in result.stderr
        messages += [line for line in result.stderr.splitlines() if line.strip()]
    return messages


def _drain_and_check(node, accountdb, tmp_path):
    spooled = node.fired_ids()
    assert spooled, 'nothing was spooled at all'
    accountdb.restart()
    wait_drained(node, accountdb.db, len(spooled), timeout=60)
    assert_delivered_exactly_once(accountdb.db, spooled)
    assert_per_guest_order(accountdb.db)
    assert node.daemon_alive(), node.log_tail()
    assert node.stop_daemon() == 0
    return spooled


def _fill_tiny_spool(make_node, accountdb, tmp_path, pid):
    node = make_node('pve1', accountdb, prefix=['nsenter', '-t', str(pid), '-m', '--'],
                     view='/proc/{0}/root'.format(pid),
                     settings={'alerts.command': [_alert_script(tmp_path)], 'alerts.after': 0})
    count = 60  # ~300-byte events take a 4 KiB tmpfs page each: 64 KiB holds about a dozen
    messages = _fill(node, accountdb, tmp_path, count)
    spooled = node.fired_ids()
    lost = count - len(spooled)
    assert 0 < len(spooled) < count, 'the tmpfs never filled up ({0} of {1} spooled)'.format(len(spooled), count)
    assert len(messages) == lost, 'one line per lost event, got {0} lines for {1} lost'.format(len(messages), lost)
    assert all('No space left on device' in line and 'free space' in line for line in messages), messages[:2]
    wait_for(lambda: node.pending() == len(spooled), 5, 'every spooled event to be in the outbox', seen=node.pending)
    return node, lost


@pytest.mark.privileged
def test_spool_disk_full(accountdb, make_node, tmp_path, tiny_spool):
    """Hookscripts exit 0 with a clear line; the loss is counted and alerted; nothing spooled is lost."""
    node, lost = _fill_tiny_spool(make_node, accountdb, tmp_path, tiny_spool)
    wait_for(lambda: _dropped(node) >= lost, 10, 'the dropped counter to count the lost events',
             seen=lambda: _dropped(node))
    wait_for(lambda: any(a.get('condition') == 'outbox_full' for a in _alerts(tmp_path)), 20,
             'an outbox_full alert', seen=lambda: _alerts(tmp_path))
    _drain_and_check(node, accountdb, tmp_path)


def test_outbox_bound_reached(accountdb, make_node, tmp_path):
    node = make_node('pve1', accountdb, settings={'outbox.max_events': 10, 'alerts.command': [_alert_script(tmp_path)],
                                                  'alerts.after': 0})
    messages = _fill(node, accountdb, tmp_path, 25)
    assert len(node.fired_ids()) == 10
    assert len(messages) == 15 and all('DROPPED' in line for line in messages), messages[:2]
    wait_for(lambda: _dropped(node) == 15, 10, 'the dropped counter', seen=lambda: _dropped(node))
    wait_for(lambda: any(a.get('condition') == 'outbox_full' for a in _alerts(tmp_path)), 20,
             'an outbox_full alert', seen=lambda: _alerts(tmp_path))
    _drain_and_check(node, accountdb, tmp_path)
