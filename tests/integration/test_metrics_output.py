"""Metrics on real files, and the /metrics listener's bounds over loopback with real stalled clients.

The textfile writer (observe/metrics.py) and what takes real seconds and
hundreds of sockets to show of observe/listener.py: deadlines, the
connection bound and the thread bound. The listener's quick cases are in
tests/unit/observe/test_listener.py.
"""

import logging
import os
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

from pve_hooks.observe import listener, metrics
from tests.support.metrics import delivered, families, filled_registry, get
from tests.support.snapshot import snapshot


def test_textfile_is_written_readable_and_parses(tmp_path):
    path = tmp_path / 'pve-hooks.prom'
    assert filled_registry().write_textfile(str(path)) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    parsed = families(path.read_text())
    assert parsed['pve_hooks_events_delivered'].samples[0].value == 5
    assert os.listdir(tmp_path) == ['pve-hooks.prom']


def test_textfile_replaces_the_old_file(tmp_path):
    path = tmp_path / 'pve-hooks.prom'
    path.write_text('old garbage that is not prometheus format {{{\n')
    registry = filled_registry()
    registry.write_textfile(str(path))
    delivered(registry, 1)
    registry.write_textfile(str(path))
    assert families(path.read_text())['pve_hooks_events_delivered'].samples[0].value == 6
    assert os.listdir(tmp_path) == ['pve-hooks.prom']


def test_reader_never_sees_a_partial_file(tmp_path):
    """node_exporter reads while the daemon writes: every read must be a whole exposition."""
    path = tmp_path / 'pve-hooks.prom'
    statuses = ('OK', 'WARNING', 'CRITICAL', 'UNKNOWN')
    checks = [{'name': 'check-{0:03d}'.format(number), 'status': statuses[number % 4]}
              for number in range(200)]  # make the file a few tens of KB
    registry = filled_registry({'snapshot': snapshot(health={'status': 'OK', 'checks': checks})})
    registry.write_textfile(str(path))
    expected = len(families(path.read_text()))
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            delivered(registry, 1)
            registry.write_textfile(str(path))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            text = path.read_text()
            assert text.endswith('\n')
            assert len(families(text)) == expected
    finally:
        stop.set()
        thread.join(10)


def test_missing_directory_warns_once_and_does_not_raise(tmp_path, caplog):
    path = tmp_path / 'node-exporter' / 'pve-hooks.prom'
    registry = filled_registry()
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        assert registry.write_textfile(str(path)) is False
        assert registry.write_textfile(str(path)) is False
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith('cannot write metrics file {0} (No such file or directory)'.format(path))
    assert not path.parent.exists()  # node_exporter's directory is not ours to create
    path.parent.mkdir()
    assert registry.write_textfile(str(path)) is True
    path.parent.joinpath('pve-hooks.prom').unlink()
    path.parent.rmdir()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        assert registry.write_textfile(str(path)) is False
    assert len(caplog.records) == 1  # it broke again after working: say so again


def test_textfile_stays_0644_under_a_0077_umask(tmp_path):
    """The reconciler unit has UMask=0077; node_exporter (another user) must still read the file."""
    path = tmp_path / 'pve-hooks.prom'
    old = os.umask(0o077)
    try:
        assert filled_registry().write_textfile(str(path)) is True
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unwritable_target_warns_and_returns_false(tmp_path, caplog):
    path = tmp_path / 'pve-hooks.prom'
    path.mkdir()  # a directory where the file should be: rename fails even for root
    registry = filled_registry()
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        assert registry.write_textfile(str(path)) is False
        assert registry.write_textfile(str(path)) is False
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith('cannot write metrics file {0} (Is a directory)'.format(path))
    assert os.listdir(tmp_path) == ['pve-hooks.prom']  # no temporary file left behind


def test_promtool_accepts_a_full_render():
    """Prometheus' own linter on everything at once: every metric with a sample, odd label values included."""
    promtool = shutil.which('promtool')
    if promtool is None:
        pytest.skip('promtool not installed (Debian package prometheus)')
    registry = filled_registry({'snapshot': snapshot()})
    for endpoint, http_status in (('events', 200), ('events', 503), ('inventory', None), ('heartbeat', 204)):
        registry.on_request('POST', endpoint, metrics.status_class(http_status), 0.05)
    registry.count_pvesh('qemu', 0.4, ok=True)
    registry.count_pvesh('lxc', 3.0, ok=False)
    text = registry.render()
    assert len(families(text.decode())) >= len(metrics.METRICS)
    done = subprocess.run([promtool, 'check', 'metrics'], input=text, capture_output=True, timeout=60)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


# -- the listener's bounds -------------------------------------------------------------------------


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'condition not met in {0} s'.format(timeout)
        time.sleep(0.01)


def half_sent(port, count):
    """Open ``count`` connections that send part of a request head and then nothing."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(('127.0.0.1', port), timeout=10)
        client.sendall(b'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n')
        clients.append(client)
    return clients


def closed_by_server(client):
    try:
        return client.recv(1) == b''
    except ConnectionResetError:
        return True


def test_half_sent_requests_hold_no_thread_and_are_closed_at_the_deadline():
    """Slowloris: 50 stalled clients cost sockets, not threads; a scrape still answers; they go at the timeout."""
    before = threading.active_count()
    workers, timeout = 4, 1.5
    server = listener.serve(filled_registry(), '127.0.0.1:0', timeout=timeout, workers=workers)
    port = server.server_address[1]
    clients = half_sent(port, 50)
    try:
        opened = time.monotonic()
        wait_until(lambda: server.pending() == 50)
        status, _, body = get('http://127.0.0.1:{0}/metrics'.format(port), timeout=5)
        assert status == 200
        assert families(body)['pve_hooks_outbox_depth'].samples[0].value == 2
        assert threading.active_count() - before <= 1 + workers + 1
        assert server.pending() == 50  # still inside their deadline
        for client in clients:
            assert closed_by_server(client)
        assert time.monotonic() - opened >= timeout - 0.2
        wait_until(lambda: server.pending() == 0)
        assert threading.active_count() - before <= 1 + workers + 1
    finally:
        for client in clients:
            client.close()
        listener.stop(server)
    wait_until(lambda: threading.active_count() - before <= workers)  # the loop thread is gone


def test_300_stalled_connections_keep_64_sockets_and_no_thread():
    """The hardening issue's case: 300 half-sent requests. The oldest are closed beyond max_connections."""
    before = threading.active_count()
    server = listener.serve(filled_registry(), '127.0.0.1:0', timeout=30)
    port = server.server_address[1]
    clients = half_sent(port, 300)
    try:
        wait_until(lambda: server.pending() == listener.MAX_CONNECTIONS)
        for client in clients[:300 - listener.MAX_CONNECTIONS]:
            assert closed_by_server(client)  # long before their 30 s deadline
        assert get('http://127.0.0.1:{0}/metrics'.format(port), timeout=5)[0] == 200
        assert threading.active_count() - before <= 1 + listener.WORKERS + 1
    finally:
        for client in clients:
            client.close()
        listener.stop(server)


def test_a_trickling_client_is_cut_at_the_deadline_not_per_read():
    server = listener.serve(filled_registry(), '127.0.0.1:0', timeout=1.0)
    client = socket.create_connection(('127.0.0.1', server.server_address[1]), timeout=10)
    started = time.monotonic()
    try:
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for byte in b'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ' + b'a' * 100:
                client.send(bytes([byte]))
                time.sleep(0.1)  # well inside any per-read timeout
                assert time.monotonic() - started < 5
    finally:
        client.close()
        listener.stop(server)
