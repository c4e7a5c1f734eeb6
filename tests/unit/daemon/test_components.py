"""Unit tests for pve_hooks.daemon.components: the runners that keep the watchdog fed and count pvesh calls."""

import re
import time

from pve_hooks.daemon import components
from pve_hooks.daemon.systemd import Notifier, Watchdog
from pve_hooks.observe.metrics import Metrics
from tests.support.notify import listener, received as messages  # noqa: F401 (fixture)


def test_watchdog_is_fed_around_every_bounded_call(listener):
    path, sock = listener
    calls = []

    def slow_pvesh(settings, pvesh_path, **kwargs):
        calls.append(pvesh_path)
        time.sleep(0.06)   # longer than the 0.05 s throttle of a 0.1 s watchdog interval
        return []

    watchdog = Watchdog(Notifier(env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '200000'}, use_systemd=False))
    metrics = Metrics()
    tools = components.Tools(time.time, None, None, slow_pvesh, None, None, watchdog, metrics, None, None)
    run = components.pvesh_runner(tools)
    run({}, '/nodes/pve1/qemu')
    assert messages(sock) == []   # not before READY=1: systemd's start timeout applies then
    watchdog.arm()
    run({}, '/nodes/pve1/qemu')
    run({}, '/nodes/pve1/lxc')
    # a ping before the first call, one after each call (the call itself outlasted the throttle)
    assert messages(sock) == ['WATCHDOG=1'] * 3 and len(calls) == 3
    command = components.command_runner(watchdog)
    command(['sleep', '0.06'], timeout=5)
    assert messages(sock) == ['WATCHDOG=1'] * 2   # before and after the health check's command
    text = metrics.render()
    text = text.decode() if isinstance(text, bytes) else text
    assert re.search(r'^pve_hooks_pvesh_duration_seconds_count\{call="qemu"\} 2(\.0)?$', text, re.M), text
    watchdog.ping()
    watchdog.ping()
    assert messages(sock) == ['WATCHDOG=1']   # the second one is throttled: no ping storm

