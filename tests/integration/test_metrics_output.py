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

from pve_hooks.observe import metrics


def families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def filled_registry():
    registry = metrics.Registry()
    registry.inc(metrics.EVENTS_DELIVERED, 5)
    registry.set(metrics.OUTBOX_DEPTH, 2)
    registry.observe(metrics.DELIVERY_LATENCY, 0.12)
    return registry


def test_textfile_is_written_readable_and_parses(tmp_path):
    path = tmp_path / 'pve-hooks.prom'
    assert metrics.write_textfile(filled_registry(), str(path)) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    parsed = families(path.read_text())
    assert parsed['pve_hooks_events_delivered'].samples[0].value == 5
    assert os.listdir(tmp_path) == ['pve-hooks.prom']


def test_textfile_replaces_the_old_file(tmp_path):
    path = tmp_path / 'pve-hooks.prom'
    path.write_text('old garbage that is not prometheus format {{{\n')
    registry = filled_registry()
    metrics.write_textfile(registry, str(path))
    registry.inc(metrics.EVENTS_DELIVERED)
    metrics.write_textfile(registry, str(path))
    assert families(path.read_text())['pve_hooks_events_delivered'].samples[0].value == 6
    assert os.listdir(tmp_path) == ['pve-hooks.prom']


def test_reader_never_sees_a_partial_file(tmp_path):
    """node_exporter reads while the daemon writes: every read must be a whole exposition."""
    path = tmp_path / 'pve-hooks.prom'
    registry = filled_registry()
    for number in range(200):  # make the file a few tens of KB
        registry.set(metrics.HEALTH_STATUS, number % 4, check='check-{0:03d}'.format(number))
    metrics.write_textfile(registry, str(path))
    expected = len(families(path.read_text()))
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            registry.inc(metrics.EVENTS_DELIVERED)
            metrics.write_textfile(registry, str(path))

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
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        assert metrics.write_textfile(filled_registry(), str(path)) is False
        assert metrics.write_textfile(filled_registry(), str(path)) is False
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith('cannot write metrics file {0} (No such file or directory)'.format(path))
    path.parent.mkdir()
    assert metrics.write_textfile(filled_registry(), str(path)) is True
    path.parent.joinpath('pve-hooks.prom').unlink()
    path.parent.rmdir()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        assert metrics.write_textfile(filled_registry(), str(path)) is False
    assert len(caplog.records) == 1  # it broke again after working: say so again


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers['Content-Type'], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers['Content-Type'], error.read().decode()


@pytest.fixture
def server():
    registry = filled_registry()
    server = metrics.serve(registry, '127.0.0.1:0')
    yield registry, server, 'http://127.0.0.1:{0}'.format(server.server_address[1])
    metrics.stop(server)


def test_serves_metrics_over_http(server):
    registry, _, base = server
    status, content_type, body = get(base + '/metrics')
    assert status == 200
    assert content_type == 'text/plain; version=0.0.4; charset=utf-8'
    assert families(body)['pve_hooks_outbox_depth'].samples[0].value == 2
    registry.set(metrics.OUTBOX_DEPTH, 9)
    assert families(get(base + '/metrics')[2])['pve_hooks_outbox_depth'].samples[0].value == 9


def test_serves_only_metrics(server):
    status, _, body = get(server[2] + '/')
    assert status == 404
    assert 'only /metrics' in body


def test_serve_is_off_without_listen():
    assert metrics.serve(metrics.Registry(), None) is None
    metrics.stop(None)


def test_address_in_use_logs_an_error_and_returns_none(caplog):
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen(1)
    listen = '127.0.0.1:{0}'.format(busy.getsockname()[1])
    try:
        with caplog.at_level(logging.ERROR, logger='pve_hooks.observe.metrics'):
            assert metrics.serve(metrics.Registry(), listen) is None
    finally:
        busy.close()
    assert caplog.records[0].getMessage().startswith('cannot serve metrics on {0} (Address already in use)'.format(
        listen))
