"""health/runner.py: which checks exist, running a selection of them, and the daemon's HealthRunner."""

import subprocess

import pytest

from pve_hooks.health import node, own, runner
from pve_hooks.health.result import CRITICAL, OK, UNKNOWN
from tests.support.health import CLUSTER, NOW, Runner, snapshot_with_outbox


def test_each_name_runs_the_check_of_that_name():
    for name, function in runner.CHECKS.items():
        assert function.__name__ == 'check_' + name and function.__module__ in (node.__name__, own.__name__)


def test_after_a_timeout_later_pvesh_calls_of_the_run_are_not_tried(settings):
    answers = Runner(status=subprocess.TimeoutExpired(['pvesh'], 10))
    results = runner.run_checks(settings, ['pvesh_api', 'node_resources', 'cluster'], runner=answers)
    assert [r.status for r in results] == [CRITICAL, UNKNOWN, UNKNOWN]
    assert 'not tried' in results[2].reason and len(answers.calls) == 1
    again = runner.run_checks(settings, ['cluster'], runner=answers)  # a new run tries again
    assert again[0].status == OK and len(answers.calls) == 2


def test_offline_leaves_out_accountdb(settings):
    calls = []
    results = runner.run_checks(settings, offline=True, runner=Runner(), client_factory=calls.append,
                                snapshot=snapshot_with_outbox(settings, {}))
    assert [r.name for r in results] == [n for n in runner.NAMES if n != 'accountdb'] and calls == []


def test_unknown_check_name_lists_valid_ones(settings):
    with pytest.raises(ValueError, match='unknown check nope; valid checks: pvesh_api, node_resources'):
        runner.run_checks(settings, ['nope'])


def test_unexpected_error_in_a_check_becomes_unknown(settings):
    def broken(settings):
        raise RuntimeError('boom')
    [res] = runner.run_checks(settings, ['accountdb'], client_factory=broken)
    assert res.status == UNKNOWN and res.reason == 'check failed: RuntimeError: boom'


def test_check_sets():
    assert runner.PVESH == {'pvesh_api', 'node_resources', 'cluster'}
    assert runner.CHEAP | runner.PVESH == set(runner.NAMES) and not runner.CHEAP & runner.PVESH


# -- HealthRunner -----------------------------------------------------------------------------------

def test_runner_runs_pvesh_checks_at_their_interval_and_reports_transitions(settings):
    answers = Runner()
    hr = runner.HealthRunner(settings, names=['pvesh_api', 'cluster', 'services'], runner=answers)
    results, transitions = hr.run(NOW)
    assert [r.name for r in results] == ['pvesh_api', 'cluster', 'services']
    assert [(t['name'], t['old'], t['new']) for t in transitions] == [
        ('pvesh_api', None, 'OK'), ('cluster', None, 'OK'), ('services', None, 'OK')]
    pvesh_calls = lambda: sum(1 for argv, _ in answers.calls if argv[0] == 'pvesh')  # noqa: E731
    assert pvesh_calls() == 2

    answers.answers['/cluster/status'] = [dict(CLUSTER[0], quorate=0)] + CLUSTER[1:]
    answers.services['pveproxy'] = 'failed'
    results, transitions = hr.run(NOW + 30)  # pvesh checks not due: cluster keeps its last result
    assert pvesh_calls() == 2
    assert [r.status for r in results] == ['OK', 'OK', 'CRITICAL']
    assert transitions == [{'name': 'services', 'old': 'OK', 'new': 'CRITICAL',
                            'reason': 'not active: pveproxy failed'}]

    results, transitions = hr.run(NOW + 60)
    assert pvesh_calls() == 4
    assert [(t['name'], t['old'], t['new']) for t in transitions] == [('cluster', 'OK', 'CRITICAL')]

    answers.services['pveproxy'] = 'active'
    results, transitions = hr.run(NOW + 70)
    assert [(t['name'], t['old'], t['new']) for t in transitions] == [('services', 'CRITICAL', 'OK')]
    assert hr.pvesh_due(NOW + 120) and not hr.pvesh_due(NOW + 119)
    assert hr.pvesh_due(NOW - 5)  # the clock went back: run them rather than wait


def test_runner_is_offline_and_skips_its_own_heartbeat_by_default(settings):
    hr = runner.HealthRunner(settings, runner=Runner(),
                             client_factory=lambda s: pytest.fail('AccountDB contacted'))
    results, _ = hr.run(NOW)
    assert [r.name for r in results] == [n for n in runner.NAMES if n not in ('accountdb', 'reconciler')]
