"""The gaps Proxmox leaves, closed by the inventory reconciliation (see proxmox-facts.md).

No hook fires on create or destroy; PVE 8 can skip post-stop when a guest
powers itself off; a container migrated in restart mode gets pre-stop and
post-stop on the source, pre-start and post-start on the target. After
reconciliation AccountDB's picture must be right anyway: which guests the node
has, and their status.
"""

from tests.end_to_end.harness import (assert_all_delivered, assert_per_guest_order, stored_events, stored_inventories,
                                      wait_for)


def _guests(db, node):
    entry = stored_inventories(db).get(node)
    return {} if entry is None else {g['vmid']: g['status'] for g in entry['inventory']['guests']}


def test_create_destroy_and_a_missed_post_stop_are_corrected(accountdb, pve_node, fake_node):
    fake_node.create_guest(101, status='running')
    fake_node.create_guest(102, status='running')
    node = pve_node('pve1', settings={'reconcile.reread_interval': 2})
    node.start_daemon()
    fired = [(101, 'pre-start'), (101, 'post-start'), (102, 'pre-start'), (102, 'post-start')]
    node.fire(fired)
    wait_for(lambda: _guests(accountdb.db, 'pve1') == {101: 'running', 102: 'running'}, 20, 'the first picture',
             seen=lambda: _guests(accountdb.db, 'pve1'))

    fake_node.create_guest(103, 'lxc')          # pct create: no hook
    fake_node.destroy_guest(102)                # qm destroy: no hook
    wait_for(lambda: _guests(accountdb.db, 'pve1') == {101: 'running', 103: 'stopped'}, 30,
             'the reconciliation (.vmlist changed) to correct AccountDB', seen=lambda: _guests(accountdb.db, 'pve1'))
    # 101 powers itself off and PVE 8 skips its post-stop: no hook, .vmlist unchanged; only the
    # periodic re-read (reconcile.reread_interval, 2 s here) can notice.
    fake_node.set_status(101, 'stopped')
    wait_for(lambda: _guests(accountdb.db, 'pve1') == {101: 'stopped', 103: 'stopped'}, 30,
             'the periodic re-read to correct the status', seen=lambda: _guests(accountdb.db, 'pve1'))
    assert_all_delivered(node, accountdb.db, fired)
    assert node.stop_daemon() == 0


def test_container_restart_mode_migration(accountdb, pve_node, fake_node):
    fake_node.create_guest(201, 'lxc', status='running')
    source, target = pve_node('pve1'), pve_node('pve2')
    for node in (source, target):
        node.start_daemon()
    wait_for(lambda: 201 in _guests(accountdb.db, 'pve1'), 20, 'the first picture')
    # pct migrate 201 pve2 --restart: stopped on the source, moved, started on the target.
    source.fire([(201, 'pre-stop'), (201, 'post-stop')])
    fake_node.migrate_guest(201, 'pve2')
    target.fire([(201, 'pre-start', 'pve1'), (201, 'post-start', 'pve1')])
    wait_for(lambda: 201 not in _guests(accountdb.db, 'pve1') and 201 in _guests(accountdb.db, 'pve2'), 30,
             'AccountDB to show 201 on pve2 only',
             seen=lambda: (_guests(accountdb.db, 'pve1'), _guests(accountdb.db, 'pve2')))
    wait_for(lambda: source.pending() == 0 and target.pending() == 0, 20, 'delivery')
    # Two nodes deliver independently: AccountDB may receive pve2's events before pve1's. Order is
    # kept per node (seq); across nodes the events carry occurred_at, by which AccountDB orders them.
    events = stored_events(accountdb.db)
    assert_per_guest_order(accountdb.db)
    history = [(e['node'], e['phase'], e['body'].get('migrated_from'))
               for e in sorted(events, key=lambda e: e['body']['occurred_at'])]
    assert history == [('pve1', 'pre-stop', None), ('pve1', 'post-stop', None),
                       ('pve2', 'pre-start', 'pve1'), ('pve2', 'post-start', 'pve1')], history
    for node in (source, target):
        assert node.stop_daemon() == 0
