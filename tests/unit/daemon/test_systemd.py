"""Unit tests for pve_hooks.daemon.systemd: sd_notify over a real AF_UNIX datagram socket."""

import os
import socket

import pytest

from pve_hooks.daemon.systemd import Notifier, Watchdog
from tests.support.notify import listener, received as _messages  # noqa: F401 (fixture)


def test_without_notify_socket_everything_is_a_no_op():
    notifier = Notifier(env={})
    assert not notifier.enabled
    assert notifier.ready('starting') is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


def test_raw_socket_ready_status_watchdog_stopping(listener):
    path, sock = listener
    notifier = Notifier(env={'NOTIFY_SOCKET': path}, use_systemd=False)
    assert notifier.ready('outbox 0 events')
    assert notifier.status('line one\nline two')
    assert notifier.status('line one\nline two') is False  # unchanged text is not resent
    assert notifier.watchdog()
    assert notifier.stopping()
    messages = _messages(sock)
    assert messages[0].startswith('READY=1\nMAINPID={0}\n'.format(os.getpid()))
    assert messages[0].endswith('STATUS=outbox 0 events')
    assert messages[1] == 'STATUS=line one line two'
    assert messages[2:] == ['WATCHDOG=1', 'STOPPING=1']


def test_abstract_namespace_socket():
    name = 'pve-hooks-test-{0}'.format(os.getpid())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind('\0' + name)
    try:
        assert Notifier(env={'NOTIFY_SOCKET': '@' + name}, use_systemd=False).watchdog()
        assert _messages(sock) == ['WATCHDOG=1']
    finally:
        sock.close()


def test_systemd_python_path_uses_os_environ(listener, monkeypatch):
    pytest.importorskip('systemd.daemon')
    path, sock = listener
    monkeypatch.setenv('NOTIFY_SOCKET', path)
    assert Notifier().ready()
    assert _messages(sock)[0].startswith('READY=1')


def test_vanished_socket_is_not_fatal(tmp_path):
    notifier = Notifier(env={'NOTIFY_SOCKET': str(tmp_path / 'gone.sock')}, use_systemd=False)
    assert notifier.ready() is False
    assert notifier.ready() is False


@pytest.mark.parametrize('env, expected', [
    ({'WATCHDOG_USEC': '10000000'}, 5.0),
    ({'WATCHDOG_USEC': '0'}, None),
    ({'WATCHDOG_USEC': 'junk'}, None),
    ({'WATCHDOG_USEC': '2000000', 'WATCHDOG_PID': '1'}, None),
    ({'WATCHDOG_USEC': '2000000', 'WATCHDOG_PID': str(os.getpid())}, 1.0),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    assert Notifier(env=env).watchdog_interval() == expected


def test_without_a_watchdog_nothing_is_sent_and_no_wakeup_is_asked(listener):
    path, sock = listener
    watchdog = Watchdog(Notifier(env={'NOTIFY_SOCKET': path}, use_systemd=False))
    watchdog.arm()
    watchdog.ping()
    assert _messages(sock) == [] and watchdog.next_in() is None


def test_watchdog_asks_to_wake_at_half_its_interval_after_the_last_ping(listener):
    path, sock = listener
    now = [100.0]
    watchdog = Watchdog(Notifier(env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '10000000'}, use_systemd=False),
                        monotonic=lambda: now[0])
    watchdog.ping()
    assert _messages(sock) == []   # not armed: before READY=1
    watchdog.arm()
    watchdog.ping()
    now[0] += 0.5
    watchdog.ping()   # throttled
    assert _messages(sock) == ['WATCHDOG=1'] and watchdog.next_in() == pytest.approx(2.0)


def _settings(*overrides):
    from pve_hooks.config import loader as config

    return config.load(env={}, require_file=False, overrides=['node=pve1'] + list(overrides))


def test_a_total_deadline_not_below_the_watchdog_is_refused_naming_both_values_and_the_fix():
    from pve_hooks.daemon.systemd import watchdog_problem

    notifier = Notifier(env={'WATCHDOG_USEC': '20000000'})
    problem = watchdog_problem(_settings('accountdb.timeout.total=45'), notifier)
    assert '\n' not in problem
    assert 'accountdb.timeout.total is 45 s' in problem and '20 s' in problem and 'systemctl edit' in problem
    assert watchdog_problem(_settings('accountdb.timeout.total=19'), notifier) is None
    assert watchdog_problem(_settings('accountdb.timeout.total=3000'), Notifier(env={})) is None


def test_the_unit_files_watchdog_exceeds_the_default_timeouts():
    import pathlib
    import re

    from pve_hooks.config import schema

    unit = pathlib.Path(__file__).resolve().parents[3] / 'debian' / 'pve-hooks.pve-hooks-reconciler.service'
    watchdog = float(re.search(r'^WatchdogSec=(\d+)s?$', unit.read_text(), re.M).group(1))
    defaults = schema.defaults()
    assert defaults['accountdb.timeout.total'] < watchdog
    assert defaults['accountdb.timeout.connect'] + defaults['accountdb.timeout.read'] <= \
        defaults['accountdb.timeout.total']
