"""Health checks against fakepve behind the pvesh shim, fake systemctl scripts, and the reference AccountDB."""

import json
import os
import time

import pytest

from pve_hooks.health import runner as health
from tests.support.accountdb import dev_accountdb  # noqa: F401
from tests.support.fakepve import fake_node, fake_pve, fake_pve_pki, pve_root  # noqa: F401
from tests.support.systemctl import make_systemctl


@pytest.fixture
def node(fake_node, tmp_path):
    """pve1 with three guests (two with our hookscript), services active, a fresh daemon heartbeat."""
    fake_node.create_guest(100, name='web', status='running', hookscript='local:snippets/accountdb-hook')
    fake_node.create_guest(101, name='gpu', hookscript='local:snippets/gpu-hook')
    fake_node.create_guest(200, 'lxc', status='running', hookscript='local:snippets/accountdb-hook')
    state = tmp_path / 'state'
    state.mkdir()
    (state / 'daemon.json').write_text(json.dumps({'heartbeat_at': time.time()}))
    fake_node.extra = ['paths.state_dir=' + str(state), 'paths.spool_dir=' + str(tmp_path / 'spool'),
                       'health.systemctl=' + make_systemctl(tmp_path)]
    return fake_node


def run(node, *pairs, names=None):
    results = health.run_checks(node.settings(*(node.extra + list(pairs))), names, offline=True)
    return {result.name: result for result in results}


def test_healthy_node_is_ok(node):
    results = run(node)
    assert {name: r.status for name, r in results.items() if r.status != 'OK'} == {}
    assert results['cluster'].reason == 'cluster fakecluster: 1 of 1 nodes online, quorate'
    assert results['node_resources'].values['memory_fraction'] == 0.25
    assert results['hookscripts'].values['attached'] == 2
    assert 'accountdb' not in results


def test_node_offline(node):
    node.fake.set_node_offline()
    results = run(node, names=['pvesh_api', 'node_resources', 'cluster'])
    assert results['pvesh_api'].status == 'CRITICAL' and '595 No route to host' in results['pvesh_api'].reason
    assert results['node_resources'].status == 'UNKNOWN'
    assert results['cluster'].status == 'CRITICAL' and 'this node pve1 is offline' in results['cluster'].reason


def test_other_node_offline_is_a_warning(node):
    node.fake.add_node('pve2')
    node.fake.set_node_offline('pve2')
    result = run(node, names=['cluster'])['cluster']
    assert result.status == 'WARNING' and result.reason.endswith('offline: pve2')
    assert result.values['nodes_online'] == 1 and result.values['nodes'] == 2


def test_quorum_lost_and_regained(node):
    node.fake.lose_quorum()
    result = run(node, names=['cluster'])['cluster']
    assert result.status == 'CRITICAL' and 'NOT quorate' in result.reason
    node.fake.regain_quorum()
    assert run(node, names=['cluster'])['cluster'].status == 'OK'


def test_failing_status_call(node):
    node.fake.fail('GET', '/nodes/pve1/status', 500, 'pveproxy internal error')
    result = run(node, names=['pvesh_api'])['pvesh_api']
    assert result.status == 'CRITICAL' and '500 pveproxy internal error' in result.reason


def test_slow_api_is_bounded_by_health_timeout(node):
    node.fake.slow(1.5)
    result = run(node, 'health.pvesh_timeout=0.3', names=['pvesh_api'])['pvesh_api']
    assert result.status == 'CRITICAL' and 'no answer within 0.3s' in result.reason


@pytest.mark.parametrize('fault', ['hang', 'hang-child'])
def test_hanging_pvesh_is_bounded(node, fault):
    node.fake.set_fault(fault)
    results = run(node, 'health.pvesh_timeout=0.3', names=['pvesh_api', 'cluster'])
    assert [r.status for r in results.values()] == ['CRITICAL', 'UNKNOWN']
    assert all('no answer within 0.3s, killed' in r.reason for r in results.values())
    assert results['cluster'].reason.startswith('pvesh get /cluster/status: not tried, pvesh get /nodes/pve1/status')


def test_garbage_from_pvesh(node):
    node.fake.set_fault('garbage')
    assert 'invalid JSON' in run(node, names=['pvesh_api'])['pvesh_api'].reason


@pytest.mark.parametrize('changes, status', [
    ({'memory': {'total': 100, 'used': 92}}, 'WARNING'),
    ({'rootfs': {'total': 100, 'used': 99}}, 'CRITICAL'),
    ({'loadavg': ['9.00', '1', '1']}, 'WARNING'),
])
def test_node_resources_from_the_status_answer(node, changes, status):
    node.fake.set_node_status(**changes)
    assert run(node, names=['node_resources'])['node_resources'].status == status


def test_node_status_overlay_applies_to_every_node_and_per_node(node):
    node.fake.add_node('pve2')
    node.fake.set_node_status('pve2', memory={'total': 100, 'used': 99})
    pve1 = run(node, names=['node_resources'])['node_resources']
    pve2 = run(node, 'node=pve2', names=['node_resources'])['node_resources']
    assert (pve1.status, pve2.status) == ('OK', 'CRITICAL')


def test_fakepve_synthesised_status_is_unknown_not_a_crash(node):
    node.fake.set_overlay('/nodes/*/status', None)  # fakepve's own answer: loadavg ["fake"], zeros
    result = run(node, names=['node_resources'])['node_resources']
    assert result.status == 'UNKNOWN' and 'in the node status' in result.reason


@pytest.mark.parametrize('make, status, words', [
    (lambda d: make_systemctl(d), 'OK', 'all 4 services active'),
    (lambda d: make_systemctl(d, {'pvestatd': 'inactive', 'pveproxy': 'failed'}), 'CRITICAL',
     'not active: pveproxy failed, pvestatd inactive'),
    (lambda d: os.path.join(str(d), 'no-such-systemctl'), 'UNKNOWN', 'program not found'),
    (lambda d: make_systemctl(d, hang=True), 'UNKNOWN', 'no answer within 0.3s, killed'),
])
def test_services_with_fake_systemctl(node, tmp_path, make, status, words):
    result = run(node, 'health.systemctl=' + make(tmp_path), 'health.systemctl_timeout=0.3',
                 names=['services'])['services']
    assert result.status == status and words in result.reason


def test_hookscripts_follow_the_tree(node):
    node.destroy_guest(100)
    node.create_guest(102, name='new')
    result = run(node, names=['hookscripts'])['hookscripts']
    assert result.values == {'guests': 3, 'attached': 1, 'other_hookscript': 1, 'without': 1, 'unreadable': 0}


def test_accountdb_reachable_then_failing(node, dev_accountdb):
    settings = dev_accountdb.settings(*node.overrides(*node.extra))
    [ok] = health.run_checks(settings, ['accountdb'])
    assert ok.status == 'OK' and ok.values['latency_seconds'] >= 0
    dev_accountdb.set_faults([{'mode': 'status', 'status': 503}])
    [down] = health.run_checks(settings, ['accountdb'])
    assert down.status == 'CRITICAL' and '503' in down.reason
    assert health.run_checks(settings, ['accountdb'], offline=True) == []
