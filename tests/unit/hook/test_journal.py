"""Unit tests for pve_hooks.hook.journal, against a real AF_UNIX datagram socket."""

import socket

from pve_hooks.hook import journal as journal_native


def _parse(data):
    fields = {}
    while data:
        line, _, rest = data.partition(b'\n')
        if b'=' in line:
            key, _, value = line.partition(b'=')
            fields[key.decode()] = value.decode()
            data = rest
        else:
            size = int.from_bytes(rest[:8], 'little')
            fields[line.decode()] = rest[8:8 + size].decode()
            assert rest[8 + size:9 + size] == b'\n'
            data = rest[9 + size:]
    return fields


def test_encode_simple_and_multiline_values():
    data = journal_native.encode({'MESSAGE': 'two\nlines', 'PRIORITY': 3, 'VMID': 100, 'SKIP': None})
    assert _parse(data) == {'MESSAGE': 'two\nlines', 'PRIORITY': '3', 'VMID': '100'}


def test_send_to_a_listening_socket(tmp_path):
    path = str(tmp_path / 'journal.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        assert journal_native.send({'MESSAGE': 'hello', 'PRIORITY': 6}, path) is True
        assert _parse(server.recv(65536)) == {'MESSAGE': 'hello', 'PRIORITY': '6'}
    finally:
        server.close()


def test_missing_socket_is_fine(tmp_path):
    assert journal_native.send({'MESSAGE': 'x'}, str(tmp_path / 'missing.sock')) is False


def test_a_full_queue_never_blocks(tmp_path):
    path = str(tmp_path / 'journal.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)  # nobody reads: the queue fills up
    try:
        results = [journal_native.send({'MESSAGE': 'x' * 1000}, path) for _ in range(2000)]
        assert results[0] is True and results[-1] is False
    finally:
        server.close()
