"""health/result.py: a check's result, and how results are combined and printed (Nagios conventions)."""

import json

import pytest

from pve_hooks.health import result
from pve_hooks.health.result import CRITICAL, OK, UNKNOWN, WARNING


def made(status, name='x', perfdata=()):
    return result.CheckResult(name, status, 'because ' + status.lower(), {'v': 1}, perfdata)


@pytest.mark.parametrize('statuses, expected', [
    ([OK, OK], OK),
    ([OK, UNKNOWN], UNKNOWN),
    ([UNKNOWN, WARNING], WARNING),
    ([WARNING, CRITICAL, UNKNOWN], CRITICAL),
    ([], UNKNOWN),
])
def test_overall_and_exit_code(statuses, expected):
    results = [made(status) for status in statuses]
    assert result.overall(results) == expected
    assert result.exit_code(results) == {'OK': 0, 'WARNING': 1, 'CRITICAL': 2, 'UNKNOWN': 3}[expected]


def test_nagios_line():
    results = [made(OK, 'a', ['a=1;2;3']), made(WARNING, 'b', ['b=5s;;;0'])]
    assert result.nagios_line(results) == 'PVE-HOOKS WARNING - b WARNING: because warning | a=1;2;3 b=5s;;;0'
    assert result.nagios_line([made(OK, 'a')]) == 'PVE-HOOKS OK - all 1 checks OK'
    piped = result.CheckResult('c', CRITICAL, 'x | y')
    assert result.nagios_line([piped]) == 'PVE-HOOKS CRITICAL - c CRITICAL: x / y'


def test_perf_formatting():
    assert result.perf('rootfs', 25.0, '%', 85.0, 95.0, 0, 100) == 'rootfs=25%;85;95;0;100'
    assert result.perf('lat', 0.1234567, 's', minimum=0) == 'lat=0.123457s;;;0'
    assert result.perf('n', 3) == 'n=3'


@pytest.mark.parametrize('value, expected', [(0.5, OK), (0.8, WARNING), (0.9, WARNING), (0.95, CRITICAL),
                                             (2.0, CRITICAL)])
def test_level_is_reached_at_each_threshold(value, expected):
    assert result.level(value, 0.8, 0.95) == expected


def test_json_and_table():
    results = [made(OK, 'a'), made(CRITICAL, 'bb')]
    doc = json.loads(result.to_json(results))
    assert doc == {'status': 'CRITICAL', 'exit_code': 2, 'checks': [
        {'name': 'a', 'status': 'OK', 'reason': 'because ok', 'values': {'v': 1}},
        {'name': 'bb', 'status': 'CRITICAL', 'reason': 'because critical', 'values': {'v': 1}}]}
    lines = result.table(results).splitlines()
    assert lines[0].split() == ['CHECK', 'STATUS', 'REASON'] and lines[2].split()[:3] == ['bb', 'CRITICAL', 'because']
    assert lines[-1] == 'overall: CRITICAL'


def test_reason_is_one_line_and_status_checked():
    assert result.CheckResult('a', OK, 'two\nlines').reason == 'two lines'
    with pytest.raises(ValueError):
        result.CheckResult('a', 'FINE', 'x')
