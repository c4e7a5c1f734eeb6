"""The reference AccountDB HTTP server (contract v1, docs/accountdb-api.md): threads, TLS, statistics.

A ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, answering
with pve_hooks_devserver.handler.Handler, backed by
:class:`pve_hooks_devserver.store.Store`, with fault injection
(:mod:`pve_hooks_devserver.faults`); :func:`serve` runs it until SIGTERM
or SIGINT (``pve-hooks dev-accountdb``).
"""

import http.server
import json
import logging
import ssl
import threading

from pve_hooks_devserver import faults as faults_mod
from pve_hooks_devserver.handler import Handler
from pve_hooks_devserver.request import TokenFile
from pve_hooks_devserver.store import Store

log = logging.getLogger(__name__)


class Stats:
    """Request counts and bytes by "METHOD endpoint"; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.data = {}

    def add(self, key, status, bytes_in, bytes_out, gzipped=False, user_agent=None):
        with self.lock:
            entry = self.data.setdefault(key, {'count': 0, 'bytes_in': 0, 'bytes_out': 0, 'status': {},
                                               'gzip': 0, 'user_agent': None})
            entry['count'] += 1
            entry['bytes_in'] += bytes_in
            entry['bytes_out'] += bytes_out
            entry['status'][str(status)] = entry['status'].get(str(status), 0) + 1
            entry['gzip'] += 1 if gzipped else 0
            entry['user_agent'] = user_agent

    def snapshot(self):
        with self.lock:
            data = json.loads(json.dumps(self.data))
        totals = {'count': 0, 'bytes_in': 0, 'bytes_out': 0}
        for entry in data.values():
            for key in totals:
                totals[key] += entry[key]
        return {'endpoints': data, 'totals': totals}


class Server(http.server.ThreadingHTTPServer):
    """The reference AccountDB: ``store``, ``faults``, ``token`` (TokenFile) and ``stats``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, store, token, faults=None, tls=None):
        super().__init__(address, Handler)
        self.store = store
        self.token = token
        self.faults = faults or faults_mod.Faults()
        self.stats = Stats()
        if tls is not None:
            cert, key = tls
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.scheme = 'https' if tls else 'http'

    @property
    def url(self):
        host, port = self.server_address[:2]
        return '{0}://{1}:{2}'.format(self.scheme, host, port)

    def handle_error(self, request, client_address):
        import sys

        error = sys.exc_info()[1]
        log.warning('dev-accountdb: connection from %s:%s failed: %s', client_address[0], client_address[1],
                    ' '.join(str(error).split())[:200])


def serve(listen, db, token_file, faults_spec=None, tls=None, out=None):
    """Run the reference AccountDB until SIGTERM or SIGINT. Return 0.

    ``listen`` is "host:port" (port 0 picks a free one); the first line
    written to ``out`` (default stdout) is ``dev-accountdb listening on URL``.
    ``tls`` is (cert, key) paths or None. Raise ValueError for a bad
    ``listen``, faults.FaultSpecError for a bad spec, OSError if the port
    cannot be bound.
    """
    import signal
    import sys

    host, _, port = listen.rpartition(':')
    if not host or not port.isdigit():
        raise ValueError('--listen: expected HOST:PORT such as 127.0.0.1:8765, got {0!r}'.format(listen))
    faults = faults_mod.Faults(faults_spec)
    store = Store(db)
    server = Server((host.strip('[]'), int(port)), store, TokenFile(token_file), faults, tls)
    out = out or sys.stdout

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        out.write('dev-accountdb listening on {0}\n'.format(server.url))
        out.flush()
        log.info('dev-accountdb: serving %s with database %s', server.url, db)
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
        store.close()
    log.info('dev-accountdb: stopped')
    return 0
