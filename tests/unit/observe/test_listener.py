"""observe/listener.py: the address it is given, and what it answers over loopback HTTP.

Each case takes milliseconds on 127.0.0.1. What takes real seconds or
hundreds of stalled sockets (deadlines, the connection and thread bounds)
is in tests/integration/test_metrics_output.py.
"""

import logging
import socket
import threading
import time
import urllib.request

import pytest

from pve_hooks.observe import listener, metrics
from tests.support.metrics import families, filled_registry, get
from tests.support.snapshot import snapshot


# -- the address -----------------------------------------------------------------------------------


@pytest.mark.parametrize('listen, expected', [('127.0.0.1:9959', ('127.0.0.1', 9959)),
                                              ('[::1]:9959', ('::1', 9959)), ('localhost:1', ('localhost', 1))])
def test_parse_listen(listen, expected):
    assert listener.parse_listen(listen) == expected


@pytest.mark.parametrize('listen', ['9959', ':9959', '127.0.0.1:', '127.0.0.1:x'])
def test_parse_listen_rejects(listen):
    with pytest.raises(ValueError):
        listener.parse_listen(listen)


@pytest.mark.parametrize('address, loopback', [('127.0.0.1', True), ('127.0.0.2', True), ('::1', True),
                                               ('::ffff:127.0.0.1', True), ('0.0.0.0', False), ('::', False),
                                               ('192.168.1.10', False), ('fe80::1%eth0', False),
                                               ('localhost', False)])
def test_is_loopback_judges_the_bound_address(address, loopback):
    assert listener.is_loopback(address) is loopback


# -- serving -------------------------------------------------------------------------------------


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
        with caplog.at_level(logging.ERROR, logger='pve_hooks.observe.listener'):
            assert listener.serve(metrics.Metrics(), listen) is None
    finally:
        busy.close()
    assert caplog.records[0].getMessage().startswith('cannot serve metrics on {0} (Address already in use)'.format(
        listen))


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
        with caplog.at_level(logging.ERROR, logger='pve_hooks.observe.listener'):
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
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.listener'):
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
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.listener'):
        server = listener.serve(metrics.Metrics(), '[::1]:0')
    if server is None:
        pytest.skip('no IPv6 loopback here: {0}'.format(caplog.records[0].getMessage()))
    try:
        assert get('http://[::1]:{0}/metrics'.format(server.server_address[1]))[0] == 200
        assert caplog.records == []
    finally:
        listener.stop(server)
