"""A misbehaving HTTP server on 127.0.0.1 that writes raw bytes: what no well-behaved library would send.

The reference AccountDB (pve_hooks_devserver) speaks correct HTTP through
http.server; the hostile-input rows need answers http.server cannot make:
a Retry-After of 5,000 digits, a Content-Length of thousands of digits,
headers trickled a byte a second. :class:`RawServer` reads each request
itself and asks ``rules`` what to do; a request no rule claims is
forwarded to ``upstream`` (the reference AccountDB) with
``Connection: close``, so a test can fault only some requests and still
check that every event arrives.

    with RawServer(upstream=accountdb.url) as server:
        server.add('/api/v1/events', raw(b'HTTP/1.1 503 x\\r\\nRetry-After: ' + b'9' * 5000 + b'\\r\\n...'), count=3)
        node = make_node(..., settings={'accountdb.url': server.url})

A rule's action is ``action(sock, request)``: write to the socket what it
likes; the connection is closed afterwards. ``request`` is a dict with
method, path, headers (lower-case names) and body.
"""

import socket
import threading
import time
import urllib.parse


def raw(data):
    """Return an action that sends ``data`` (bytes) and closes."""
    def send(sock, request):
        sock.sendall(data)
    return send


def response(status, headers=(), body=b'', reason='X'):
    """Return the bytes of an HTTP/1.1 response with ``headers`` [(name, value)] sent as given (no checks)."""
    head = ['HTTP/1.1 {0} {1}'.format(status, reason)] + ['{0}: {1}'.format(name, value) for name, value in headers]
    if not any(name.lower() in ('content-length', 'transfer-encoding') for name, _ in headers):
        head.append('Content-Length: {0}'.format(len(body)))
    head.append('Connection: close')
    return ('\r\n'.join(head) + '\r\n\r\n').encode('latin-1') + body


def trickle(data, every=1.0, stop=None):
    """Return an action that sends ``data`` one byte every ``every`` seconds (until the peer goes away)."""
    def send(sock, request):
        for index in range(len(data)):
            if stop is not None and stop.is_set():
                return
            try:
                sock.sendall(data[index:index + 1])
            except OSError:
                return
            time.sleep(every)
    return send


class RawServer:
    """Listens on 127.0.0.1 (an ephemeral port); ``url`` is its base URL. Use as a context manager."""

    def __init__(self, upstream=None):
        self.upstream = urllib.parse.urlsplit(upstream) if upstream else None
        self.rules = []          # [path prefix, action, remaining count or None]
        self.seen = []           # (method, path, headers) of every request
        self.faulted = 0
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = 'http://127.0.0.1:{0}'.format(self.port)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def add(self, prefix, action, count=None):
        """Apply ``action`` to the next ``count`` requests (all if None) whose path starts with ``prefix``."""
        with self._lock:
            self.rules.append([prefix, action, count])

    def clear(self):
        with self._lock:
            self.rules = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.stopped.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _take(self, path):
        with self._lock:
            for rule in self.rules:
                if path.startswith(rule[0]) and (rule[2] is None or rule[2] > 0):
                    if rule[2] is not None:
                        rule[2] -= 1
                    self.faulted += 1
                    return rule[1]
        return None

    def _serve(self, sock):
        try:
            sock.settimeout(30)
            request = _read_request(sock)
            if request is None:
                return
            self.seen.append((request['method'], request['path'], request['headers']))
            action = self._take(request['path'])
            if action is not None:
                action(sock, request)
            elif self.upstream is not None:
                self._forward(sock, request)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _forward(self, sock, request):
        upstream = socket.create_connection((self.upstream.hostname, self.upstream.port), timeout=30)
        try:
            lines = [request['head_lines'][0]] + [line for line in request['head_lines'][1:]
                                                  if not line.lower().startswith(b'connection:')]
            upstream.sendall(b'\r\n'.join(lines + [b'Connection: close', b'', b'']) + request['body'])
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    return
                sock.sendall(chunk)
        finally:
            upstream.close()


def _read_request(sock):
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b'\r\n\r\n', 1)
    lines = head.split(b'\r\n')
    method, target = lines[0].decode('latin-1').split(' ')[:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.decode('latin-1').partition(':')
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get('content-length', '0') or 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return {'method': method, 'path': urllib.parse.urlsplit(target).path, 'headers': headers, 'body': body,
            'head_lines': lines}
