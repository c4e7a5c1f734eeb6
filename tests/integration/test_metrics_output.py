"""Metrics on real files and over loopback HTTP: the textfile writer and the /metrics server."""

import logging
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pve_hooks.daemon.delivery import PassResult
from pve_hooks.observe import metrics
from pve_hooks.observe import listener
from tests.support.snapshot import snapshot


def families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def delivered(registry, accepted):
    result = PassResult()
    result.accepted = accepted
    registry.count_delivery(result)


def filled_registry(current=None):
    """Return a Metrics with 5 deliveries; its snapshot is ``current['snapshot']`` (default: depth 2)."""
    current = current if current is not None else {}
    current.setdefault('snapshot', snapshot(outbox={'depth': 2}))
    registry = metrics.Metrics(lambda: current['snapshot'])
    delivered(registry, 5)
    result = PassResult()
    result.latencies = [0.12]
    registry.count_delivery(result)
    return registry


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


def get(url, method='GET', timeout=10):
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers['Content-Type'], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers['Content-Type'], error.read().decode()


@pytest.fixture
def server():
    current = {}
    registry = filled_registry(current)
    server = listener.serve(registry, '127.0.0.1:0')
    yield current, server, 'http://127.0.0.1:{0}'.format(server.server_address[1])
    listener.stop(server)


def test_serves_metrics_over_http(server):
    current, _, base = server
    status, content_type, body = get(base + '/metrics')
    assert status == 200
    assert content_type == 'text/plain; version=0.0.4; charset=utf-8'
    assert families(body)['pve_hooks_outbox_depth'].samples[0].value == 2
    current['snapshot'] = snapshot(outbox={'depth': 9})
    assert families(get(base + '/metrics')[2])['pve_hooks_outbox_depth'].samples[0].value == 9


def test_head_has_the_headers_and_no_body(server):
    request = urllib.request.Request(server[2] + '/metrics', method='HEAD')
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        assert int(answer.headers['Content-Length']) > 1000
        assert answer.read() == b''


def test_serves_only_metrics(server):
    status, _, body = get(server[2] + '/')
    assert status == 404
    assert 'only /metrics' in body
    assert get(server[2] + '/metrics', method='POST')[0] == 501


def test_serve_is_off_without_listen():
    assert listener.serve(metrics.Metrics(), None) is None
    listener.stop(None)


def test_address_in_use_logs_an_error_and_returns_none(caplog):
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen(1)
    listen = '127.0.0.1:{0}'.format(busy.getsockname()[1])
    try:
        with caplog.at_level(logging.ERROR, logger='pve_hooks.observe.metrics'):
            assert listener.serve(metrics.Metrics(), listen) is None
    finally:
        busy.close()
    assert caplog.records[0].getMessage().startswith('cannot serve metrics on {0} (Address already in use)'.format(
        listen))


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


def test_all_workers_busy_answers_503_at_once():
    release, entered = threading.Event(), threading.Event()

    def slow_snapshot():
        entered.set()
        release.wait(10)
        return snapshot()

    server = listener.serve(metrics.Metrics(slow_snapshot), '127.0.0.1:0', workers=1)
    url = 'http://127.0.0.1:{0}/metrics'.format(server.server_address[1])
    first = {}
    thread = threading.Thread(target=lambda: first.update(answer=get(url)))
    thread.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        assert get(url)[0] == 503
        assert time.monotonic() - started < 2
    finally:
        release.set()
        thread.join(10)
        listener.stop(server)
    assert first['answer'][0] == 200


def test_a_broken_page_answers_500_and_logs(caplog):
    def broken():
        raise RuntimeError('bug')

    server = listener.MetricsServer('127.0.0.1', 0, {'/metrics': broken})
    server.start()
    try:
        with caplog.at_level(logging.ERROR, logger='pve_hooks.observe.metrics'):
            assert get('http://127.0.0.1:{0}/metrics'.format(server.server_address[1]))[0] == 500
            assert get('http://127.0.0.1:{0}/metrics'.format(server.server_address[1]))[0] == 500
    finally:
        server.shutdown()
    assert [record.getMessage() for record in caplog.records] == ['metrics request from 127.0.0.1 failed'] * 2


def test_stop_closes_the_listener():
    server = listener.serve(metrics.Metrics(), '127.0.0.1:0')
    port = server.server_address[1]
    listener.stop(server)
    assert not server.thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(('127.0.0.1', port), timeout=5)


def test_a_non_loopback_address_is_served_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        local = listener.serve(metrics.Metrics(), '127.0.0.1:0')
        listener.stop(local)
        assert caplog.records == []
        wide = listener.serve(metrics.Metrics(), '0.0.0.0:0')
    try:
        assert get('http://127.0.0.1:{0}/metrics'.format(wide.server_address[1]))[0] == 200
    finally:
        listener.stop(wide)
    assert [record.getMessage() for record in caplog.records] == [
        'metrics.listen 0.0.0.0:0 is not a loopback address: whoever reaches this node on port {0} can read '
        '/metrics, without authentication; listen on 127.0.0.1 or filter the port'.format(wide.server_address[1])]


def test_serves_on_ipv6_loopback(caplog):
    if not socket.has_ipv6:
        pytest.skip('no IPv6 in this Python')
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        server = listener.serve(metrics.Metrics(), '[::1]:0')
    if server is None:
        pytest.skip('no IPv6 loopback here: {0}'.format(caplog.records[0].getMessage()))
    try:
        assert get('http://[::1]:{0}/metrics'.format(server.server_address[1]))[0] == 200
        assert caplog.records == []
    finally:
        listener.stop(server)
