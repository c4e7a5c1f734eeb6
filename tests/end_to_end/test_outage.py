"""Scenarios 1 and 2: AccountDB down for the first half of the run, and AccountDB flapping.

Events go through the real hookscript; the real daemon delivers them; the
check is the reference AccountDB's database: every event_id exactly once, each
guest's events in order, the outbox empty, the daemon still running.
"""

import random
import threading
import time

from tests.end_to_end.harness import assert_all_delivered, lifecycle, size, wait_for


def _guests(fake_node, count, first=101):
    vmids = list(range(first, first + count))
    for vmid in vmids:
        fake_node.create_guest(vmid, 'qemu' if vmid % 2 else 'lxc')
    return vmids


def test_accountdb_down_for_the_first_half_then_up(accountdb, pve_node, fake_node):
    node = pve_node('pve1')
    events = lifecycle(_guests(fake_node, 4), cycles=size(2, 25))
    half = len(events) // 2
    accountdb.stop()
    node.start_daemon()

    node.fire(events[:half])
    wait_for(lambda: node.status()['daemon']['connection'] not in (None, 'up'), 15,
             'the daemon to notice AccountDB is down', seen=lambda: node.status()['daemon'])
    wait_for(lambda: node.pending() == half, 5, 'all {0} events to wait in the outbox while AccountDB is down'.format(half),
             seen=node.pending)
    assert node.daemon_alive(), node.log_tail()

    accountdb.restart()
    node.fire(events[half:])
    assert_all_delivered(node, accountdb.db, events)
    assert node.stop_daemon() == 0


def test_accountdb_flapping_while_events_arrive(accountdb, pve_node, fake_node):
    node = pve_node('pve1')
    rng = random.Random(2)
    events = lifecycle(_guests(fake_node, 5), cycles=size(2, 20), rng=rng)
    flaps = size(3, 15)
    node.start_daemon()
    stop = threading.Event()
    flapped = []

    def flap():
        for _ in range(flaps):
            if stop.wait(rng.uniform(0.3, 1.2)):
                return
            accountdb.stop()
            if stop.wait(rng.uniform(0.5, 1.5)):
                break
            accountdb.restart()
            flapped.append(1)
        if not accountdb.running:
            accountdb.restart()

    flapper = threading.Thread(target=flap, name='flapper')
    flapper.start()
    try:
        for vmid, phase in events:
            node.fire([(vmid, phase)])
            time.sleep(rng.uniform(0, 0.05))
        flapper.join(60)
    finally:
        stop.set()
        flapper.join(30)
    if not accountdb.running:
        accountdb.restart()
    assert flapped, 'AccountDB never flapped: the scenario tested nothing'

    assert_all_delivered(node, accountdb.db, events)
    assert node.stop_daemon() == 0
