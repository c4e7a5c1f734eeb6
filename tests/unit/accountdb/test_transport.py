"""The transport: the total deadline per request, the bearer token that nothing replaces, URLs fit for logs.

The deadline and header tests talk to a raw-socket server on 127.0.0.1
(tests/support/rawhttp.py): the bytes must really cross urllib3 and
http.client, whose behaviour differs between Debian 12 and current PyPI.
"""

import json
import os
import time

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb import errors
from pve_hooks.accountdb import transport
from pve_hooks.config import loader as config
from tests.support.rawhttp import RawServer, raw, response, trickle

OK = response(200, [('Content-Type', 'application/json')], b'{"status": "ok"}')


def make_client(tmp_path, url, *overrides, metrics=None):
    token = tmp_path / 'token'
    token.write_text('tok-' + 'a' * 28 + '\n')
    os.chmod(str(token), 0o600)
    settings = config.load(env={}, require_file=False, overrides=[
        'node=pve1', 'accountdb.url=' + url, 'accountdb.token_file={0}'.format(token)] + list(overrides))
    return accountdb.Client(settings, metrics=metrics)


@pytest.fixture
def server():
    with RawServer() as running:
        yield running


@pytest.mark.parametrize('where', ['headers', 'body'])
def test_a_trickling_server_costs_at_most_the_total_deadline(tmp_path, server, where):
    head = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n'
    if where == 'headers':
        server.add('/', trickle(head + b'x' * 200, every=0.2, stop=server.stopped))
    else:
        server.add('/', lambda sock, request: (sock.sendall(head), trickle(b'{' * 200, 0.2, server.stopped)(
            sock, request)))
    ticks = []

    class Metrics:
        def on_request(self, *args):
            pass

        def on_wait(self):
            ticks.append(time.monotonic())

    client = make_client(tmp_path, server.url, 'accountdb.timeout.total=2', 'accountdb.timeout.read=1',
                         metrics=Metrics())
    started = time.monotonic()
    with pytest.raises(errors.TransientError, match='accountdb.timeout.total'):
        client.health()
    took = time.monotonic() - started
    client.close()
    assert took < 2 + 1.5, took
    assert len(ticks) >= 1   # the daemon's watchdog is fed while it waits


def test_the_bearer_token_wins_over_netrc_and_url_userinfo(tmp_path, server, monkeypatch):
    netrc = tmp_path / 'netrc'
    netrc.write_text('machine 127.0.0.1 login intruder password hunter2\n')
    os.chmod(str(netrc), 0o600)
    monkeypatch.setenv('NETRC', str(netrc))
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / '.netrc').write_text(netrc.read_text())
    os.chmod(str(tmp_path / '.netrc'), 0o600)
    server.add('/', raw(OK))
    client = make_client(tmp_path, server.url)
    assert client.health() == {'status': 'ok'}
    assert server.seen[-1][2]['authorization'] == 'Bearer tok-' + 'a' * 28


def test_credentials_in_the_url_are_refused_without_echoing_them(tmp_path):
    with pytest.raises(config.ConfigError) as raised:
        make_client(tmp_path, 'https://agent:hunter2@adb.example')
    assert 'credentials in the URL' in str(raised.value) and 'hunter2' not in str(raised.value)


@pytest.mark.parametrize('url, shown', [
    ('https://adb.example:8443/base?key=secret#frag', 'https://adb.example:8443/base'),
    ('https://u:p@adb.example/x', 'https://adb.example/x'),
    ('http://[::1]:80/', 'http://[::1]:80/'),
])
def test_display_url_drops_userinfo_and_query(url, shown):
    assert transport.display_url(url) == shown


@pytest.mark.parametrize('url, plain', [
    ('http://adb.example', True), ('http://10.0.0.5:8080', True), ('https://adb.example', False),
    ('http://127.0.0.1:8765', False), ('http://localhost:1', False), ('http://[::1]:8', False),
])
def test_plain_http_to_a_remote_host_is_recognised(url, plain):
    assert transport.is_plain_http_to_remote(url) is plain


def test_a_plain_http_url_to_a_remote_host_is_warned_about(tmp_path, caplog):
    make_client(tmp_path, 'http://adb-warned.example.com')
    make_client(tmp_path, 'http://adb-warned.example.com')
    assert sum('plain http://' in record.getMessage() for record in caplog.records) == 1


HOSTILE_HEADERS = [
    ('Retry-After of 400 digits', response(503, [('Retry-After', '9' * 400)])),
    ('Retry-After of 5000 digits', response(503, [('Retry-After', '9' * 5000)])),
    ('Content-Length of 5000 digits', response(200, [('Content-Type', 'application/json'),
                                                     ('Content-Length', '9' * 5000)], b'{}')),
    ('two Content-Lengths', response(200, [('Content-Length', '2'), ('Content-Length', '7')], b'{}')),
    ('a 70 kB header line', response(200, [('X-Big', 'a' * 70000)], b'{}')),
    ('200 headers', response(200, [('X-{0}'.format(n), 'v') for n in range(200)], b'{}')),
    ('JSON nested 100000 deep', response(200, [('Content-Type', 'application/json')], b'[' * 100000)),
    # A 400 whose body is not AccountDB's JSON error shape: something in between refused the request.
    ('error JSON nested 100000 deep', response(400, [('Content-Type', 'application/json')],
                                               b'{"error":' + b'[' * 100000), errors.CONFIGURATION),
    ('a status line that is not HTTP', b'SSH-2.0-OpenSSH_9.2\r\n'),
    ('a status of 99999', b'HTTP/1.1 99999 X\r\nContent-Length: 0\r\n\r\n'),
    ('chunked body with a chunk size of 5000 digits',
     b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n'
     + b'f' * 5000 + b'\r\n{}\r\n0\r\n\r\n'),
    ('gzip that is not gzip', response(200, [('Content-Type', 'application/json'), ('Content-Encoding', 'gzip')],
                                       b'not gzip at all')),
]


@pytest.mark.parametrize('answer, kind', [(item[1], item[2] if len(item) > 2 else errors.TRANSIENT)
                                          for item in HOSTILE_HEADERS], ids=[item[0] for item in HOSTILE_HEADERS])
def test_malformed_answers_end_in_the_taxonomy(tmp_path, server, answer, kind):
    server.add('/', raw(answer))
    client = make_client(tmp_path, server.url, 'accountdb.timeout.total=5')
    with pytest.raises(errors.AccountDBError) as raised:
        client.send_events('pve1', [{'event_id': 'e1'}])
    assert raised.value.kind == kind, raised.value
    assert '\n' not in str(raised.value)
    client.close()


def test_a_proxy_html_400_is_configuration_and_accountdb_json_400_is_rejection(tmp_path, server):
    server.add('/', raw(response(400, [('Content-Type', 'text/html')], b'<html>Request blocked by WAF</html>')),
               count=1)
    server.add('/', raw(response(413, [('Content-Type', 'application/json')], b'{"detail": "too large"}')),
               count=1)
    server.add('/', raw(response(422, [('Content-Type', 'application/json')],
                                 json.dumps({'error': 'vmid must be an integer'}).encode())), count=1)
    client = make_client(tmp_path, server.url)
    for expected in (errors.CONFIGURATION, errors.CONFIGURATION, errors.REJECTED):
        with pytest.raises(errors.AccountDBError) as raised:
            client.send_events('pve1', [{'event_id': 'e1'}])
        assert raised.value.kind == expected, raised.value


def test_a_tls_handshake_that_never_finishes_costs_at_most_the_total_deadline(tmp_path):
    """The socket is not the connection's yet while TLS shakes hands: the deadline cuts the TCP socket."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(4)
    accepted = []
    stop = threading.Event()

    def accept():   # accepts and never answers the ClientHello
        while not stop.is_set():
            try:
                listener.settimeout(0.2)
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = make_client(tmp_path, 'https://127.0.0.1:{0}'.format(listener.getsockname()[1]),
                         'accountdb.timeout.total=2', 'accountdb.timeout.read=30', 'accountdb.timeout.connect=30')
    started = time.monotonic()
    try:
        with pytest.raises(errors.TransientError):
            client.health()
        took = time.monotonic() - started
    finally:
        client.close()
        stop.set()
        thread.join(2)
        for sock in accepted:
            sock.close()
        listener.close()
    assert accepted and took < 2 + 1.5, took   # not the 30 s read timeout
