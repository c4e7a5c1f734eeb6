"""The reference AccountDB HTTP server (contract v1, docs/accountdb-api.md).

A ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, backed by
:class:`pve_hooks_devserver.store.Store`, with fault injection
(:mod:`pve_hooks_devserver.faults`) and admin endpoints under ``/_admin/``
that need the same token: ``GET|POST /_admin/faults``, ``GET /_admin/stats``,
``POST /_admin/stats/reset``, ``GET /_admin/dump``.

Endpoint paths are the schema defaults of ``accountdb.endpoints.*``, so the
server and the client's default configuration cannot drift apart.
"""

import hmac
import http.server
import json
import logging
import os
import re
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import zlib

from pve_hooks import __version__
from pve_hooks.accountdb import backoff
from pve_hooks.config import loader as config
from pve_hooks.config import schema
from pve_hooks_devserver import faults as faults_mod
from pve_hooks_devserver.store import Store

log = logging.getLogger(__name__)

PHASES = ('pre-start', 'post-start', 'pre-stop', 'post-stop')
VMID_MIN, VMID_MAX = 100, 999999999
# The reference server's own limits (documented in docs/accountdb-api.md).
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 10000
MAX_EVENT_ID_CHARS = 200
GARBAGE_PAGE = (b'<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway'
                b'</h1></center><hr><center>nginx</center></body></html>\n')


def _route_regex(template):
    pattern = re.escape(template).replace(re.escape('{node}'), '(?P<node>[^/]+)')
    return re.compile('^' + pattern + '$')


ROUTES = [(name, schema.BY_KEY['accountdb.endpoints.' + name].default)
          for name in ('health', 'events', 'inventory', 'heartbeat', 'whitelist')]
ROUTES = [(name, template, _route_regex(template)) for name, template in ROUTES]
METHODS = {'health': ('GET',), 'events': ('POST',), 'inventory': ('PUT',), 'heartbeat': ('POST',),
           'whitelist': ('GET', 'POST')}


class BadRequest(Exception):
    """The request cannot be processed: answer ``status`` with ``message``."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class _CountingWriter:
    """Wraps the socket writer and counts the bytes written."""

    def __init__(self, inner):
        self.inner = inner
        self.written = 0

    def write(self, data):
        self.written += len(data)
        return self.inner.write(data)

    def flush(self):
        return self.inner.flush()

    def close(self):
        return self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


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


class TokenFile:
    """The server's expected token, re-read when the file changes (so tests can rotate it)."""

    def __init__(self, path):
        self.path = path
        self._key = None
        self._token = None
        self.lock = threading.Lock()

    def get(self):
        """Return the token; raise config.TokenError when the file is unusable."""
        info = os.stat(self.path)
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        with self.lock:
            if key != self._key:
                self._token = config.read_token(self.path, check_owner=False)
                self._key = key
            return self._token


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


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'pve-hooks-dev-accountdb/' + __version__
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    timeout = 300  # an idle keep-alive connection (a client that went away) frees its thread after this

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        self.wfile = _CountingWriter(self.wfile)

    def log_message(self, format, *args):
        log.debug('dev-accountdb: ' + format, *args)

    def do_GET(self):
        self._handle('GET')

    def do_POST(self):
        self._handle('POST')

    def do_PUT(self):
        self._handle('PUT')

    def do_DELETE(self):
        self._handle('DELETE')

    def do_PATCH(self):
        self._handle('PATCH')

    # -- request handling ---------------------------------------------------

    def _handle(self, method):
        self._written_before = self.wfile.written
        self._status = None
        path = urllib.parse.urlsplit(self.path).path
        self._stats_key = '{0} {1}'.format(method, path)
        self._raw = raw = b''
        self._recorded = path.startswith('/_admin/')  # statistics describe contract traffic only
        try:
            self._raw = raw = self._read_raw_body()
            if path.startswith('/_admin/'):
                self._check_token()
                self._admin(method, path, raw)
                return
            fault = self.server.faults.take(method, path)
            if fault is not None and self._apply_fault(fault):
                return
            self._check_token()
            self._route(method, path, raw)
        except BadRequest as error:
            self._error(error.status, str(error))
        except (ConnectionError, socket.timeout, ssl.SSLError):
            self.close_connection = True
        except Exception as error:  # a bug in the reference server: answer 500, keep serving
            log.exception('dev-accountdb: %s %s failed', method, path)
            self._error(500, 'internal error in the reference server: {0}'.format(type(error).__name__))
        finally:
            self._record()

    def _record(self, pending=0):
        """Add this request to the statistics once; ``pending``: response bytes not yet written.

        Called before the response is flushed, so a client that asks for the
        statistics right after its answer always sees its request counted.
        """
        if self._recorded:
            return
        self._recorded = True
        bytes_in = len(self.requestline) + 2 + sum(len(k) + len(v) + 4 for k, v in self.headers.items()) \
            + 2 + len(self._raw)
        self.server.stats.add(self._stats_key, self._status or 'none', bytes_in,
                              self.wfile.written - self._written_before + pending,
                              self.headers.get('Content-Encoding', '').lower() == 'gzip',
                              self.headers.get('User-Agent'))

    def _read_raw_body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            self.close_connection = True
            raise BadRequest('chunked request bodies are not supported; send Content-Length', 411)
        length = self.headers.get('Content-Length')
        if length is None:
            return b''
        if not length.isdigit():
            self.close_connection = True
            raise BadRequest('invalid Content-Length')
        length = int(length)
        limit = self.server.faults.max_body_bytes or MAX_BODY_BYTES
        if length > limit:
            self.close_connection = True
            raise BadRequest('request body of {0} bytes is over the limit of {1}'.format(length, limit), 413)
        return self.rfile.read(length)

    def _check_token(self):
        try:
            expected = self.server.token.get()
        except (OSError, config.TokenError) as error:
            log.error('dev-accountdb: cannot read the token file: %s', error)
            raise BadRequest('the server cannot read its token file', 503)
        header = self.headers.get('Authorization', '')
        given = header[7:] if header[:7].lower() == 'bearer ' else ''
        if not (given and hmac.compare_digest(given.encode('utf-8'), expected.encode('utf-8'))):
            raise BadRequest('missing or invalid bearer token', 401)

    def _body(self, raw):
        """Return the decoded JSON request body; raise BadRequest."""
        encoding = self.headers.get('Content-Encoding', 'identity').strip().lower()
        limit = self.server.faults.max_body_bytes or MAX_BODY_BYTES
        if encoding == 'gzip':
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = decompressor.decompress(raw, limit + 1)
                if len(raw) > limit or decompressor.unconsumed_tail:
                    raise BadRequest('decompressed request body is over the limit of {0} bytes'.format(limit), 413)
            except (zlib.error, EOFError, OSError):
                raise BadRequest('request body is not valid gzip')
        elif encoding != 'identity':
            raise BadRequest('unsupported Content-Encoding {0!r}; use gzip or none'.format(encoding), 415)
        if len(raw) > limit:
            raise BadRequest('request body of {0} bytes is over the limit of {1}'.format(len(raw), limit), 413)
        try:
            return json.loads(raw.decode('utf-8'))
        except (UnicodeDecodeError, ValueError) as error:
            raise BadRequest('request body is not valid JSON ({0})'.format(' '.join(str(error).split())))

    def _route(self, method, path, raw):
        for name, template, regex in ROUTES:
            match = regex.match(path)
            if not match:
                continue
            self._stats_key = '{0} {1}'.format(method, template)
            if method not in METHODS[name]:
                self._error(405, 'method {0} not allowed on {1}'.format(method, template),
                            {'Allow': ', '.join(METHODS[name])})
                return
            node = urllib.parse.unquote(match.group('node')) if 'node' in regex.groupindex else None
            getattr(self, '_{0}_{1}'.format(name, method.lower()))(raw, node)
            return
        self._error(404, 'no such endpoint: {0}'.format(path))

    # -- endpoints ------------------------------------------------------------

    def _health_get(self, raw, node):
        self._json(200, {'status': 'ok', 'version': __version__, 'server': 'pve-hooks reference AccountDB'})

    def _events_post(self, raw, node):
        body = self._body(raw)
        if not isinstance(body, dict) or not isinstance(body.get('node'), str) or not body['node']:
            raise BadRequest('body must be an object with a "node" string and an "events" list')
        events = body.get('events')
        if not isinstance(events, list):
            raise BadRequest('"events" must be a list of event objects')
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise BadRequest('{0} events in one request; at most {1}'.format(len(events), MAX_EVENTS_PER_REQUEST),
                             413)
        for index, event in enumerate(events):
            if not isinstance(event, dict) or not isinstance(event.get('event_id'), str) \
                    or not 0 < len(event['event_id']) <= MAX_EVENT_ID_CHARS:
                raise BadRequest('events[{0}]: every event must be an object with an "event_id" string '
                                 'of 1 to {1} characters'.format(index, MAX_EVENT_ID_CHARS))
        ids = [event['event_id'] for event in events]
        status, injected = self.server.faults.rejections('POST', self.path.split('?')[0], ids)
        if status is not None:
            raise BadRequest('event {0} is not acceptable (fault injection)'.format(sorted(injected)[0]), status)
        results = [None] * len(events)
        valid = []
        for index, event in enumerate(events):
            problem = 'rejected by fault injection' if event['event_id'] in injected else event_problem(event)
            if problem:
                results[index] = {'event_id': event['event_id'], 'status': 'rejected', 'error': problem}
            else:
                valid.append(index)
        statuses = self.server.store.add_events(body['node'], [events[i] for i in valid])
        for index, status in zip(valid, statuses):
            results[index] = {'event_id': events[index]['event_id'], 'status': status}
        self._json(200, {'results': results})

    def _inventory_put(self, raw, node):
        body = self._body(raw)
        if not isinstance(body, dict) or not isinstance(body.get('guests'), list):
            raise BadRequest('body must be an object with a "guests" list')
        if body.get('node') != node:
            raise BadRequest('body "node" ({0!r}) does not match the path ({1!r})'.format(body.get('node'), node))
        for index, guest in enumerate(body['guests']):
            if not isinstance(guest, dict) or not _is_vmid(guest.get('vmid')):
                raise BadRequest('guests[{0}]: every guest must be an object with an integer "vmid" from '
                                 '{1} to {2}'.format(index, VMID_MIN, VMID_MAX), 422)
        etag = self.server.store.put_inventory(node, body)
        self._json(200, {'node': node, 'etag': etag, 'guests': len(body['guests'])}, {'ETag': etag})

    def _heartbeat_post(self, raw, node):
        body = self._body(raw)
        if not isinstance(body, dict):
            raise BadRequest('body must be a JSON object')
        if body.get('node') != node:
            raise BadRequest('body "node" ({0!r}) does not match the path ({1!r})'.format(body.get('node'), node))
        self.server.store.heartbeat(node, body)
        self._send(204, b'', None)

    def _whitelist_get(self, raw, node):
        body, etag, last_modified, modified_seconds = self.server.store.whitelist()
        headers = {'ETag': etag, 'Last-Modified': last_modified, 'Cache-Control': 'no-cache'}
        if not_modified(self.headers.get('If-None-Match'), self.headers.get('If-Modified-Since'), etag,
                        modified_seconds):
            self._send(304, b'', None, headers)
            return
        self._send(200, body, 'application/json', headers)

    def _whitelist_post(self, raw, node):
        body = self._body(raw)
        if not isinstance(body, dict) or set(body) - {'add', 'remove'}:
            raise BadRequest('body must be an object with optional "add" and "remove" lists')
        lists = {}
        for key in ('add', 'remove'):
            values = body.get(key, [])
            if not isinstance(values, list):
                raise BadRequest('"{0}" must be a list of VMIDs'.format(key))
            for index, value in enumerate(values):
                if not _is_vmid(value):
                    raise BadRequest('{0}[{1}]: {2!r} is not a VMID (an integer from {3} to {4})'.format(
                        key, index, value, VMID_MIN, VMID_MAX), 422)
            lists[key] = values
        result = self.server.store.update_whitelist(lists.get('add', []), lists.get('remove', []),
                                                    self.headers.get('If-Match'))
        if result is None:
            self._error(412, 'the whitelist changed since it was read (If-Match {0} is stale); '
                             'fetch it again and retry'.format(self.headers.get('If-Match')),
                        {'ETag': self.server.store.whitelist_etag()})
            return
        payload, etag, last_modified, _ = result
        self._send(200, payload, 'application/json', {'ETag': etag, 'Last-Modified': last_modified})

    # -- admin ----------------------------------------------------------------

    def _admin(self, method, path, raw):
        if path == '/_admin/faults' and method == 'POST':
            try:
                self.server.faults.set(self._body(raw))
            except faults_mod.FaultSpecError as error:
                raise BadRequest(str(error))
            log.info('dev-accountdb: faults set to %s', json.dumps(self.server.faults.current()))
            self._json(200, {'faults': self.server.faults.current()})
        elif path == '/_admin/faults' and method == 'GET':
            self._json(200, {'faults': self.server.faults.current()})
        elif path == '/_admin/stats' and method == 'GET':
            self._json(200, self.server.stats.snapshot())
        elif path == '/_admin/stats/reset' and method == 'POST':
            self.server.stats.reset()
            self._json(200, {'reset': True})
        elif path == '/_admin/dump' and method == 'GET':
            self._json(200, self.server.store.dump())
        else:
            self._error(404, 'no such admin endpoint: {0} {1}'.format(method, path))

    # -- faults -----------------------------------------------------------------

    def _apply_fault(self, fault):
        """Act on a request-level fault. Return True when the request is answered (or dropped)."""
        mode = fault['mode']
        log.debug('dev-accountdb: fault %s on %s', mode, self.path)
        if mode == 'slow':
            time.sleep(float(fault['delay']))
            return False
        if mode == 'refuse':
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            self.close_connection = True
            self._status = 'reset'
            try:
                self.connection.close()
            except OSError:
                pass
            return True
        if mode == 'drop':
            self.close_connection = True
            self._status = 'dropped'
            return True
        if mode == 'status':
            headers = {}
            if fault.get('retry_after') is not None:
                headers['Retry-After'] = str(fault['retry_after'])
            self._error(int(fault['status']), fault.get('message') or 'injected fault: HTTP {0}'.format(
                fault['status']), headers)
            return True
        if mode == 'unauthorized':
            self._error(401, 'missing or invalid bearer token')
            return True
        if mode == 'garbage':
            body = fault.get('body', GARBAGE_PAGE)
            self._send(200, body.encode('utf-8') if isinstance(body, str) else body, 'text/html')
            return True
        if mode == 'bad_json':
            self._send(200, b'{"results": [', 'application/json')
            return True
        if mode == 'wrong_shape':
            self._json(200, {'unexpected': True, 'results': 'not a list', 'vmids': 'not a list'})
            return True
        if mode == 'huge':
            size = int(fault['size'])
            body = b'{"status":"ok"}' + b' ' * max(0, size - 15)
            if fault.get('no_length'):
                # No Content-Length: the body ends when the connection closes (the client must cap its read).
                self.close_connection = True
                self._status = 200
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Connection', 'close')
                self._record(sum(len(chunk) for chunk in self._headers_buffer) + 2 + len(body))
                self.end_headers()
                self.wfile.write(body)
                return True
            self._send(200, body, 'application/json')
            return True
        raise AssertionError('unhandled fault mode ' + mode)

    # -- responses ----------------------------------------------------------------

    def _error(self, status, message, headers=None):
        self._json(status, {'error': message}, headers)

    def _json(self, status, data, headers=None):
        self._send(status, json.dumps(data, separators=(',', ':')).encode('utf-8'), 'application/json',
                   headers)

    def _send(self, status, body, content_type, headers=None):
        self._status = status
        self.send_response(status)
        if content_type:
            self.send_header('Content-Type', content_type + ('; charset=utf-8' if 'json' in content_type else ''))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header('Content-Length', str(len(body)))
        if self.close_connection:
            self.send_header('Connection', 'close')
        body = body if status not in (204, 304) else b''
        self._record(sum(len(chunk) for chunk in self._headers_buffer) + 2 + len(body))
        self.end_headers()
        if body:
            self.wfile.write(body)


def _is_vmid(value):
    return isinstance(value, int) and not isinstance(value, bool) and VMID_MIN <= value <= VMID_MAX


def event_problem(event):
    """Return why ``event`` is not acceptable (one line), or None when it is valid."""
    if not _is_vmid(event.get('vmid')):
        return '"vmid" must be an integer from {0} to {1}'.format(VMID_MIN, VMID_MAX)
    if event.get('phase') not in PHASES:
        return '"phase" must be one of ' + ', '.join(PHASES)
    seq = event.get('seq')
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return '"seq" must be a non-negative integer'
    if not isinstance(event.get('occurred_at'), str) or not event['occurred_at']:
        return '"occurred_at" must be an RFC 3339 time string'
    if 'node' in event and not isinstance(event['node'], str):
        return '"node" must be a string'
    return None


def not_modified(if_none_match, if_modified_since, etag, modified_seconds):
    """Return True when a conditional GET may be answered 304 (RFC 9110: If-None-Match wins)."""
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(',')]
        return '*' in tags or etag in tags or ('W/' + etag) in tags
    if if_modified_since:
        since = backoff.parse_http_date(if_modified_since)
        return since is not None and modified_seconds <= since
    return False


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
