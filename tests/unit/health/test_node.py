"""health/node.py: the checks of the node from canned pvesh/systemctl answers, and the Probe they share."""

import subprocess

import pytest

from pve_hooks.health import node
from pve_hooks.health.result import CRITICAL, OK, UNKNOWN, WARNING
from tests.support.fakepve import PveTree
from tests.support.health import CLUSTER, STATUS, Runner, check


# -- pvesh_api ------------------------------------------------------------------------------

def test_pvesh_api_ok_with_latency_and_health_timeout(settings):
    runner = Runner()
    result = check(settings, node.check_pvesh_api, runner)
    assert result.status == OK and result.values['latency_seconds'] == 1
    assert result.values['pveversion'] == 'pve-manager/8.2.4'
    assert runner.calls == [(['pvesh', 'get', '/nodes/pve1/status', '--output-format', 'json'],
                             settings['health.pvesh_timeout'])]


@pytest.mark.parametrize('answer, words', [
    (subprocess.TimeoutExpired(['pvesh'], 10), 'no answer within'),
    (subprocess.CompletedProcess([], 255, b'', b'595 No route to host\n'), 'No route to host'),
    (FileNotFoundError(2, 'x'), 'not found'),
    ([1, 2], 'expected an object'),
])
def test_pvesh_api_failure_is_critical_and_resources_unknown(settings, answer, words):
    runner = Runner(status=answer)
    probe = node.Probe(settings, runner=runner)
    results = [node.check_pvesh_api(probe), node.check_node_resources(probe)]
    assert [r.status for r in results] == [CRITICAL, UNKNOWN]
    assert words in results[0].reason and words in results[1].reason
    assert len(runner.calls) == 1  # the status is read once per probe (one run)


# -- node_resources ---------------------------------------------------------------------------

@pytest.mark.parametrize('changes, status, word', [
    ({}, OK, 'root fs 10%, memory 50%, load/cpu 0.12'),
    ({'rootfs': {'total': 100, 'used': 85}}, WARNING, 'root fs 85% WARNING'),
    ({'rootfs': {'total': 100, 'used': 96}}, CRITICAL, 'root fs 96% CRITICAL'),
    ({'memory': {'total': 100, 'used': 91}}, WARNING, 'memory 91% WARNING'),
    ({'memory': {'total': 100, 'used': 99}}, CRITICAL, 'memory 99% CRITICAL'),
    ({'loadavg': ['8.5', '1', '1']}, WARNING, 'load/cpu 2.12 WARNING'),
    ({'loadavg': ['17', '1', '1']}, CRITICAL, 'load/cpu 4.25 CRITICAL'),
    ({'loadavg': ['fake']}, UNKNOWN, 'loadavg missing or not a number'),
    ({'cpuinfo': {'cpus': 0}}, UNKNOWN, 'cpuinfo.cpus'),
    ({'memory': {'total': 0, 'used': 0}}, UNKNOWN, 'memory used/total'),
    ({'rootfs': None}, UNKNOWN, 'no rootfs'),
])
def test_node_resources_levels(settings, changes, status, word):
    result = check(settings, node.check_node_resources, Runner(status=dict(STATUS, **changes)))
    assert result.status == status
    assert word in result.reason


def test_node_resources_thresholds_come_from_settings(settings):
    result = check(settings, node.check_node_resources,
                   **{'health.memory_warning': 0.4, 'health.memory_critical': 0.45})
    assert result.status == CRITICAL
    assert result.perfdata[1] == 'memory=50%;40;45;0;100'
    assert result.values['memory_fraction'] == 0.5 and result.values['cpus'] == 4


# -- cluster ------------------------------------------------------------------------------------

def member(name, online):
    return {'type': 'node', 'name': name, 'online': online}


@pytest.mark.parametrize('answer, status, word', [
    (CLUSTER, OK, 'cluster clu: 2 of 2 nodes online, quorate'),
    ([CLUSTER[0], member('pve1', 1), member('pve2', 0)], WARNING, 'offline: pve2'),
    ([dict(CLUSTER[0], quorate=0), member('pve1', 1), member('pve2', 0)], CRITICAL, 'NOT quorate'),
    ([CLUSTER[0], member('pve1', 0), member('pve2', 1)], CRITICAL, 'this node pve1 is offline'),
    ([CLUSTER[0], member('pve2', 1)], CRITICAL, 'pve1 is not listed'),
    ([dict(member('pve1', 1), local=1)], OK, 'standalone'),
    ([dict(member('pve1', 0), local=1), member('x', 1)], UNKNOWN, 'neither'),
    (subprocess.CompletedProcess([], 255, b'', b'ipcc_send_rec failed'), CRITICAL, 'ipcc_send_rec'),
    ({'not': 'a list'}, CRITICAL, 'expected a list'),
])
def test_cluster(settings, answer, status, word):
    result = check(settings, node.check_cluster, Runner(cluster=answer))
    assert result.status == status
    assert word in result.reason


# -- services -------------------------------------------------------------------------------------

def test_services_all_active(settings):
    runner = Runner()
    result = check(settings, node.check_services, runner)
    assert result.status == OK and result.values['pveproxy'] == 'active'
    assert runner.calls[0] == (['systemctl', 'is-active', 'pveproxy', 'pvedaemon', 'pve-cluster', 'pvestatd'],
                               settings['health.systemctl_timeout'])


def test_services_inactive_is_critical(settings):
    result = check(settings, node.check_services, Runner(services={'pvestatd': 'failed', 'pveproxy': 'inactive'}))
    assert result.status == CRITICAL
    assert result.reason == 'not active: pveproxy inactive, pvestatd failed'


@pytest.mark.parametrize('answer, word', [
    (FileNotFoundError(2, 'x'), 'program not found'),
    (PermissionError(13, 'Permission denied'), 'cannot run (Permission denied)'),
    (subprocess.TimeoutExpired(['systemctl'], 5), 'no answer within 5s'),
    (subprocess.CompletedProcess([], 1, b'', b'Failed to connect to bus: Host is down\n'), 'Failed to connect'),
    (subprocess.CompletedProcess([], 0, b'active\n', b''), 'unexpected output'),
])
def test_services_cannot_tell_is_unknown(settings, answer, word):
    result = check(settings, node.check_services, Runner(systemctl=answer))
    assert result.status == UNKNOWN and word in result.reason


def test_no_services_configured_is_ok(settings):
    assert check(settings, node.check_services, **{'health.services': []}).status == OK


# -- hookscripts ------------------------------------------------------------------------------------

def test_hookscripts_counted_from_configs(settings, tmp_path):
    tree = PveTree(tmp_path / 'pve')
    tree.write_config('pve1', 100, 'qemu', {'name': 'a'}, hookscript='local:snippets/accountdb-hook')
    tree.write_config('pve1', 101, 'qemu', {'name': 'b'}, hookscript='local:snippets/gpu-hook')
    tree.write_config('pve1', 102, 'qemu', {'name': 'c'}, snapshot={'hookscript': 'local:snippets/accountdb-hook'})
    tree.write_config('pve1', 200, 'lxc', {'hostname': 'd'}, hookscript='shared:snippets/accountdb-hook')
    tree.write_config('pve2', 300, 'qemu', {'name': 'e'}, hookscript='local:snippets/accountdb-hook')
    result = check(settings, node.check_hookscripts)
    assert result.status == OK
    assert result.values == {'guests': 4, 'attached': 2, 'other_hookscript': 1, 'without': 1, 'unreadable': 0}
    assert result.reason == 'hookscript attached to 2 of 4 guests (1 with another hookscript, 1 without)'
