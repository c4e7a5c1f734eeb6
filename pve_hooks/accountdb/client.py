"""The AccountDB HTTP client: one request per call, every failure classified.

Contract: docs/accountdb-api.md. Each public method sends exactly one HTTP
request (``send_events_bisect`` sends several) and either returns the
validated answer or raises an :class:`pve_hooks.accountdb.errors.AccountDBError`
whose ``kind`` says what to do. There is no retry loop in here: the daemon
owns retries, backoff and the circuit breaker
(:class:`pve_hooks.accountdb.connection.Connection`) so it can keep its
events and log state changes once.

The token is read from ``accountdb.token_file`` before every request (a
stat and a small read), so a rotated token is used without a restart. It is
never logged, and is scrubbed from any reason text. It is sent through
requests' ``auth=`` (:class:`~pve_hooks.accountdb.transport.Bearer`), so neither a ``~/.netrc`` entry nor
``user:password@`` in a URL can replace it with Basic auth; the session
still takes proxies (``https_proxy``, ``no_proxy``) from the environment.

Every request has a total deadline, ``accountdb.timeout.total``
(:mod:`pve_hooks.accountdb.transport`), on top of requests' per-read
timeouts, and whatever a server sends — headers of thousands of digits,
JSON nested ten thousand deep — ends as one classified
:class:`~pve_hooks.accountdb.errors.AccountDBError`, never another exception.
"""

import collections
import gzip
import json
import logging
import time
import urllib.parse

from pve_hooks import __version__
from pve_hooks.accountdb import backoff
from pve_hooks.accountdb import transport
from pve_hooks.config import loader as config
from pve_hooks.accountdb import errors
from pve_hooks.observe import logs as logsetup

log = logging.getLogger(__name__)

USER_AGENT = 'pve-hooks/' + __version__
EVENT_STATUSES = ('accepted', 'duplicate', 'rejected')

WhitelistResponse = collections.namedtuple(
    'WhitelistResponse', 'status vmids etag last_modified body_bytes')
WhitelistResponse.__doc__ = """A whitelist answer.

``status`` is 200 (``vmids`` is a list of ints) or 304 (not modified;
``vmids`` is None); ``etag``/``last_modified`` are the response headers (or
None); ``body_bytes`` is the size of the response body as received.
"""

Response = collections.namedtuple('Response', 'status headers body')
_WARNED_PLAIN_HTTP = set()


def _network_errors():
    """Return the exception classes a request or a body read can raise for network reasons."""
    import http.client

    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
            OSError, ValueError)


def _status_class(status):
    return '{0}xx'.format(status // 100) if status else 'error'


class Client:
    """Talks to AccountDB as configured by ``settings`` (a config.Settings).

    ``session``: a requests.Session (one is created when None: pooled
    connections, proxies from the environment as requests does);
    ``token_reader(path)``: returns the token or raises config.TokenError;
    ``clock``: monotonic seconds, for durations; ``metrics``: optional object
    with ``on_request(method, endpoint, status_class, duration_s)`` where
    ``status_class`` is '2xx'..'5xx' or 'error' (no response).
    """

    def __init__(self, settings, session=None, token_reader=config.read_token, clock=time.monotonic,
                 metrics=None):
        if session is None:
            import requests

            session = transport.mount(requests.Session())
        self.settings = settings
        self.session = session
        self.token_reader = token_reader
        self.clock = clock
        self.metrics = metrics
        self._token = None
        self._guard = transport.Guard(tick=getattr(metrics, 'on_wait', None))
        if transport.is_plain_http_to_remote(settings['accountdb.url']) and \
                settings['accountdb.url'] not in _WARNED_PLAIN_HTTP:   # once per process, not per reload
            _WARNED_PLAIN_HTTP.add(settings['accountdb.url'])
            log.warning('accountdb.url is plain http:// to %s: the token and the events cross the network '
                        'unencrypted; use https://', transport.display_url(settings['accountdb.url']))
        if not settings['accountdb.verify_tls']:
            import urllib3

            # Said once here instead of urllib3 warning on every request.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            log.warning('accountdb.verify_tls is false: AccountDB\'s certificate is not verified; '
                        'set accountdb.ca_bundle for a private CA instead')

    def close(self):
        """Close the pooled connections and stop the deadline thread."""
        self._guard.close()
        self.session.close()

    # -- endpoints ----------------------------------------------------------

    def health(self, attempt=1):
        """GET the health endpoint. Return its JSON object ({"status": "ok", ...}).

        Raise AccountDBError; a body that is not ``{"status": "ok"}`` is transient.
        """
        data = self._json(self._request('GET', 'health', attempt=attempt), 'health')
        if not isinstance(data, dict) or data.get('status') != 'ok':
            raise errors.malformed('health answer is not {"status": "ok"}', 200)
        return data

    def send_events(self, node, events, attempt=1):
        """POST one batch of events for ``node``. Return the results in the order of ``events``.

        Each result is a dict with ``event_id``, ``status`` ('accepted',
        'duplicate' or 'rejected') and, for rejected, ``error``. Raise
        AccountDBError (RejectedError for 400/413/422 on the batch); an
        answer that does not answer every event exactly once is transient.
        """
        response = self._request('POST', 'events', body={'node': node, 'events': list(events)},
                                 attempt=attempt, batch_size=len(events))
        return validate_results(events, self._json(response, 'events'))

    def send_events_bisect(self, node, events, attempt=1):
        """Send ``events``, bisecting on rejection. Return {event_id: result}.

        When AccountDB rejects a batch (400/413/422), split it in halves and
        retry each until the offending event stands alone; that event's result
        is ``{"event_id", "status": "rejected", "error": <reason>}``. Any other
        failure propagates (results of halves already sent are then lost to
        the caller, who redelivers them: AccountDB answers 'duplicate').
        """
        events = list(events)
        results = {}
        pending = [events] if events else []
        while pending:
            batch = pending.pop(0)
            try:
                answered = self.send_events(node, batch, attempt=attempt)
            except errors.RejectedError as error:
                if len(batch) == 1:
                    event_id = batch[0]['event_id']
                    log.debug('AccountDB rejected event %s on its own: %s', event_id, error,
                              extra={'EVENT_ID': event_id, 'HTTP_STATUS': error.status})
                    results[event_id] = {'event_id': event_id, 'status': 'rejected',
                                         'error': 'HTTP {0}: {1}'.format(error.status, error.reason)}
                    continue
                middle = len(batch) // 2
                log.debug('AccountDB rejected a batch of %d events (%s); splitting it', len(batch), error,
                          extra={'BATCH_SIZE': len(batch), 'HTTP_STATUS': error.status})
                pending[:0] = [batch[:middle], batch[middle:]]
                continue
            for result in answered:
                results[result['event_id']] = result
        return results

    def put_inventory(self, node, inventory, attempt=1):
        """PUT ``node``'s full inventory. Return the stored inventory's ETag (None if absent)."""
        response = self._request('PUT', 'inventory', node=node, body=inventory, attempt=attempt,
                                 expect=(200, 201, 204))
        return response.headers.get('ETag')

    def heartbeat(self, node, body, attempt=1):
        """POST a heartbeat for ``node``. Return None. Raise AccountDBError."""
        self._request('POST', 'heartbeat', node=node, body=body, attempt=attempt, expect=(200, 202, 204))

    def get_whitelist(self, etag=None, last_modified=None, attempt=1):
        """GET the whitelist, conditionally when ``etag``/``last_modified`` are given.

        Return a :data:`WhitelistResponse` (status 200 with vmids, or 304).
        Raise AccountDBError; a body without a list of integer ``vmids`` is transient.
        """
        headers = {}
        if etag:
            headers['If-None-Match'] = etag
        if last_modified:
            headers['If-Modified-Since'] = last_modified
        response = self._request('GET', 'whitelist', headers=headers, attempt=attempt, expect=(200, 304))
        return self._whitelist(response)

    def update_whitelist(self, add=(), remove=(), if_match=None, attempt=1):
        """POST ``{"add": [...], "remove": [...]}`` (one bulk request). Return the new WhitelistResponse.

        Raise PreconditionFailed (kind 'conflict') when ``if_match`` is stale
        (412), other AccountDBErrors as classified.
        """
        headers = {'If-Match': if_match} if if_match else {}
        body = {'add': [int(vmid) for vmid in add], 'remove': [int(vmid) for vmid in remove]}
        response = self._request('POST', 'whitelist', body=body, headers=headers, attempt=attempt)
        return self._whitelist(response)

    # -- plumbing -----------------------------------------------------------

    def url(self, name, node=None):
        """Return the full URL of endpoint ``name`` (``{node}`` URL-quoted)."""
        base = self.settings['accountdb.url']
        if not base:
            raise errors.ConfigurationError('accountdb.url is not set; set it in the configuration file')
        params = {} if node is None else {'node': urllib.parse.quote(str(node), safe='')}
        return base + self.settings.endpoint(name, **params)

    def _verify(self):
        if not self.settings['accountdb.verify_tls']:
            return False
        return self.settings['accountdb.ca_bundle'] or True

    def _read_token(self):
        path = self.settings['accountdb.token_file']
        try:
            self._token = self.token_reader(path)
        except config.TokenError as error:
            raise errors.AuthError(str(error))
        logsetup.register_secret(self._token)  # every log handler redacts it from now on
        return self._token

    def _encode(self, body, headers):
        data = json.dumps(body, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
        headers['Content-Type'] = 'application/json'
        if len(data) >= self.settings['accountdb.gzip_min_bytes']:
            data = gzip.compress(data, compresslevel=5)
            headers['Content-Encoding'] = 'gzip'
        return data

    def _request(self, method, name, node=None, body=None, headers=None, attempt=1, expect=(200,),
                 batch_size=None):
        """Send one request to endpoint ``name``. Return a Response for a status in ``expect``.

        Raise AccountDBError for every other outcome.
        """
        url = self.url(name, node)
        path = urllib.parse.urlsplit(url).path
        headers = dict(headers or {})
        auth = transport.Bearer(self._read_token())
        headers['User-Agent'] = USER_AGENT
        headers['Accept'] = 'application/json'
        data = self._encode(body, headers) if body is not None else None
        started = self.clock()
        try:
            try:
                response = self._exchange(method, url, data, headers, expect, auth)
            except errors.AccountDBError:
                raise
            except Exception as unexpected:  # whatever a server sends ends in the taxonomy
                raise errors.classify(exception=unexpected)
        except errors.AccountDBError as error:
            error.reason = errors.one_line(self._scrub(error.reason))
            error.args = (error.reason,)
            self._log(method, path, error.status, started, attempt, batch_size, error)
            self._count(method, name, error.status, started)
            raise
        self._log(method, path, response.status, started, attempt, batch_size, None)
        self._count(method, name, response.status, started)
        return response

    def _exchange(self, method, url, data, headers, expect, auth=None):
        """Send the request and read the answer within accountdb.timeout.total; return a Response or raise."""
        total = self.settings['accountdb.timeout.total']
        timeout = (min(self.settings['accountdb.timeout.connect'], total),
                   min(self.settings['accountdb.timeout.read'], total))
        tracker = transport.Tracker()
        until = time.monotonic() + total
        self._guard.arm(until, tracker)
        try:
            with transport.tracking(tracker):
                try:
                    raw = self.session.request(method, url, data=data, headers=headers, timeout=timeout,
                                               verify=self._verify(), stream=True, allow_redirects=False,
                                               auth=auth)
                except _network_errors() as error:
                    raise self._deadline_error(tracker, total) or errors.classify(exception=error)
                try:
                    content = self._read_body(raw, until)
                except errors.AccountDBError as error:
                    raise self._deadline_error(tracker, total) or error
                finally:
                    raw.close()
        finally:
            self._guard.disarm()
        response = Response(raw.status_code, raw.headers, content)
        if response.status not in expect:
            reason, shaped = self._reason(response)
            raise errors.classify(status=response.status, reason=reason, accountdb_error=shaped,
                                  retry_after=backoff.parse_retry_after(raw.headers.get('Retry-After')))
        return response

    @staticmethod
    def _deadline_error(tracker, total):
        if not tracker.fired:
            return None
        return errors.TransientError('no complete answer from AccountDB within accountdb.timeout.total '
                                     '({0:g} s)'.format(total))

    def _read_body(self, raw, until=None):
        """Return the body bytes, or raise a transient error when it is over the size limit or the deadline."""
        limit = self.settings['accountdb.max_response_bytes']
        declared = backoff.parse_length(raw.headers.get('Content-Length'), maximum=float(2 ** 63))
        if declared is not None and declared > limit:
            raise errors.malformed('body of {0:.0f} bytes is over accountdb.max_response_bytes ({1})'.format(
                declared, limit), raw.status_code)
        chunks, size = [], 0
        try:
            for chunk in raw.iter_content(65536):
                size += len(chunk)
                if size > limit:
                    raise errors.malformed('body is over accountdb.max_response_bytes ({0})'.format(limit),
                                           raw.status_code)
                if until is not None and time.monotonic() > until:
                    raise errors.TransientError('no complete answer from AccountDB within '
                                                'accountdb.timeout.total ({0:g} s)'.format(
                                                    self.settings['accountdb.timeout.total']))
                chunks.append(chunk)
        except _network_errors() as error:
            raise errors.classify(exception=error)
        return b''.join(chunks)

    def _reason(self, response):
        """Return (one line saying why the request was refused, whether the body was AccountDB's JSON error)."""
        data = _loads(response.body.decode('utf-8', 'replace'))
        text = response.body[:2000].decode('utf-8', 'replace')
        if errors.is_accountdb_error(response.headers.get('Content-Type'), data):
            return data['error'], True
        if text.lstrip()[:1] == '<' or not text.strip():
            return 'AccountDB answered HTTP {0}'.format(response.status), False
        return 'AccountDB answered HTTP {0}: {1}'.format(response.status, text), False

    def _scrub(self, text):
        if self._token and self._token in text:
            text = text.replace(self._token, '<token>')
        return text

    def _json(self, response, what):
        content_type = response.headers.get('Content-Type', '')
        if 'json' not in content_type.lower():
            raise errors.malformed('{0} answer is {1}, not JSON'.format(what, content_type or 'untyped'),
                                   response.status)
        try:
            return json.loads(response.body.decode('utf-8'))
        except (UnicodeDecodeError, ValueError):
            raise errors.malformed('{0} answer is not valid JSON'.format(what), response.status)
        except RecursionError:
            raise errors.malformed('{0} answer is JSON nested too deeply'.format(what), response.status)

    def _whitelist(self, response):
        etag = response.headers.get('ETag')
        last_modified = response.headers.get('Last-Modified')
        if response.status == 304:
            return WhitelistResponse(304, None, etag, last_modified, len(response.body))
        data = self._json(response, 'whitelist')
        vmids = data.get('vmids') if isinstance(data, dict) else None
        if not isinstance(vmids, list) or not all(
                isinstance(vmid, int) and not isinstance(vmid, bool) for vmid in vmids):
            raise errors.malformed('whitelist answer has no list of integer "vmids"', response.status)
        return WhitelistResponse(response.status, vmids, etag, last_modified, len(response.body))

    def _log(self, method, path, status, started, attempt, batch_size, error):
        duration_ms = int((self.clock() - started) * 1000)
        extra = {'HTTP_STATUS': status, 'DURATION_MS': duration_ms}
        if batch_size is not None:
            extra['BATCH_SIZE'] = batch_size
        if error is None:
            log.debug('%s %s -> %s in %d ms (attempt %d)', method, path, status, duration_ms, attempt,
                      extra=extra)
        else:
            log.debug('%s %s -> %s error in %d ms (attempt %d): %s', method, path, error.kind, duration_ms,
                      attempt, error, extra=extra)

    def _count(self, method, name, status, started):
        if self.metrics is not None:
            try:
                self.metrics.on_request(method, name, _status_class(status), self.clock() - started)
            except Exception:  # metrics must never break a request
                log.exception('metrics hook failed; continuing')


def _loads(text):
    """Return the JSON value of ``text``, or None when it is not JSON (or nested too deeply to parse)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def validate_results(events, data):
    """Given the sent ``events`` and the decoded answer, return results aligned with ``events``.

    Raise a transient 'malformed response' error unless ``data`` is
    ``{"results": [...]}`` answering every sent event_id exactly once with a
    valid status.
    """
    results = data.get('results') if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise errors.malformed('events answer has no "results" list', 200)
    wanted = [event['event_id'] for event in events]
    by_id = {}
    for result in results:
        if not isinstance(result, dict) or result.get('status') not in EVENT_STATUSES:
            raise errors.malformed('events answer has a result without a valid status', 200)
        event_id = result.get('event_id')
        if not isinstance(event_id, str) or event_id in by_id:
            raise errors.malformed('events answer repeats an event_id or lacks one', 200)
        by_id[event_id] = result
    if len(set(wanted)) != len(by_id) or any(event_id not in by_id for event_id in wanted):
        raise errors.malformed('events answer does not answer every event exactly once', 200)
    aligned = []
    for event_id in wanted:
        result = dict(by_id[event_id])
        if result['status'] == 'rejected':
            error = result.get('error')
            result['error'] = errors.one_line(error) if isinstance(error, str) and error.strip() else \
                'rejected by AccountDB (no reason given)'
        aligned.append(result)
    return aligned

