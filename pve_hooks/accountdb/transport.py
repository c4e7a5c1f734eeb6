"""How requests reach AccountDB: the session's deadline, the bearer token, URLs fit for logs.

The bearer token goes through requests' ``auth=`` (:class:`Bearer`): given
explicitly, it keeps requests from consulting ``~/.netrc`` (which it does
whenever ``trust_env`` is on and no auth is given) or a URL's
``user:password@`` — either would replace the token with Basic auth (the
same on requests 2.28 and 2.32). ``trust_env`` itself stays on, so proxies
from the environment (``https_proxy``, ``no_proxy``) keep working;
credentials in ``accountdb.url`` are refused by the configuration schema.

A total deadline per request (``accountdb.timeout.total``), on urllib3 1.26 and 2.x:

requests' ``timeout=(connect, read)`` bounds each socket operation, not the
request: a server that trickles one byte a second (headers or body) keeps
a call alive indefinitely. Here one helper thread per client
(:class:`Guard`) watches the request in flight: at its deadline it shuts
the connection's socket down (``shutdown(SHUT_RDWR)`` wakes a ``recv``
blocked in another thread), so the read fails at once and the client
reports the deadline; while waiting it calls ``tick()`` about once a second
(the daemon pings the systemd watchdog there), so a long call never starves
the watchdog.

The socket is found without touching urllib3's internals: the session's
adapter (:class:`DeadlineAdapter`) makes its pools use connection classes
that register themselves with the calling thread's :class:`Tracker` when
they connect or send a request. Both hooks (``connect``, ``request``) exist
with these names on urllib3 1.26 and 2.x. The connection is registered
before it connects and both urllib3 versions set its ``sock`` to the TCP
socket before wrapping it in TLS, so a TLS handshake that never finishes is
cut at the deadline too (tests/unit/accountdb/test_transport.py proves it on
both versions with a read timeout longer than the deadline).
"""

import ipaddress
import socket
import threading
import time
import urllib.parse

_local = threading.local()


class Bearer:
    """requests ``auth=``: set the bearer token. Given explicitly, it keeps requests from consulting
    ~/.netrc or a URL's userinfo, either of which would otherwise replace the token with Basic auth."""

    def __init__(self, token):
        self.token = token

    def __call__(self, request):
        request.headers['Authorization'] = 'Bearer ' + self.token
        return request


def display_url(url):
    """Given a URL, return it for a log line: without userinfo, query string and fragment."""
    try:
        parts = urllib.parse.urlsplit(str(url))
        host = parts.hostname or ''
        if ':' in host:
            host = '[' + host + ']'
        netloc = host + (':{0}'.format(parts.port) if parts.port else '')
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, '', ''))
    except ValueError:
        return '<unparseable URL>'


def is_plain_http_to_remote(url):
    """Given accountdb.url, return True when it is plain http:// to a host that is not loopback."""
    try:
        parts = urllib.parse.urlsplit(str(url))
        host = parts.hostname or ''
    except ValueError:
        return False
    if parts.scheme != 'http':
        return False
    if host == 'localhost' or host.endswith('.localhost'):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


class Tracker:
    """The connection of the request in flight on one thread (``conn``), and whether the deadline cut it."""

    def __init__(self):
        self.conn = None
        self.fired = False

    def cut(self):
        """Shut down the tracked connection's socket. Return True if there was one."""
        self.fired = True
        sock = getattr(self.conn, 'sock', None)
        if sock is None:
            return False
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except (OSError, TypeError, ValueError):
            return False
        return True


class tracking:
    """Context manager: requests made on this thread inside it register their connection with ``tracker``."""

    def __init__(self, tracker):
        self.tracker = tracker

    def __enter__(self):
        _local.tracker = self.tracker
        return self.tracker

    def __exit__(self, *exc):
        _local.tracker = None
        return False


def _register(conn):
    tracker = getattr(_local, 'tracker', None)
    if tracker is not None:
        tracker.conn = conn


def _tracked(base):
    class Tracked(base):
        def connect(self, *args, **kwargs):
            _register(self)
            return base.connect(self, *args, **kwargs)

        def request(self, *args, **kwargs):
            _register(self)
            return base.request(self, *args, **kwargs)

    Tracked.__name__ = 'Tracked' + base.__name__
    return Tracked


_POOLS = None


def _pool_classes():
    global _POOLS
    if _POOLS is None:
        from urllib3 import connection, connectionpool

        class HTTPPool(connectionpool.HTTPConnectionPool):
            ConnectionCls = _tracked(connection.HTTPConnection)

        class HTTPSPool(connectionpool.HTTPSConnectionPool):
            ConnectionCls = _tracked(connection.HTTPSConnection)

        _POOLS = {'http': HTTPPool, 'https': HTTPSPool}
    return _POOLS


def _adapter_class():
    from requests.adapters import HTTPAdapter

    class DeadlineAdapter(HTTPAdapter):
        """An HTTPAdapter whose pools' connections register with the calling thread's Tracker."""

        def init_poolmanager(self, *args, **kwargs):
            HTTPAdapter.init_poolmanager(self, *args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = dict(_pool_classes())

        def proxy_manager_for(self, *args, **kwargs):
            manager = HTTPAdapter.proxy_manager_for(self, *args, **kwargs)
            if hasattr(manager, 'pool_classes_by_scheme'):
                manager.pool_classes_by_scheme = dict(_pool_classes())
            return manager

    return DeadlineAdapter


def mount(session):
    """Mount the deadline-aware adapter on ``session`` (a requests.Session) for http:// and https://."""
    adapter = _adapter_class()
    session.mount('https://', adapter())
    session.mount('http://', adapter())
    return session


class Guard:
    """One helper thread: cuts the request in flight at its deadline and calls ``tick()`` meanwhile.

    ``tick``: called about every ``tick_every`` seconds while a request is
    in flight (exceptions are swallowed); ``monotonic``: the clock.
    """

    IDLE = 30.0   # seconds without a request after which the thread ends (a client never closed leaks none)

    def __init__(self, tick=None, tick_every=1.0, monotonic=time.monotonic):
        self.tick = tick
        self.tick_every = tick_every
        self.monotonic = monotonic
        self._cond = threading.Condition()
        self._armed = None       # (deadline, tracker)
        self._closed = False
        self._thread = None

    def arm(self, deadline, tracker):
        """Watch ``tracker``'s request until :meth:`disarm`; cut it at monotonic time ``deadline``."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='accountdb-deadline', daemon=True)
                self._thread.start()
            self._armed = (deadline, tracker)
            self._cond.notify()

    def disarm(self):
        with self._cond:
            self._armed = None

    def close(self):
        with self._cond:
            self._closed = True
            self._armed = None
            self._cond.notify()

    def _run(self):
        while True:
            with self._cond:
                if self._closed:
                    return
                if self._armed is None:
                    if not self._cond.wait(self.IDLE) and self._armed is None:
                        self._thread = None   # idle: gone until the next request (arm() starts another)
                        return
                    continue
                deadline, tracker = self._armed
                remaining = deadline - self.monotonic()
                if remaining <= 0:
                    self._armed = None
                    tracker.cut()
                    continue
                self._cond.wait(min(remaining, self.tick_every))
                still = self._armed is not None and self._armed[1] is tracker
            if still and self.tick is not None:
                try:
                    self.tick()
                except Exception:  # the watchdog ping must never kill the guard
                    pass
