"""pvesh.run: argv, parsing and every failure mode, with canned runner results."""

import subprocess

import pytest

from pve_hooks.proxmox import pvesh

SETTINGS = {'proxmox.pvesh': '/usr/bin/pvesh', 'proxmox.pvesh_timeout': 7.0}


def canned(returncode=0, stdout=b'', stderr=b'', calls=None):
    def runner(argv, timeout):
        if calls is not None:
            calls.append((argv, timeout))
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)
    return runner


def raising(error):
    def runner(argv, timeout):
        raise error
    return runner


def test_runs_pvesh_get_with_json_output_and_the_configured_timeout():
    calls = []
    data = pvesh.run(SETTINGS, '/nodes/pve1/qemu', runner=canned(stdout=b'[{"vmid":100}]\n', calls=calls))
    assert data == [{'vmid': 100}]
    assert calls == [(['/usr/bin/pvesh', 'get', '/nodes/pve1/qemu', '--output-format', 'json'], 7.0)]


def test_explicit_timeout_and_extra_args_are_passed():
    calls = []
    pvesh.run(SETTINGS, '/cluster/resources', timeout=2, args=['--type', 'vm'],
              runner=canned(stdout=b'[]', calls=calls))
    assert calls == [(['/usr/bin/pvesh', 'get', '/cluster/resources', '--output-format', 'json',
                       '--type', 'vm'], 2)]


@pytest.mark.parametrize('runner, words', [
    (raising(FileNotFoundError(2, 'No such file')), ['not found', 'proxmox.pvesh']),
    (raising(PermissionError(13, 'Permission denied')), ['not executable']),
    (raising(OSError(8, 'Exec format error')), ['cannot run', 'Exec format error']),
    (raising(subprocess.TimeoutExpired(['pvesh'], 7.0)), ['no answer within 7s', 'killed']),
    (canned(255, b'', b'some noise\nhostname lookup failed\n'), ['exit 255', 'hostname lookup failed']),
    (canned(-9, b'', b''), ['killed by signal 9', 'no message']),
    (canned(0, b'  \n'), ['printed nothing']),
    (canned(0, b'<html>oops'), ['invalid JSON', '<html>oops']),
])
def test_every_failure_is_one_line_pvesh_error(runner, words):
    with pytest.raises(pvesh.PveshError) as caught:
        pvesh.run(SETTINGS, '/nodes/pve1/status', runner=runner)
    message = str(caught.value)
    assert message.startswith('pvesh get /nodes/pve1/status: ')
    assert '\n' not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize('expect, stdout, kind', [
    (list, b'{"a": 1}', 'an object'), (dict, b'[1]', 'a list'), (list, b'null', 'null'),
    (dict, b'"x"', 'a string'),
])
def test_wrong_shape_is_an_error(expect, stdout, kind):
    with pytest.raises(pvesh.PveshError, match='returned {0}, expected'.format(kind)):
        pvesh.run(SETTINGS, '/x', runner=canned(stdout=stdout), expect=expect)


def test_timeout_is_a_pvesh_timeout():
    with pytest.raises(pvesh.PveshTimeout):
        pvesh.run(SETTINGS, '/x', runner=raising(subprocess.TimeoutExpired(['pvesh'], 7.0)))
    assert issubclass(pvesh.PveshTimeout, pvesh.PveshError)


def test_duration_callback_reports_success_and_failure():
    seen = []
    ticks = iter([10.0, 10.25, 20.0, 21.0])
    clock = lambda: next(ticks)  # noqa: E731
    pvesh.run(SETTINGS, '/a', runner=canned(stdout=b'1'), on_duration=lambda *a: seen.append(a), clock=clock)
    with pytest.raises(pvesh.PveshError):
        pvesh.run(SETTINGS, '/b', runner=canned(1), on_duration=lambda *a: seen.append(a), clock=clock)
    assert seen == [('/a', 0.25, True), ('/b', 1.0, False)]


def test_long_stderr_is_cut():
    with pytest.raises(pvesh.PveshError) as caught:
        pvesh.run(SETTINGS, '/x', runner=canned(2, b'', b'y' * 1000))
    assert len(str(caught.value)) < 250
