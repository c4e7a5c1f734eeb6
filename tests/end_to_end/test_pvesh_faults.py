"""Scenario 8: pvesh hanging, failing, printing garbage or nothing.

The node's inventory was sent once; then a guest is created (so the daemon
wants to send a new inventory) while pvesh misbehaves. AccountDB's stored
inventory must never be replaced by an empty or partial one, the daemon must
stay up and keep delivering events, and once pvesh is healthy the new guest
appears.
"""

import pytest

from tests.end_to_end.harness import CountingPvesh, lifecycle, stored_events, stored_inventories, wait_for

FAULTS = ['hang', 'hang-child', 'fail', 'garbage', 'empty']


def _guest_ids(db, node):
    entry = stored_inventories(db).get(node)
    if entry is None:
        return None
    return sorted(guest['vmid'] for guest in entry['inventory']['guests'])


@pytest.mark.parametrize('fault', FAULTS)
def test_pvesh_fault_never_sends_an_empty_inventory(accountdb, pve_node, fake_node, fault, tmp_path):
    for vmid in (101, 102, 103):
        fake_node.create_guest(vmid)
    pvesh = CountingPvesh(tmp_path, fake_node.fake.pvesh)
    node = pve_node('pve1', settings={'proxmox.pvesh': pvesh.path, 'proxmox.pvesh_timeout': 1,
                                      'health.pvesh_timeout': 1})
    node.start_daemon()
    wait_for(lambda: _guest_ids(accountdb.db, 'pve1') == [101, 102, 103], 20, 'the first inventory',
             seen=lambda: (_guest_ids(accountdb.db, 'pve1'), node.log_tail(10)))
    puts = stored_inventories(accountdb.db)['pve1']['puts']

    fake_node.fake.set_fault(fault)
    fake_node.create_guest(104)  # .vmlist changes: the daemon tries to read and send a new inventory
    wait_for(lambda: _read_failed(node), 20, 'the daemon to notice that pvesh {0}s'.format(fault),
             seen=lambda: (node.status()['inventory'], node.log_tail(5)))
    # Events still flow while pvesh is broken.
    events = lifecycle([101], cycles=1)
    node.fire(events)
    wait_for(lambda: len(stored_events(accountdb.db)) == len(events), 20, 'events during the pvesh fault',
             seen=node.log_tail)
    # One more reconcile pass with the fault: nothing sent, old picture intact.
    calls = len(_inventory_calls(pvesh))
    wait_for(lambda: len(_inventory_calls(pvesh)) > calls, 15, 'another attempt to read the guests')
    wait_for(lambda: _read_failed(node), 10, 'that attempt to fail')
    assert _guest_ids(accountdb.db, 'pve1') == [101, 102, 103], 'inventory changed during the pvesh fault'
    assert stored_inventories(accountdb.db)['pve1']['puts'] == puts, 'an inventory was sent from a failed read'
    assert node.daemon_alive(), node.log_tail()

    fake_node.fake.set_fault(None)
    wait_for(lambda: _guest_ids(accountdb.db, 'pve1') == [101, 102, 103, 104], 20,
             'the inventory to catch up once pvesh works', seen=lambda: (_guest_ids(accountdb.db, 'pve1'),
                                                                        node.log_tail(10)))
    assert node.daemon_alive(), node.log_tail()
    assert node.stop_daemon() == 0


def _inventory_calls(pvesh):
    return [call for call in pvesh.calls() if call.endswith(('/qemu --output-format json',
                                                             '/lxc --output-format json'))]


def _read_failed(node):
    return node.status()['inventory'].get('read_ok') is False
