"""Scenario 5: 200 hookscripts started at once while the daemon drains the outbox."""

import random

from tests.end_to_end.harness import (assert_delivered_exactly_once, assert_outbox_clean, assert_per_guest_order,
                                      size, wait_drained)


def test_200_hookscripts_at_once_while_the_daemon_drains(accountdb, pve_node, fake_node):
    count = size(200, 1000)
    node = pve_node('pve1', settings={'delivery.batch_size': 20})
    # Something already in flight: a backlog the daemon is draining when the burst starts.
    backlog = [(vmid, 'pre-start') for vmid in range(5000, 5030)]
    node.fire(backlog)
    node.start_daemon()
    rng = random.Random(5)
    phases = ('pre-start', 'post-start', 'pre-stop', 'post-stop')
    burst = [(1000 + i, rng.choice(phases)) for i in range(count)]
    processes = [node.hook_popen(vmid, phase) for vmid, phase in burst]
    failures = []
    for (vmid, phase), process in zip(burst, processes):
        out, err = process.communicate(timeout=120)
        if process.returncode != 0 or 'Traceback' in err:
            failures.append((vmid, phase, process.returncode, err.strip()[-200:]))
    assert not failures, '{0} hookscripts failed, e.g. {1}'.format(len(failures), failures[:3])

    total = len(backlog) + count
    wait_drained(node, accountdb.db, total, timeout=120)
    ids = node.fired_ids()
    assert len(ids) == total, 'the hookscript reported {0} events recorded, {1} were fired'.format(len(ids), total)
    events = assert_delivered_exactly_once(accountdb.db, ids)
    assert sorted((e['vmid'], e['phase']) for e in events) == sorted(backlog + burst)
    assert_per_guest_order(accountdb.db)
    assert_outbox_clean(node)
    assert node.daemon_alive(), node.log_tail()
    assert node.stop_daemon() == 0
