"""Send one record to journald over its native protocol, with the standard library only.

Used by the hookscript (no ``logging``, no python3-systemd on its hot path).
Protocol: one AF_UNIX datagram to ``/run/systemd/journal/socket`` holding
``KEY=value\\n`` lines; a value with a newline is sent as ``KEY\\n`` + its
length (64-bit little endian) + the value + ``\\n``. See systemd's
"Native Journal Protocol" documentation.
"""

import _socket

SOCKET = '/run/systemd/journal/socket'
CRITICAL, ERROR, WARNING, INFO = 2, 3, 4, 6


def encode(fields):
    """Given {NAME: value}, return the datagram (values str/int; None values are left out)."""
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        data = str(value).encode('utf-8', 'surrogateescape')
        key = name.encode('ascii')
        if b'\n' in data:
            parts.append(key + b'\n' + len(data).to_bytes(8, 'little') + data + b'\n')
        else:
            parts.append(key + b'=' + data + b'\n')
    return b''.join(parts)


def send(fields, socket_path=SOCKET):
    """Send one journal record; return True if it was handed to journald.

    Never blocks: a missing socket, a full queue (journald stuck) or any
    socket error returns False (the caller has already written errors to
    stderr; journald is best effort here).
    """
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        # MSG_DONTWAIT: a stuck journald (full socket queue) must never make the hookscript wait.
        sock.sendto(encode(fields), _socket.MSG_DONTWAIT, socket_path)
        return True
    except OSError:
        return False
    finally:
        sock.close()
