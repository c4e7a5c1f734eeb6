"""Metrics on real files and over loopback HTTP: the textfile writer and the /metrics server."""

import logging
import os
import socket
import stat
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pve_hooks.daemon.delivery import PassResult
from pve_hooks.observe import metrics
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


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers['Content-Type'], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers['Content-Type'], error.read().decode()


@pytest.fixture
def server():
    current = {}
    registry = filled_registry(current)
    server = metrics.serve(registry, '127.0.0.1:0')
    yield current, server, 'http://127.0.0.1:{0}'.format(server.server_address[1])
    metrics.stop(server)


def test_serves_metrics_over_http(server):
    current, _, base = server
    status, content_type, body = get(base + '/metrics')
    assert status == 200
    assert content_type == 'text/plain; version=0.0.4; charset=utf-8'
    assert families(body)['pve_hooks_outbox_depth'].samples[0].value == 2
    current['snapshot'] = snapshot(outbox={'depth': 9})
    assert families(get(base + '/metrics')[2])['pve_hooks_outbox_depth'].samples[0].value == 9


def test_serves_only_metrics(server):
    status, _, body = get(server[2] + '/')
    assert status == 404
    assert 'only /metrics' in body


def test_serve_is_off_without_listen():
    assert metrics.serve(metrics.Metrics(), None) is None
    metrics.stop(None)


def test_address_in_use_logs_an_error_and_returns_none(caplog):
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen(1)
    listen = '127.0.0.1:{0}'.format(busy.getsockname()[1])
    try:
        with caplog.at_level(logging.ERROR, logger='pve_hooks.observe.metrics'):
            assert metrics.serve(metrics.Metrics(), listen) is None
    finally:
        busy.close()
    assert caplog.records[0].getMessage().startswith('cannot serve metrics on {0} (Address already in use)'.format(
        listen))
