"""The reference AccountDB's bounds: token before body, bounded connections (503 beyond), idle timeout."""

import socket
import threading
import time

import pytest

from pve_hooks_devserver import handler as handler_mod
from pve_hooks_devserver.request import TokenFile
from pve_hooks_devserver.server import Server
from pve_hooks_devserver.store import Store

TOKEN = 'a' * 40


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(**kwargs):
        token = tmp_path / 'token'
        token.write_text(TOKEN + '\n')
        token.chmod(0o600)
        server = Server(('127.0.0.1', 0), Store(str(tmp_path / 'db.sqlite')), TokenFile(str(token)), **kwargs)
        threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
        server.store.close()


def _connect(server):
    return socket.create_connection(server.server_address[:2], timeout=5)


def _head(sock):
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_request_without_the_token_is_refused_before_its_body_is_read(make_server):
    server = make_server()
    sock = _connect(server)
    sock.sendall(b'POST /api/v1/nodes/pve1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                 b'Content-Length: 60000000\r\n\r\n')   # announces 60 MB and sends none of it
    started = time.monotonic()
    answer = _head(sock)
    assert answer.startswith(b'HTTP/1.1 401 ') and b'Connection: close' in answer
    assert time.monotonic() - started < 2
    sock.close()


def test_connections_beyond_the_bound_get_503_and_the_server_stays_usable(make_server):
    server = make_server(max_connections=3)
    idle = [_connect(server) for _ in range(3)]
    time.sleep(0.3)   # accepted and holding their threads
    extra = _connect(server)
    answer = _head(extra)
    assert answer.startswith(b'HTTP/1.1 503 ') and b'Retry-After: 1' in answer
    assert server.busy_refused == 1
    for sock in idle + [extra]:
        sock.close()
    time.sleep(0.3)
    sock = _connect(server)
    sock.sendall(b'GET /api/v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ' + TOKEN.encode() +
                 b'\r\n\r\n')
    assert _head(sock).startswith(b'HTTP/1.1 200 ')
    sock.close()


def test_a_silent_connection_is_closed_after_the_idle_timeout(make_server, monkeypatch):
    monkeypatch.setattr(handler_mod.Handler, 'timeout', 0.5)
    server = make_server(max_connections=1)
    sock = _connect(server)
    sock.sendall(b'GET /api/v1/health HTTP/1.1\r\n')   # half a request, then silence
    started = time.monotonic()
    assert sock.recv(100) == b''                       # closed by the server
    assert time.monotonic() - started < 3
    time.sleep(0.2)
    again = _connect(server)                            # its slot is free again
    again.sendall(b'GET /api/v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ' + TOKEN.encode() +
                  b'\r\n\r\n')
    assert _head(again).startswith(b'HTTP/1.1 200 ')
    again.close()


def test_the_idle_timeout_is_short():
    assert handler_mod.Handler.timeout == handler_mod.IDLE_TIMEOUT <= 10
