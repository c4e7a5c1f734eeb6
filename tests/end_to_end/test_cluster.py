"""Scenario 9: a three-node cluster on one machine, guests live-migrating between nodes.

Three nodes (own spool, state, config and name; one /etc/pve tree and one
fakepve shared like pmxcfs and the cluster API), one AccountDB. A live
migration fires pre-start/post-start on the TARGET with PVE_MIGRATED_FROM
and nothing on the source (see proxmox-facts.md); only the inventory
reconciliation can tell AccountDB the guest left the source. At the end
AccountDB must show every guest on the node it now runs on.
"""

from tests.end_to_end.harness import (assert_delivered_exactly_once, assert_outbox_clean, assert_per_guest_order,
                                      stored_events, stored_inventories, wait_for)

NODES = ('pve1', 'pve2', 'pve3')
PLACEMENT = {101: 'pve1', 102: 'pve1', 201: 'pve2', 202: 'pve2', 301: 'pve3'}
MIGRATIONS = [(101, 'pve2'), (201, 'pve3'), (301, 'pve1'), (101, 'pve3')]


def _picture(db):
    """Return {vmid: node} as AccountDB's inventories hold it (a guest twice is reported)."""
    where = {}
    for node, entry in stored_inventories(db).items():
        for guest in entry['inventory']['guests']:
            where.setdefault(guest['vmid'], []).append(node)
    return {vmid: nodes[0] if len(nodes) == 1 else tuple(nodes) for vmid, nodes in where.items()}


def test_three_node_cluster_with_live_migrations(accountdb, pve_node, fake_node):
    nodes = {name: pve_node(name) for name in NODES}
    for vmid, name in PLACEMENT.items():
        fake_node.create_guest(vmid, node=name, status='running')
    for node in nodes.values():
        node.start_daemon()
    fired = []
    for vmid, name in PLACEMENT.items():
        nodes[name].fire([(vmid, 'pre-start'), (vmid, 'post-start')])
        fired += [(name, vmid, 'pre-start', None), (name, vmid, 'post-start', None)]
    expected = dict(PLACEMENT)
    wait_for(lambda: _picture(accountdb.db) == expected, 30, 'the initial picture in AccountDB',
             seen=lambda: _picture(accountdb.db))

    for vmid, target in MIGRATIONS:
        source = expected[vmid]
        # Proxmox: the config moves to the target, the target runs the hooks with
        # PVE_MIGRATED_FROM; the source runs NO hook at all.
        fake_node.migrate_guest(vmid, target)
        nodes[target].fire([(vmid, 'pre-start', source), (vmid, 'post-start', source)])
        fired += [(target, vmid, 'pre-start', source), (target, vmid, 'post-start', source)]
        expected[vmid] = target

    wait_for(lambda: _picture(accountdb.db) == expected, 30, 'AccountDB to show each guest on its new node',
             seen=lambda: (_picture(accountdb.db), expected))
    wait_for(lambda: len(stored_events(accountdb.db)) == len(fired) and not any(
        n.pending() for n in nodes.values()), 30, 'every event to be delivered')

    ids = [event_id for node in nodes.values() for event_id in node.fired_ids()]
    events = assert_delivered_exactly_once(accountdb.db, ids)
    assert_per_guest_order(accountdb.db)
    got = sorted((e['node'], e['vmid'], e['phase'], e['body'].get('migrated_from')) for e in events)
    assert got == sorted(fired), 'events (node, vmid, phase, migrated_from) differ from what was fired'
    for node in nodes.values():
        assert_outbox_clean(node)
        assert node.daemon_alive(), node.log_tail()
        assert node.stop_daemon() == 0
