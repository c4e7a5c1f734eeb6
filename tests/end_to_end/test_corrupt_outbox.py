"""Scenario 7: corrupt and truncated files dropped into the outbox's ready/ directory.

Each bad file ends in quarantine/ with a reason; every good event is delivered
exactly once; the daemon keeps running.
"""

import json
import os

from tests.end_to_end.harness import assert_all_delivered, lifecycle, wait_for

GOOD_ID = '3f0c8a52-6f7e-4b43-9d7a-0a3c1e2d4b5f'


def _bad_files(node):
    """Write bad files with event-like names into ready/; return their names."""
    ready = node.outbox_dir('ready')
    valid = {'schema': 1, 'event_id': GOOD_ID, 'node': node.name, 'vmid': 150, 'guest_type': 'qemu',
             'phase': 'pre-start', 'occurred_at': '2026-11-26T10:00:00.000000Z', 'seq': 7, 'source': 'hookscript'}
    text = json.dumps(valid)
    bad = {
        '00000000000000000001-150-0b6a1e7e-0000-4000-8000-000000000001.json': b'',
        '00000000000000000002-150-0b6a1e7e-0000-4000-8000-000000000002.json': text[:len(text) // 2].encode(),
        '00000000000000000003-150-0b6a1e7e-0000-4000-8000-000000000003.json': b'\x00\xff\xfe garbage \x80',
        '00000000000000000004-150-0b6a1e7e-0000-4000-8000-000000000004.json': b'[1, 2, 3]',
        '00000000000000000005-150-0b6a1e7e-0000-4000-8000-000000000005.json': json.dumps(
            dict(valid, vmid='one hundred', event_id='0b6a1e7e-0000-4000-8000-000000000005')).encode(),
        '00000000000000000006-150-0b6a1e7e-0000-4000-8000-000000000006.json': json.dumps(
            dict(valid, phase='exploded', event_id='0b6a1e7e-0000-4000-8000-000000000006')).encode(),
        'not-an-event-name.json': text.encode(),
    }
    os.makedirs(ready, exist_ok=True)
    for name, data in bad.items():
        with open(os.path.join(ready, name), 'wb') as stream:
            stream.write(data)
    return sorted(bad)


def test_corrupt_and_truncated_files_are_quarantined_and_the_rest_delivered(accountdb, pve_node, fake_node):
    for vmid in (101, 102):
        fake_node.create_guest(vmid)
    node = pve_node('pve1')
    before = lifecycle([101, 102], cycles=1)
    node.fire(before)
    bad = _bad_files(node)
    after = lifecycle([101, 102], cycles=1)
    node.fire(after)
    node.start_daemon()
    wait_for(lambda: len(node.quarantined()) == len(bad), 30, 'every bad file to be quarantined',
             seen=lambda: 'quarantine {0}, ready {1}; log:\n{2}'.format(
                 node.quarantined(), node.outbox_files('ready', ''), node.log_tail(10)))
    for name in node.quarantined():
        reason = os.path.join(node.outbox_dir('quarantine'), name + '.reason')
        assert os.path.exists(reason) and os.path.getsize(reason) > 0, 'no reason recorded for ' + name
    assert_all_delivered(node, accountdb.db, before + after, quarantine=len(bad))
    # Quarantine is reported, not hidden.
    assert node.status()['outbox']['quarantine'] == len(bad)
    assert node.daemon_alive(), node.log_tail()
    assert node.stop_daemon() == 0
