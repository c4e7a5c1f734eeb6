"""Unit tests for pve_hooks.daemon.inventory_sync: fakepve behind the pvesh shim, a pmxcfs tree, the reference AccountDB."""

import json
import logging
import sqlite3

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb import breaker
from pve_hooks.proxmox import pvesh
from pve_hooks.daemon import inventory_sync as reconcile
from pve_hooks import statedir as state
from pve_hooks.accountdb.connection import Connection
from pve_hooks.whitelist.cache import WhitelistCache
from tests.support.accountdb import dev_accountdb  # noqa: F401 (fixture)
from tests.support.clock import T0, Clock
from tests.support.fakepve import fake_node, fake_pve, fake_pve_pki, pve_root  # noqa: F401 (fixtures)


class Site:
    def __init__(self, server, node, tmp_path, *overrides, whitelist=None, attach=None):
        self.server = server
        self.node = node
        self.clock = Clock()
        self.settings = server.settings('proxmox.pvesh=' + node.fake.pvesh, 'proxmox.pve_root=' + node.pve_root,
                                        'proxmox.pvesh_timeout=10', 'reconcile.interval=60',
                                        'reconcile.reread_interval=600', 'reconcile.full_resync_interval=3600',
                                        'retry.base_delay=1', 'retry.max_delay=4', *overrides,
                                        directory=str(tmp_path / 'client'))
        self.client = accountdb.Client(self.settings)
        self.connection = Connection(self.settings, self.client, breaker.from_settings(self.settings, self.clock),
                                     clock=self.clock, rand=lambda: 0.5)
        self.pvesh_calls = []
        self.sync = self.new_sync(whitelist=whitelist, attach=attach)

    def new_sync(self, whitelist=None, attach=None):
        def counting(settings, path, **kwargs):
            self.pvesh_calls.append(path)
            return pvesh.run(settings, path, **kwargs)

        return reconcile.InventorySync(self.settings, self.connection, whitelist=whitelist, pvesh_run=counting,
                                       clock=self.clock, attach=attach)

    def stored_body(self):
        """The inventory AccountDB holds for pve1, read from its database."""
        db = sqlite3.connect(self.server.db, timeout=10)
        try:
            row = db.execute('SELECT body FROM inventories WHERE node = ?', ('pve1',)).fetchone()
        finally:
            db.close()
        return json.loads(row[0]) if row else None

    def guests(self):
        return [guest['vmid'] for guest in self.stored_body()['guests']]

    def puts(self):
        return self.server.stats()['endpoints'].get('PUT /api/v1/nodes/{node}/inventory', {}).get('count', 0)


@pytest.fixture
def site(dev_accountdb, fake_node, tmp_path):
    fake_node.create_guest(100, 'qemu', status='running')
    fake_node.create_guest(101, 'lxc')
    return Site(dev_accountdb, fake_node, tmp_path)


def test_first_pass_reads_and_sends_then_vmlist_lets_later_passes_skip_pvesh(site):
    assert site.sync.run() == reconcile.SENT
    assert site.guests() == [100, 101]
    assert site.pvesh_calls == ['/nodes/pve1/qemu', '/nodes/pve1/lxc']
    saved = state.read_json(reconcile.state_path(site.settings))
    assert saved['acked_hash'] and saved['read_ok'] and saved['last_sync_at'] == T0
    site.clock.now += 60
    assert site.sync.run() == reconcile.SKIPPED
    assert len(site.pvesh_calls) == 2 and site.puts() == 1


def test_new_guest_in_vmlist_triggers_a_read_and_a_put(site):
    site.sync.run()
    site.node.create_guest(102, 'qemu')
    site.clock.now += 60
    assert site.sync.run() == reconcile.SENT
    assert site.guests() == [100, 101, 102] and site.puts() == 2


def test_status_change_is_read_after_hook_events_and_sent_only_if_different(site):
    site.sync.run()
    site.node.set_status(101, 'running')            # no .vmlist change for a start
    site.clock.now += 60
    assert site.sync.run() == reconcile.SKIPPED
    site.sync.mark_dirty('hookscript events delivered')
    assert site.sync.run() == reconcile.SENT
    assert [g['status'] for g in site.stored_body()['guests']] == ['running', 'running']
    site.sync.mark_dirty('hookscript events delivered')
    assert site.sync.run() == reconcile.UNCHANGED   # read again, same content: nothing sent
    assert site.puts() == 2


def test_reread_interval_catches_unhooked_status_changes(site):
    site.sync.run()
    site.node.set_status(100, 'stopped')            # e.g. a post-stop PVE 8 never ran
    site.clock.now += 600
    assert site.sync.run() == reconcile.SENT
    assert [g['status'] for g in site.stored_body()['guests']] == ['stopped', 'stopped']


def test_full_resync_sends_an_unchanged_inventory(site):
    site.sync.run()
    site.clock.now += 3600
    assert site.sync.run() == reconcile.SENT
    assert site.puts() == 2


@pytest.mark.parametrize('fault', ['fail', 'garbage', 'empty', 'hang'])
def test_a_failed_pvesh_read_never_sends_and_never_wipes(site, fault, caplog):
    assert site.sync.run() == reconcile.SENT
    site.settings['proxmox.pvesh_timeout'] = 1.5   # a hang costs this much per read
    site.node.fake.set_fault(fault, paths=['/nodes/pve1/lxc'])
    site.node.destroy_guest(101)   # .vmlist changes: a read is attempted
    site.clock.now += 60
    assert site.sync.pvesh_failures == 0 and site.sync.pvesh_error == ''
    with caplog.at_level(logging.ERROR, logger='pve_hooks.daemon.inventory_sync'):
        assert site.sync.run() == reconcile.READ_FAILED
        assert site.sync.pvesh_failures == 1 and site.sync.pvesh_error
        site.clock.now += 60
        assert site.sync.run() == reconcile.READ_FAILED
    assert site.guests() == [100, 101] and site.puts() == 1   # AccountDB keeps the previous inventory
    errors_logged = [r.getMessage() for r in caplog.records
                     if r.name == 'pve_hooks.daemon.inventory_sync' and r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1 and 'inventory not sent' in errors_logged[0]   # once, not per attempt
    assert site.sync.pvesh_failures == 2
    site.node.fake.set_fault(None)
    site.settings['proxmox.pvesh_timeout'] = 10
    site.clock.now += 60
    assert site.sync.run() == reconcile.SENT
    assert site.guests() == [100] and site.sync.pvesh_failures == 0 and site.sync.pvesh_error == ''


def test_empty_listing_is_refused_while_vmlist_lists_guests_here(site, dev_accountdb):
    site.sync.run()
    # fakepve (the API) forgets every guest while pmxcfs still lists two on this node
    pve = site.node.fake.pve
    site.node.fake.call(pve.vms.clear)
    site.node.fake.call(pve.cts.clear)
    site.sync.mark_dirty('test')
    site.clock.now += 60
    assert site.sync.run() == reconcile.READ_FAILED
    assert site.guests() == [100, 101]


def test_whitelist_limits_the_reported_guests(dev_accountdb, fake_node, tmp_path):
    fake_node.create_guest(100, 'qemu')
    fake_node.create_guest(101, 'qemu')
    settings = dev_accountdb.settings(directory=str(tmp_path / 'client'))
    client = accountdb.Client(settings)
    cache = WhitelistCache.from_settings(settings)
    client.update_whitelist(add=[101])
    cache.refresh(client)
    site = Site(dev_accountdb, fake_node, tmp_path, whitelist=cache)
    assert site.sync.run() == reconcile.SENT
    assert site.guests() == [101]
    client.update_whitelist(remove=[101])   # empty again: every guest
    site.clock.now += 60
    cache.refresh(client)
    assert site.sync.run() == reconcile.SENT   # the whitelist's ETag changed: read and resend
    assert site.guests() == [100, 101]


def test_accountdb_down_keeps_the_inventory_and_retries_without_rereading(site):
    site.server.set_faults([{'mode': 'refuse'}])
    assert site.sync.run() == reconcile.SEND_FAILED
    assert site.sync.pending is not None and len(site.pvesh_calls) == 2
    assert not site.sync.due(site.clock.now)             # backoff pending
    site.clock.now = site.connection.next_try_at
    assert site.sync.due(site.clock.now)                 # retried before the interval
    site.server.set_faults([])
    assert site.sync.run() == reconcile.SENT
    assert len(site.pvesh_calls) == 2 and site.guests() == [100, 101]


def test_rejected_inventory_is_logged_and_tried_again_next_interval(site, caplog):
    site.server.set_faults([{'mode': 'status', 'status': 422, 'path': '/api/v1/nodes/pve1/inventory', 'count': 1}])
    with caplog.at_level(logging.ERROR, logger='pve_hooks.daemon.inventory_sync'):
        assert site.sync.run() == reconcile.REJECTED
    assert 'rejected the inventory' in caplog.text
    site.clock.now += 60
    assert site.sync.run() == reconcile.SENT


def test_auto_attach_gets_only_guests_that_appear_after_the_baseline(dev_accountdb, fake_node, tmp_path):
    fake_node.create_guest(100, 'qemu')
    attached = []
    site = Site(dev_accountdb, fake_node, tmp_path, 'reconcile.auto_attach=true',
                attach=lambda settings, guests, tick=None: attached.append([g['vmid'] for g in guests]))
    site.sync.run()
    assert attached == []   # the first read is the baseline
    fake_node.create_guest(101, 'lxc')
    site.clock.now += 60
    site.sync.run()
    assert attached == [[101]]


def test_auto_attach_passes_the_watchdog_tick(dev_accountdb, fake_node, tmp_path):
    ticks = []
    seen = []

    def attach(settings, guests, tick=None):
        seen.append([g['vmid'] for g in guests])
        tick()

    site = Site(dev_accountdb, fake_node, tmp_path, 'reconcile.auto_attach=true', attach=attach)
    site.sync.tick = lambda: ticks.append(1)
    site.sync.run()
    fake_node.create_guest(102, 'qemu')
    site.clock.now += 60
    site.sync.run()
    assert seen == [[102]] and ticks == [1]


def test_state_survives_a_restart(site):
    site.sync.run()
    restarted = site.new_sync()
    restarted.dirty = False      # pretend the start-up read is done, to check the persisted hash
    site.clock.now += 60
    assert restarted.run() == reconcile.SKIPPED
    restarted.mark_dirty('test')
    assert restarted.run() == reconcile.UNCHANGED and site.puts() == 1


def test_vmlist_signature_and_cluster_name(tmp_path):
    root = tmp_path / 'pve'
    root.mkdir()
    assert reconcile.vmlist_signature(str(root), 'pve1') is None
    (root / '.vmlist').write_text(json.dumps({'version': 3, 'ids': {
        '100': {'node': 'pve1', 'type': 'qemu', 'version': 1},
        '200': {'node': 'pve2', 'type': 'lxc', 'version': 2}}}))
    first = reconcile.vmlist_signature(str(root), 'pve1')
    assert first and reconcile.vmlist_count(str(root), 'pve1') == 1
    (root / '.vmlist').write_text('{broken')
    assert reconcile.vmlist_signature(str(root), 'pve1') is None
    assert reconcile.cluster_name(str(root)) is None
    (root / 'corosync.conf').write_text('totem {\n  cluster_name: lab\n  version: 2\n}\n')
    assert reconcile.cluster_name(str(root)) == 'lab'


def test_auto_attach_through_the_real_attach_module_never_breaks_reconciliation(dev_accountdb, fake_node, tmp_path,
                                                                                  caplog):
    site = Site(dev_accountdb, fake_node, tmp_path, 'reconcile.auto_attach=true', 'proxmox.qm=/bin/false',
                'proxmox.pct=/bin/false', 'proxmox.storage_cfg=' + str(tmp_path / 'no-storage.cfg'))
    assert site.sync.run() == reconcile.SENT   # baseline
    fake_node.create_guest(101, 'qemu')
    site.clock.now += 60
    with caplog.at_level(logging.INFO, logger='pve_hooks.daemon.inventory_sync'):
        assert site.sync.run() == reconcile.SENT
    lines = [r.getMessage() for r in caplog.records if r.name == 'pve_hooks.daemon.inventory_sync' and 'auto-attach' in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith('auto-attach of new guests 101')
    assert site.guests() == [101]
