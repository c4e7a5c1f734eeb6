"""The daemon's HTTP listener (``metrics.listen``): /metrics, bounded against slow and idle clients.

Our own small server rather than prometheus_client's ``start_http_server``
(a ThreadingHTTPServer with no socket timeout and no bound on threads: 300
half-sent requests leave 300 threads, forever; and it serves only its
registry, while this listener is also to host ``/health`` and a landing
page). It reads request heads in one thread without blocking, gives each
connection ``timeout`` (10 s) from accept to send its request, keeps at most
``max_connections`` (64) such connections (closing the oldest), answers with
``workers`` (4) threads and sends 503 when they are all busy, and warns when
``metrics.listen`` is not a loopback address. A stalled client costs a
socket, never a thread. Pages are rendered by their owners (``/metrics``:
observe.metrics.Metrics.render, prometheus_client's exposition).
"""

import concurrent.futures
import http.server
import io
import ipaddress
import logging
import selectors
import socket
import threading
import time

from pve_hooks.observe import metrics as metrics_mod

log = logging.getLogger(__name__)


def parse_listen(listen):
    """Given 'host:port' ('[::1]:9959' for IPv6), return (host, port). Raise ValueError if malformed."""
    host, sep, port = listen.rpartition(':')
    if not sep or not host or not port.isdigit():
        raise ValueError('expected address:port, got {0!r}'.format(listen))
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return host, int(port)


def is_loopback(address):
    """Given an address as bound ('127.0.0.1', '::1', '0.0.0.0', ...), return True if only this host reaches it."""
    try:
        parsed = ipaddress.ip_address(address.split('%', 1)[0])
    except ValueError:
        return False
    return (getattr(parsed, 'ipv4_mapped', None) or parsed).is_loopback


# The /metrics listener. Why it is ours and not prometheus_client's: see the module docstring.
TIMEOUT = 10.0        # seconds a client has to send its request head, and again to take the answer
WORKERS = 4           # requests answered at once; one thread each
MAX_CONNECTIONS = 64  # connections still sending their request; the oldest is closed to make room
MAX_HEAD = 16384      # bytes of request line and headers
BACKLOG = 128         # connections the kernel queues before accept (a full queue delays new ones by 1 s)
NOT_FOUND = b'only /metrics is served here\n'
BUSY = (b'HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n'
        b'Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n')
FAILED = b'HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'


class _Request(http.server.BaseHTTPRequestHandler):
    """One request answered in memory: the request ``head`` (bytes) in, :attr:`response` (bytes) out.

    http.server parses the request and writes the answer; the server does
    all socket I/O itself, against its deadlines. ``routes``: {path: a
    callable returning (body bytes, content type)}. GET and HEAD only (other
    methods get 501); a path not in ``routes`` gets 404.
    """

    def __init__(self, head, client_address, routes):  # no socket: BaseRequestHandler.__init__ is not wanted
        self.client_address = client_address
        self.routes = routes
        self.rfile = io.BytesIO(head)
        self.wfile = io.BytesIO()
        self.close_connection = True
        self.handle_one_request()
        self.response = self.wfile.getvalue()

    def do_GET(self):
        page = self.routes.get(self.path.split('?', 1)[0])
        if page is None:
            self._reply(404, NOT_FOUND, 'text/plain; charset=utf-8')
        else:
            self._reply(200, *page())

    do_HEAD = do_GET

    def version_string(self):
        return 'pve-hooks'  # the Server header: no Python version for the network to read

    def _reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's name)
        log.debug('metrics request from %s: %s', self.client_address[0], format % args)


class _Pending:
    """A connection still sending its request head."""

    __slots__ = ('sock', 'address', 'deadline', 'data')

    def __init__(self, sock, address, deadline):
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.data = bytearray()


class MetricsServer:
    """A small HTTP/1.0 server for GET/HEAD on ``routes`` ({path: callable returning (body, content type)}).

    One thread (:meth:`serve_forever`) accepts connections and reads request
    heads without blocking, each against a deadline of ``timeout`` seconds
    from its accept; a connection that has not sent its whole head by then
    is closed, and while ``max_connections`` are still sending, the oldest
    one is closed to make room for a new one. A complete request goes to one
    of ``workers`` threads, which renders the page and writes it (again
    within ``timeout`` seconds); when all are busy the request gets 503 at
    once. So the server runs 1 + ``workers`` threads whatever clients do,
    and a stalled client costs a socket for ``timeout`` seconds, never a
    thread. Raise OSError (or socket.gaierror) if ``host``:``port`` cannot
    be bound.
    """

    def __init__(self, host, port, routes, timeout=TIMEOUT, workers=WORKERS, max_connections=MAX_CONNECTIONS):
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(sockaddr)
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.routes = routes
        self.timeout = timeout
        self.max_connections = max_connections
        self.thread = None
        self._pending = {}  # socket -> _Pending, in accept order (so oldest deadline first)
        self._slots = threading.BoundedSemaphore(workers)
        self._workers = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='metrics-http-worker')
        self._wake, self._waker = socket.socketpair()
        self._stopping = False
        self._accept_failing = False

    def start(self):
        """Run :meth:`serve_forever` in a daemon thread. Return None."""
        self.thread = threading.Thread(target=self.serve_forever, name='metrics-http', daemon=True)
        self.thread.start()

    def pending(self):
        """Return how many connections are still sending their request head."""
        return len(self._pending)

    def serve_forever(self):
        """Accept, read and hand out requests until :meth:`shutdown`. Return None."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake, selectors.EVENT_READ)
            while not self._stopping:
                now = time.monotonic()
                while self._pending and next(iter(self._pending.values())).deadline <= now:
                    self._drop(selector, next(iter(self._pending)))
                wait = None
                if self._pending:
                    wait = max(0.0, next(iter(self._pending.values())).deadline - now)
                for key, _ in selector.select(wait):
                    if key.fileobj is self.socket:
                        self._accept(selector)
                    elif key.fileobj is not self._wake:
                        self._read(selector, key.fileobj)
            for sock in list(self._pending):
                self._drop(selector, sock)

    def _accept(self, selector):
        for _ in range(self.max_connections):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. out of file descriptors: let some connections finish first
                if not self._accept_failing:
                    log.warning('metrics listener cannot accept connections (%s); it tries again every 0.1 s',
                                getattr(error, 'strerror', None) or error)
                self._accept_failing = True
                time.sleep(0.1)
                return
            if self._accept_failing:
                log.info('metrics listener accepts connections again')
                self._accept_failing = False
            sock.setblocking(False)
            if len(self._pending) >= self.max_connections:
                self._drop(selector, next(iter(self._pending)))
            self._pending[sock] = _Pending(sock, address, time.monotonic() + self.timeout)
            selector.register(sock, selectors.EVENT_READ)

    def _read(self, selector, sock):
        pending = self._pending.get(sock)
        if pending is None:  # closed earlier in this round
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b''
        if not data:
            self._drop(selector, sock)
            return
        pending.data += data
        if b'\r\n\r\n' not in pending.data and b'\n\n' not in pending.data:
            if len(pending.data) > MAX_HEAD:
                self._drop(selector, sock)
            return
        del self._pending[sock]
        selector.unregister(sock)
        if not self._slots.acquire(blocking=False):
            log.debug('metrics listener busy: 503 to %s', pending.address[0])
            try:
                sock.send(BUSY)
            except OSError:
                pass
            sock.close()
            return
        self._workers.submit(self._answer, pending)

    def _answer(self, pending):
        sock = pending.sock
        try:
            try:
                response = _Request(bytes(pending.data), pending.address, self.routes).response
            except Exception:  # a broken page must cost one answer, never the worker
                log.exception('metrics request from %s failed', pending.address[0])
                response = FAILED
            sock.settimeout(self.timeout)
            sock.sendall(response)
        except OSError as error:
            log.debug('metrics answer to %s not sent (%s)', pending.address[0], error)
        finally:
            sock.close()
            self._slots.release()

    def _drop(self, selector, sock):
        del self._pending[sock]
        selector.unregister(sock)
        sock.close()

    def shutdown(self, wait=5.0):
        """Stop serving, close the listening socket and wait up to ``wait`` s for the thread. Return None.

        An answer being written finishes on its own (within ``timeout``).
        """
        self._stopping = True
        try:
            self._waker.send(b'x')
        except OSError:
            pass
        if self.thread is not None:
            self.thread.join(wait)
        self._workers.shutdown(wait=False)
        for sock in (self.socket, self._wake, self._waker):
            sock.close()


def serve(metrics, listen, timeout=TIMEOUT, workers=WORKERS, max_connections=MAX_CONNECTIONS):
    """Serve ``metrics`` (a :class:`Metrics`) at http://``listen``/metrics from a background thread.

    ``listen`` is ``metrics.listen`` ('127.0.0.1:9959'); None or '' serves
    nothing and returns None. If the address cannot be bound (in use, not
    local), log one error and return None: metrics are never a reason for
    the daemon to stop. An address other hosts can reach is served, with a
    warning. ``timeout``, ``workers``, ``max_connections``: see
    :class:`MetricsServer`. Return the server; stop it with :func:`stop`.
    """
    if not listen:
        return None
    try:
        host, port = parse_listen(listen)
        server = MetricsServer(host, port, {'/metrics': lambda: (metrics.render(), metrics_mod.CONTENT_TYPE)},
                               timeout=timeout, workers=workers, max_connections=max_connections)
    except (OSError, ValueError) as error:
        log.error('cannot serve metrics on %s (%s); metrics are still written to metrics.textfile; '
                  'choose a free local address in metrics.listen', listen,
                  getattr(error, 'strerror', None) or error)
        return None
    server.start()
    if not is_loopback(server.server_address[0]):
        log.warning('metrics.listen %s is not a loopback address: whoever reaches this node on port %d can '
                    'read /metrics, without authentication; listen on 127.0.0.1 or filter the port',
                    listen, server.server_address[1])
    log.info('serving metrics on http://%s/metrics', listen)
    return server


def stop(server):
    """Stop a server returned by :func:`serve` (None is fine) and close its socket. Return None."""
    if server is not None:
        server.shutdown()
