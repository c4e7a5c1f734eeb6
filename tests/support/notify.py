"""A real sd_notify listener for tests: an AF_UNIX datagram socket and what it received."""

import socket

import pytest


@pytest.fixture
def listener(tmp_path):
    """Yield (path, socket) of a bound datagram socket to pass as NOTIFY_SOCKET."""
    path = str(tmp_path / 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def received(sock):
    """Return the messages waiting on ``sock`` (waits 0.2 s for the last one)."""
    messages = []
    sock.settimeout(0.2)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except socket.timeout:
        pass
    return messages
