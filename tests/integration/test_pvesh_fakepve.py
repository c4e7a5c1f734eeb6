"""pvesh.run and inventory.read_guests through the test pvesh shim against a real fakepve."""

import os
import subprocess
import time

import pytest

from pve_hooks.proxmox import inventory
from pve_hooks.proxmox import pvesh
from tests.support.fakepve import fake_node, fake_pve, fake_pve_pki, pve_root  # noqa: F401


@pytest.fixture
def node(fake_node):
    fake_node.create_guest(100, name='web', status='running', tags='prod;web')
    fake_node.create_guest(101, name='tmpl', template=True)
    fake_node.create_guest(200, 'lxc', name='ct1', status='running')
    return fake_node


def test_guests_listed_from_fakepve(node):
    guests = inventory.read_guests(node.settings(), 'pve1')
    assert [(g['vmid'], g['type'], g['name'], g['status'], g['template']) for g in guests] == [
        (100, 'qemu', 'web', 'running', False), (101, 'qemu', 'tmpl', 'stopped', True),
        (200, 'lxc', 'ct1', 'running', False)]
    assert guests[0]['tags'] == ['prod', 'web']
    assert guests[2]['maxmem'] == 512 * 1024 * 1024


def test_tree_and_vmlist_follow_create_destroy_migrate(node):
    version, ids = inventory.read_vmlist(node.pve_root)
    assert sorted(ids) == [100, 101, 200]
    node.destroy_guest(101)
    node.migrate_guest(200, 'pve2')
    settings = node.settings()
    assert [g['vmid'] for g in inventory.read_guests(settings, 'pve1')] == [100]
    assert [g['vmid'] for g in inventory.read_guests(settings, 'pve2')] == [200]
    new_version, ids = inventory.read_vmlist(node.pve_root)
    assert new_version > version and ids == {100: {'node': 'pve1', 'type': 'qemu', 'version': new_version},
                                             200: {'node': 'pve2', 'type': 'lxc', 'version': new_version}}
    assert [c[:2] for c in inventory.list_guest_configs(node.pve_root, 'pve1')] == [(100, 'qemu')]
    assert [c[:2] for c in inventory.list_guest_configs(node.pve_root, 'pve2')] == [(200, 'lxc')]


def test_empty_node_reads_as_empty(fake_node):
    assert inventory.read_guests(fake_node.settings(), 'pve1') == []


def test_node_offline_raises(node):
    node.fake.set_node_offline()
    with pytest.raises(pvesh.PveshError, match='595 No route to host'):
        inventory.read_guests(node.settings(), 'pve1')
    node.fake.set_node_offline(offline=False)
    assert len(inventory.read_guests(node.settings(), 'pve1')) == 3


def test_failure_mid_way_raises_not_partial(node):
    node.fake.fail('GET', '/nodes/pve1/lxc', 500, 'cluster not ready - no quorum?', times=1)
    with pytest.raises(pvesh.PveshError, match='exit 255.*no quorum'):
        inventory.read_guests(node.settings(), 'pve1')
    assert len(inventory.read_guests(node.settings(), 'pve1')) == 3


@pytest.mark.parametrize('fault, words', [
    ('garbage', 'invalid JSON'), ('empty', 'printed nothing'), ('fail', 'exit 2'),
])
def test_shim_faults_raise_never_empty(node, fault, words):
    node.fake.set_fault(fault, paths=['/nodes/pve1/lxc'])
    with pytest.raises(pvesh.PveshError, match=words):
        inventory.read_guests(node.settings(), 'pve1')


@pytest.mark.parametrize('fault', ['hang', 'hang-child'])
def test_hanging_pvesh_is_bounded_by_the_timeout(node, fault):
    node.fake.set_fault(fault)
    with pytest.raises(pvesh.PveshError, match='no answer within 0.5s, killed'):
        inventory.read_guests(node.settings('proxmox.pvesh_timeout=0.5'), 'pve1')


def test_slow_fakepve_beyond_the_timeout_is_an_error(node):
    node.fake.slow(1.5)
    with pytest.raises(pvesh.PveshError, match='no answer within'):
        pvesh.run(node.settings(), '/nodes/pve1/qemu', timeout=0.3)


def test_missing_program_is_an_error(node):
    settings = node.settings('proxmox.pvesh=/nonexistent/pvesh')
    with pytest.raises(pvesh.PveshError, match="program '/nonexistent/pvesh' not found"):
        inventory.read_guests(settings, 'pve1')


def test_query_arguments_are_forwarded(node):
    data = pvesh.run(node.settings(), '/cluster/resources', args=['--type', 'vm'], expect=list)
    assert sorted(item['vmid'] for item in data) == [100, 101, 200]


def _gone(pid):
    try:
        with open('/proc/{0}/stat'.format(pid)) as stream:
            return stream.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except FileNotFoundError:
        return True


def test_run_bounded_kills_children_that_hold_the_pipe(tmp_path):
    pidfile = tmp_path / 'child.pid'
    script = 'sleep 60 & echo $! > {0}; exit 0'.format(pidfile)
    with pytest.raises(subprocess.TimeoutExpired):
        pvesh.run_bounded(['/bin/sh', '-c', script], timeout=0.3)
    child = int(pidfile.read_text())
    for _ in range(100):  # the kill is asynchronous: allow up to 5 s for the child to die
        if _gone(child):
            break
        time.sleep(0.05)
    assert _gone(child)


def test_run_bounded_returns_output(tmp_path):
    result = pvesh.run_bounded(['/bin/sh', '-c', 'echo out; echo err >&2; exit 3'], timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (3, b'out\n', b'err\n')
    with pytest.raises(FileNotFoundError):
        pvesh.run_bounded([os.path.join(str(tmp_path), 'nope')], timeout=10)
