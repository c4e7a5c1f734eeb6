"""health: each check's levels from canned pvesh/systemctl answers and real state files.

The checks live in health/node.py (the node) and health/own.py (pve-hooks
itself, from the status snapshot); they are run here the way everyone runs
them, through health/runner.py, and judged with health/result.py.
"""

import json
import os
import subprocess
import types

import pytest

from pve_hooks.accountdb import errors
from pve_hooks.config import loader as config
from pve_hooks.health import result, runner
from pve_hooks.observe import status

# One namespace for the names the tests use from result.py and runner.py.
health = types.SimpleNamespace(**{name: getattr(module, name) for module in (result, runner)
                                  for name in dir(module) if not name.startswith('_')})

NOW = 1_800_000_000.0
GiB = 1024 ** 3
STATUS = {'loadavg': ['0.50', '0.4', '0.3'], 'cpuinfo': {'cpus': 4}, 'pveversion': 'pve-manager/8.2.4',
          'memory': {'total': 100 * GiB, 'used': 50 * GiB}, 'rootfs': {'total': 100 * GiB, 'used': 10 * GiB}}
CLUSTER = [{'type': 'cluster', 'name': 'clu', 'nodes': 2, 'quorate': 1},
           {'type': 'node', 'name': 'pve1', 'online': 1, 'local': 1},
           {'type': 'node', 'name': 'pve2', 'online': 1, 'local': 0}]


class Runner:
    """Canned answers by program: pvesh paths -> data (or a CompletedProcess / exception), systemctl states."""

    def __init__(self, status=STATUS, cluster=CLUSTER, services=None, systemctl=None):
        self.answers = {'/nodes/pve1/status': status, '/cluster/status': cluster}
        self.services = services or {}
        self.systemctl = systemctl
        self.calls = []

    def __call__(self, argv, timeout):
        self.calls.append((argv, timeout))
        if argv[0] == 'pvesh':
            answer = self.answers[argv[2]]
        else:
            if self.systemctl is not None:
                answer = self.systemctl
            else:
                states = [self.services.get(unit, 'active') for unit in argv[2:]]
                answer = subprocess.CompletedProcess(argv, 0, ('\n'.join(states) + '\n').encode(), b'')
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, subprocess.CompletedProcess):
            return answer
        return subprocess.CompletedProcess(argv, 0, json.dumps(answer).encode(), b'')


def snapshot_with_outbox(settings, stats):
    """A status snapshot whose outbox figures are ``stats`` (over an empty outbox's)."""
    outbox = dict({'depth': 0, 'oldest_age': None, 'dead': 0, 'quarantine': 0, 'dropped': 0}, **stats)
    closed = {'state': 'closed', 'failures': 0, 'opened_at': None, 'changed_at': None}
    return status.build(settings, NOW, {}, outbox, closed)


@pytest.fixture
def settings(tmp_path):
    return config.load(None, env={}, overrides=[
        'node=pve1', 'proxmox.pvesh=pvesh', 'paths.state_dir=' + str(tmp_path / 'state'),
        'paths.spool_dir=' + str(tmp_path / 'spool'), 'proxmox.pve_root=' + str(tmp_path / 'pve'),
        'accountdb.url=http://127.0.0.1:9'])


def check(settings, name, runner=None, outbox=None, client=None, **overrides):
    if overrides:
        settings = config.Settings(dict(settings, **overrides), settings.sources)
    snapshot = snapshot_with_outbox(settings, outbox) if outbox is not None else None
    [found] = health.run_checks(settings, [name], clock=lambda: NOW, runner=runner or Runner(),
                                monotonic=iter(range(0, 1000)).__next__, client_factory=client, snapshot=snapshot)
    assert found.name == name and '\n' not in found.reason
    return found


def write_state(settings, name, data):
    os.makedirs(settings['paths.state_dir'], exist_ok=True)
    with open(os.path.join(settings['paths.state_dir'], name), 'w') as out:
        out.write(data if isinstance(data, str) else json.dumps(data))


# -- pvesh_api ------------------------------------------------------------------------------

def test_pvesh_api_ok_with_latency_and_health_timeout(settings):
    runner = Runner()
    result = check(settings, 'pvesh_api', runner)
    assert result.status == health.OK and result.values['latency_seconds'] == 1
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
    results = health.run_checks(settings, ['pvesh_api', 'node_resources'], runner=runner)
    assert [r.status for r in results] == [health.CRITICAL, health.UNKNOWN]
    assert words in results[0].reason and words in results[1].reason
    assert len(runner.calls) == 1  # the status is read once per run


def test_after_a_timeout_later_pvesh_calls_of_the_run_are_not_tried(settings):
    runner = Runner(status=subprocess.TimeoutExpired(['pvesh'], 10))
    results = health.run_checks(settings, ['pvesh_api', 'node_resources', 'cluster'], runner=runner)
    assert [r.status for r in results] == [health.CRITICAL, health.UNKNOWN, health.UNKNOWN]
    assert 'not tried' in results[2].reason and len(runner.calls) == 1
    again = health.run_checks(settings, ['cluster'], runner=runner)  # a new run tries again
    assert again[0].status == health.OK and len(runner.calls) == 2


# -- node_resources ---------------------------------------------------------------------------

@pytest.mark.parametrize('changes, status, word', [
    ({}, health.OK, 'root fs 10%, memory 50%, load/cpu 0.12'),
    ({'rootfs': {'total': 100, 'used': 85}}, health.WARNING, 'root fs 85% WARNING'),
    ({'rootfs': {'total': 100, 'used': 96}}, health.CRITICAL, 'root fs 96% CRITICAL'),
    ({'memory': {'total': 100, 'used': 91}}, health.WARNING, 'memory 91% WARNING'),
    ({'memory': {'total': 100, 'used': 99}}, health.CRITICAL, 'memory 99% CRITICAL'),
    ({'loadavg': ['8.5', '1', '1']}, health.WARNING, 'load/cpu 2.12 WARNING'),
    ({'loadavg': ['17', '1', '1']}, health.CRITICAL, 'load/cpu 4.25 CRITICAL'),
    ({'loadavg': ['fake']}, health.UNKNOWN, 'loadavg missing or not a number'),
    ({'cpuinfo': {'cpus': 0}}, health.UNKNOWN, 'cpuinfo.cpus'),
    ({'memory': {'total': 0, 'used': 0}}, health.UNKNOWN, 'memory used/total'),
    ({'rootfs': None}, health.UNKNOWN, 'no rootfs'),
])
def test_node_resources_levels(settings, changes, status, word):
    result = check(settings, 'node_resources', Runner(status=dict(STATUS, **changes)))
    assert result.status == status
    assert word in result.reason


def test_node_resources_thresholds_come_from_settings(settings):
    result = check(settings, 'node_resources', **{'health.memory_warning': 0.4, 'health.memory_critical': 0.45})
    assert result.status == health.CRITICAL
    assert result.perfdata[1] == 'memory=50%;40;45;0;100'
    assert result.values['memory_fraction'] == 0.5 and result.values['cpus'] == 4


# -- cluster ------------------------------------------------------------------------------------

def node(name, online):
    return {'type': 'node', 'name': name, 'online': online}


@pytest.mark.parametrize('answer, status, word', [
    (CLUSTER, health.OK, 'cluster clu: 2 of 2 nodes online, quorate'),
    ([CLUSTER[0], node('pve1', 1), node('pve2', 0)], health.WARNING, 'offline: pve2'),
    ([dict(CLUSTER[0], quorate=0), node('pve1', 1), node('pve2', 0)], health.CRITICAL, 'NOT quorate'),
    ([CLUSTER[0], node('pve1', 0), node('pve2', 1)], health.CRITICAL, 'this node pve1 is offline'),
    ([CLUSTER[0], node('pve2', 1)], health.CRITICAL, 'pve1 is not listed'),
    ([dict(node('pve1', 1), local=1)], health.OK, 'standalone'),
    ([dict(node('pve1', 0), local=1), node('x', 1)], health.UNKNOWN, 'neither'),
    (subprocess.CompletedProcess([], 255, b'', b'ipcc_send_rec failed'), health.CRITICAL, 'ipcc_send_rec'),
    ({'not': 'a list'}, health.CRITICAL, 'expected a list'),
])
def test_cluster(settings, answer, status, word):
    result = check(settings, 'cluster', Runner(cluster=answer))
    assert result.status == status
    assert word in result.reason


# -- services -------------------------------------------------------------------------------------

def test_services_all_active(settings):
    runner = Runner()
    result = check(settings, 'services', runner)
    assert result.status == health.OK and result.values['pveproxy'] == 'active'
    assert runner.calls[0] == (['systemctl', 'is-active', 'pveproxy', 'pvedaemon', 'pve-cluster', 'pvestatd'],
                               settings['health.systemctl_timeout'])


def test_services_inactive_is_critical(settings):
    result = check(settings, 'services', Runner(services={'pvestatd': 'failed', 'pveproxy': 'inactive'}))
    assert result.status == health.CRITICAL
    assert result.reason == 'not active: pveproxy inactive, pvestatd failed'


@pytest.mark.parametrize('answer, word', [
    (FileNotFoundError(2, 'x'), 'program not found'),
    (PermissionError(13, 'Permission denied'), 'cannot run (Permission denied)'),
    (subprocess.TimeoutExpired(['systemctl'], 5), 'no answer within 5s'),
    (subprocess.CompletedProcess([], 1, b'', b'Failed to connect to bus: Host is down\n'), 'Failed to connect'),
    (subprocess.CompletedProcess([], 0, b'active\n', b''), 'unexpected output'),
])
def test_services_cannot_tell_is_unknown(settings, answer, word):
    result = check(settings, 'services', Runner(systemctl=answer))
    assert result.status == health.UNKNOWN and word in result.reason


def test_no_services_configured_is_ok(settings):
    assert check(settings, 'services', **{'health.services': []}).status == health.OK


# -- reconciler -----------------------------------------------------------------------------------

def test_reconciler(settings):
    missing = check(settings, 'reconciler')
    assert missing.status == health.CRITICAL and 'no heartbeat' in missing.reason
    write_state(settings, 'daemon.json', {'heartbeat_at': NOW - 30, 'pid': 42})
    fresh = check(settings, 'reconciler')
    assert fresh.status == health.OK and fresh.values == {'age_seconds': 30.0, 'pid': 42}
    write_state(settings, 'daemon.json', {'heartbeat_at': NOW - 181})
    assert check(settings, 'reconciler').status == health.CRITICAL
    write_state(settings, 'daemon.json', {'heartbeat_at': NOW + 5})  # clock skew: not negative
    assert check(settings, 'reconciler').values['age_seconds'] == 0
    write_state(settings, 'daemon.json', '{broken')   # read as no state: no heartbeat
    assert check(settings, 'reconciler').status == health.CRITICAL
    write_state(settings, 'daemon.json', {'heartbeat_at': 'yesterday'})
    assert check(settings, 'reconciler').status == health.CRITICAL


# -- outbox -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('stats, status, word', [
    ({}, health.OK, '0 events waiting'),
    ({'depth': 3, 'oldest_age': 12.0}, health.OK, '3 events waiting, oldest 12s'),
    ({'depth': 3, 'oldest_age': 700.0}, health.WARNING, 'oldest event waiting 700s'),
    ({'depth': 3, 'oldest_age': 4000.0}, health.CRITICAL, 'oldest event waiting 4000s'),
    ({'dead': 2}, health.WARNING, '2 dead'),
    ({'quarantine': 1}, health.WARNING, '1 quarantined'),
    ({'dropped': 5}, health.WARNING, '5 dropped'),
    ({'depth': 10000}, health.WARNING, 'alerts.outbox_depth'),
    ({'dead': 1, 'oldest_age': 4000.0}, health.CRITICAL, '1 dead'),
])
def test_outbox(settings, stats, status, word):
    found = check(settings, 'outbox', outbox=stats)
    assert found.status == status and word in found.reason


def test_an_unreadable_outbox_is_unknown(settings):
    os.makedirs(os.path.dirname(settings['paths.spool_dir']), exist_ok=True)
    with open(settings['paths.spool_dir'], 'w'):
        pass   # a file where the spool directory should be
    found = check(settings, 'outbox')
    assert found.status == health.UNKNOWN and 'cannot read the outbox' in found.reason


def test_outbox_default_reads_the_real_spool(settings):
    result = health.run_checks(settings, ['outbox'])[0]
    assert result.status == health.OK and result.values['depth'] == 0


# -- breaker ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('record, status, word', [
    (None, health.OK, 'closed'),
    ({'state': 'closed', 'failures': 0, 'opened_at': None, 'changed_at': None}, health.OK, 'closed'),
    ({'state': 'open', 'failures': 5, 'opened_at': NOW - 10, 'changed_at': NOW - 10}, health.WARNING,
     'open for 10s after 5 transient failures'),
    ({'state': 'open', 'failures': 6, 'opened_at': NOW - 60, 'changed_at': NOW - 60}, health.WARNING,
     'half-open after 6'),
    ({'state': 'half_open', 'failures': 5, 'opened_at': NOW - 99, 'changed_at': NOW}, health.WARNING, 'half-open'),
    # What the breaker itself makes of a file it cannot use: closed (it rewrites it at the next transition).
    ({'state': 'open', 'failures': 5}, health.OK, 'closed'),
    ({'state': 'ajar'}, health.OK, 'closed'),
    ('{not json', health.OK, 'closed'),
])
def test_breaker(settings, record, status, word):
    if record is not None:
        write_state(settings, 'breaker.json', record)
    before = sorted(os.listdir(settings['paths.state_dir'])) if record is not None else None
    result = check(settings, 'breaker', **{'breaker.reset_timeout': 60.0})
    assert result.status == status and word in result.reason
    if record is not None:  # read-only: no lock file, no rewrite
        assert sorted(os.listdir(settings['paths.state_dir'])) == before


def test_breaker_file_written_by_the_breaker_module_is_understood(settings):
    from pve_hooks.accountdb import breaker

    real = breaker.from_settings(settings, clock=lambda: NOW - 5)
    for _ in range(settings['breaker.failure_threshold']):
        real.record_failure()
    result = check(settings, 'breaker')
    assert result.status == health.WARNING and result.values['state'] == 'open'
    assert result.values['open_seconds'] == 5


# -- whitelist --------------------------------------------------------------------------------------

def test_whitelist(settings):
    assert check(settings, 'whitelist').status == health.OK
    write_state(settings, 'whitelist.json', {'fetched_at': NOW - 100, 'vmids': [100, 101]})
    fresh = check(settings, 'whitelist')
    assert fresh.status == health.OK and fresh.values == {'age_seconds': 100.0, 'count': 2}
    write_state(settings, 'whitelist.json', {'fetched_at': NOW - 90000, 'vmids': []})
    stale = check(settings, 'whitelist')
    assert stale.status == health.CRITICAL and 'whitelist.max_stale' in stale.reason
    write_state(settings, 'whitelist.json', {'fetched_at': None, 'vmids': None})
    assert check(settings, 'whitelist').status == health.OK
    write_state(settings, 'whitelist.json', '[]')   # the cache reads a corrupt file as no list
    assert check(settings, 'whitelist').status == health.OK


# -- hookscripts ------------------------------------------------------------------------------------

def test_hookscripts_counted_from_configs(settings, tmp_path):
    from tests.support.fakepve import PveTree

    tree = PveTree(tmp_path / 'pve')
    tree.write_config('pve1', 100, 'qemu', {'name': 'a'}, hookscript='local:snippets/accountdb-hook')
    tree.write_config('pve1', 101, 'qemu', {'name': 'b'}, hookscript='local:snippets/gpu-hook')
    tree.write_config('pve1', 102, 'qemu', {'name': 'c'}, snapshot={'hookscript': 'local:snippets/accountdb-hook'})
    tree.write_config('pve1', 200, 'lxc', {'hostname': 'd'}, hookscript='shared:snippets/accountdb-hook')
    tree.write_config('pve2', 300, 'qemu', {'name': 'e'}, hookscript='local:snippets/accountdb-hook')
    result = check(settings, 'hookscripts')
    assert result.status == health.OK
    assert result.values == {'guests': 4, 'attached': 2, 'other_hookscript': 1, 'without': 1, 'unreadable': 0}
    assert result.reason == 'hookscript attached to 2 of 4 guests (1 with another hookscript, 1 without)'


# -- accountdb --------------------------------------------------------------------------------------

class Client:
    def __init__(self, error=None):
        self.error = error
        self.closed = False

    def health(self):
        if self.error:
            raise self.error
        return {'status': 'ok'}

    def close(self):
        self.closed = True


def test_accountdb(settings):
    client = Client()
    ok = check(settings, 'accountdb', client=lambda s: client)
    assert ok.status == health.OK and ok.values == {'latency_seconds': 1} and client.closed
    down = check(settings, 'accountdb', client=lambda s: Client(errors.TransientError('connection refused')))
    assert down.status == health.CRITICAL and 'connection refused' in down.reason
    token = check(settings, 'accountdb', client=lambda s: Client(config.TokenError('/x: token file not found')))
    assert token.status == health.CRITICAL and 'token file not found' in token.reason
    unset = check(settings, 'accountdb', **{'accountdb.url': None})
    assert unset.status == health.UNKNOWN and 'accountdb.url' in unset.reason


def test_offline_leaves_out_accountdb(settings):
    calls = []
    results = health.run_checks(settings, offline=True, runner=Runner(), client_factory=calls.append,
                                snapshot=snapshot_with_outbox(settings, {}))
    assert [r.name for r in results] == [n for n in health.NAMES if n != 'accountdb'] and calls == []


# -- combining --------------------------------------------------------------------------------------

def result(status, name='x', perfdata=()):
    return health.CheckResult(name, status, 'because ' + status.lower(), {'v': 1}, perfdata)


@pytest.mark.parametrize('statuses, expected', [
    ([health.OK, health.OK], health.OK),
    ([health.OK, health.UNKNOWN], health.UNKNOWN),
    ([health.UNKNOWN, health.WARNING], health.WARNING),
    ([health.WARNING, health.CRITICAL, health.UNKNOWN], health.CRITICAL),
    ([], health.UNKNOWN),
])
def test_overall_and_exit_code(statuses, expected):
    results = [result(status) for status in statuses]
    assert health.overall(results) == expected
    assert health.exit_code(results) == {'OK': 0, 'WARNING': 1, 'CRITICAL': 2, 'UNKNOWN': 3}[expected]


def test_nagios_line():
    results = [result(health.OK, 'a', ['a=1;2;3']), result(health.WARNING, 'b', ['b=5s;;;0'])]
    assert health.nagios_line(results) == 'PVE-HOOKS WARNING - b WARNING: because warning | a=1;2;3 b=5s;;;0'
    assert health.nagios_line([result(health.OK, 'a')]) == 'PVE-HOOKS OK - all 1 checks OK'
    piped = health.CheckResult('c', health.CRITICAL, 'x | y')
    assert health.nagios_line([piped]) == 'PVE-HOOKS CRITICAL - c CRITICAL: x / y'


def test_perf_formatting():
    assert health.perf('rootfs', 25.0, '%', 85.0, 95.0, 0, 100) == 'rootfs=25%;85;95;0;100'
    assert health.perf('lat', 0.1234567, 's', minimum=0) == 'lat=0.123457s;;;0'
    assert health.perf('n', 3) == 'n=3'


def test_json_and_table():
    results = [result(health.OK, 'a'), result(health.CRITICAL, 'bb')]
    doc = json.loads(health.to_json(results))
    assert doc == {'status': 'CRITICAL', 'exit_code': 2, 'checks': [
        {'name': 'a', 'status': 'OK', 'reason': 'because ok', 'values': {'v': 1}},
        {'name': 'bb', 'status': 'CRITICAL', 'reason': 'because critical', 'values': {'v': 1}}]}
    lines = health.table(results).splitlines()
    assert lines[0].split() == ['CHECK', 'STATUS', 'REASON'] and lines[2].split()[:3] == ['bb', 'CRITICAL', 'because']
    assert lines[-1] == 'overall: CRITICAL'


def test_reason_is_one_line_and_status_checked():
    assert health.CheckResult('a', health.OK, 'two\nlines').reason == 'two lines'
    with pytest.raises(ValueError):
        health.CheckResult('a', 'FINE', 'x')


def test_unknown_check_name_lists_valid_ones(settings):
    with pytest.raises(ValueError, match='unknown check nope; valid checks: pvesh_api, node_resources'):
        health.run_checks(settings, ['nope'])


def test_unexpected_error_in_a_check_becomes_unknown(settings):
    def broken(settings):
        raise RuntimeError('boom')
    [res] = health.run_checks(settings, ['accountdb'], client_factory=broken)
    assert res.status == health.UNKNOWN and res.reason == 'check failed: RuntimeError: boom'


def test_check_sets():
    assert health.PVESH == {'pvesh_api', 'node_resources', 'cluster'}
    assert health.CHEAP | health.PVESH == set(health.NAMES) and not health.CHEAP & health.PVESH


# -- HealthRunner -----------------------------------------------------------------------------------

def test_runner_runs_pvesh_checks_at_their_interval_and_reports_transitions(settings):
    runner = Runner()
    hr = health.HealthRunner(settings, names=['pvesh_api', 'cluster', 'services'], runner=runner)
    results, transitions = hr.run(NOW)
    assert [r.name for r in results] == ['pvesh_api', 'cluster', 'services']
    assert [(t['name'], t['old'], t['new']) for t in transitions] == [
        ('pvesh_api', None, 'OK'), ('cluster', None, 'OK'), ('services', None, 'OK')]
    pvesh_calls = lambda: sum(1 for argv, _ in runner.calls if argv[0] == 'pvesh')  # noqa: E731
    assert pvesh_calls() == 2

    runner.answers['/cluster/status'] = [dict(CLUSTER[0], quorate=0)] + CLUSTER[1:]
    runner.services['pveproxy'] = 'failed'
    results, transitions = hr.run(NOW + 30)  # pvesh checks not due: cluster keeps its last result
    assert pvesh_calls() == 2
    assert [r.status for r in results] == ['OK', 'OK', 'CRITICAL']
    assert transitions == [{'name': 'services', 'old': 'OK', 'new': 'CRITICAL',
                            'reason': 'not active: pveproxy failed'}]

    results, transitions = hr.run(NOW + 60)
    assert pvesh_calls() == 4
    assert [(t['name'], t['old'], t['new']) for t in transitions] == [('cluster', 'OK', 'CRITICAL')]

    runner.services['pveproxy'] = 'active'
    results, transitions = hr.run(NOW + 70)
    assert [(t['name'], t['old'], t['new']) for t in transitions] == [('services', 'CRITICAL', 'OK')]
    assert hr.pvesh_due(NOW + 120) and not hr.pvesh_due(NOW + 119)
    assert hr.pvesh_due(NOW - 5)  # the clock went back: run them rather than wait


def test_runner_is_offline_and_skips_its_own_heartbeat_by_default(settings):
    hr = health.HealthRunner(settings, runner=Runner(),
                             client_factory=lambda s: pytest.fail('AccountDB contacted'))
    results, _ = hr.run(NOW)
    assert [r.name for r in results] == [n for n in health.NAMES if n not in ('accountdb', 'reconciler')]
