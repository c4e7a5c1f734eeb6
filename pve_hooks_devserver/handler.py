"""The reference AccountDB's request handler: routing, the contract's endpoints, admin and faults.

One :class:`Handler` per connection (HTTP/1.1, keep-alive) of
pve_hooks_devserver.server.Server, whose ``store``, ``faults``, ``token``
and ``stats`` it uses. Endpoints and methods come from
pve_hooks_devserver.contract; admin endpoints under ``/_admin/`` need the
same token: ``GET|POST /_admin/faults``, ``GET /_admin/stats``,
``POST /_admin/stats/reset``, ``GET /_admin/dump``. Request-level faults
(pve_hooks_devserver.faults) are acted on before the token is checked.
"""

import http.server
import json
import logging
import socket
import ssl
import struct
import time
import urllib.parse

from pve_hooks import __version__
from pve_hooks_devserver import faults as faults_mod
from pve_hooks_devserver.contract import (MAX_BODY_BYTES, MAX_EVENT_ID_CHARS, MAX_EVENTS_PER_REQUEST, METHODS,
                                          ROUTES, VMID_MAX, VMID_MIN, event_problem, is_vmid, not_modified)
from pve_hooks_devserver.request import BadRequest, check_token, json_body, read_body

log = logging.getLogger(__name__)

GARBAGE_PAGE = (b'<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway'
                b'</h1></center><hr><center>nginx</center></body></html>\n')


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


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers the requests of one connection to :class:`pve_hooks_devserver.server.Server`."""

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
            self._raw = raw = read_body(self.headers, self.rfile, self._body_limit())
            if path.startswith('/_admin/'):
                check_token(self.headers, self.server.token)
                self._admin(method, path, raw)
                return
            fault = self.server.faults.take(method, path)
            if fault is not None and self._apply_fault(fault):
                return
            check_token(self.headers, self.server.token)
            self._route(method, path, raw)
        except BadRequest as error:
            if error.close:
                self.close_connection = True
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

    def _body_limit(self):
        return self.server.faults.max_body_bytes or MAX_BODY_BYTES

    def _body(self, raw):
        """Return the decoded JSON request body; raise BadRequest."""
        return json_body(self.headers, raw, self._body_limit())

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
            if not isinstance(guest, dict) or not is_vmid(guest.get('vmid')):
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
                if not is_vmid(value):
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
