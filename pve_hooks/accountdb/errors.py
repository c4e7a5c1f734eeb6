"""The one error taxonomy for talking to AccountDB.

Every failure of an AccountDB request becomes exactly one
:class:`AccountDBError` whose ``kind`` tells the caller what to do:

``transient``
    Connection refused/reset, DNS failure, timeouts, 408, 409, 425, 429, 5xx,
    and malformed responses (HTML error pages, invalid JSON, JSON of the wrong
    shape, bodies over ``accountdb.max_response_bytes``). Retry with backoff
    through the circuit breaker.
``configuration``
    404/405 on an endpoint, TLS verification failure, an unexpected redirect,
    any other 4xx this contract does not define (e.g. 415). Alert, keep every
    event, retry at the capped backoff: a wrong path or certificate must never
    turn events into dead letters.
``auth``
    401/403, or a token file that cannot be used. Alert at once, re-read the
    token before every retry, keep retrying at the capped backoff.
``rejected``
    400/413/422 on a request *with AccountDB's JSON error body*
    (``{"error": "..."}``, application/json): AccountDB refuses this
    request's content. A batch is bisected until a single offending event
    stands alone; only that event becomes a dead letter. The same statuses
    with any other body (a proxy's or WAF's HTML page, an empty body) are
    *configuration*: something between us and AccountDB refused the request,
    which says nothing about the events, so none of them may become a dead
    letter (and later events of the same guest must not overtake them).
``conflict``
    412 on a conditional whitelist update (``If-Match`` is stale): refetch and
    ask the user to retry (:class:`PreconditionFailed`).

409 Conflict is *transient*: the contract gives it no per-request meaning
other than "AccountDB's state changed concurrently"; the retry is safe
because events are deduplicated by ``event_id``, and classifying it as a
rejection would turn events into dead letters for a server-side race.

``reason`` is always one line and never contains the token.
"""

import errno
import socket

TRANSIENT = 'transient'
CONFIGURATION = 'configuration'
AUTH = 'auth'
REJECTED = 'rejected'
CONFLICT = 'conflict'

KINDS = (TRANSIENT, CONFIGURATION, AUTH, REJECTED, CONFLICT)

_REASON_MAX = 300


class AccountDBError(Exception):
    """A failed AccountDB request.

    Attributes: ``kind`` (one of :data:`KINDS`), ``status`` (the HTTP status,
    or None when there was no response), ``retry_after`` (seconds the server
    asked us to wait, or None), ``reason`` (one line, never the token).
    """

    kind = TRANSIENT

    def __init__(self, reason, status=None, retry_after=None):
        self.reason = one_line(reason)
        self.status = status
        self.retry_after = retry_after
        super().__init__(self.reason)

    def __str__(self):
        if self.status is not None:
            return 'HTTP {0}: {1}'.format(self.status, self.reason)
        return self.reason

    def __repr__(self):
        return '{0}({1!r}, status={2!r}, retry_after={3!r})'.format(
            type(self).__name__, self.reason, self.status, self.retry_after)


class TransientError(AccountDBError):
    """AccountDB is unreachable, overloaded or answered garbage: retry with backoff."""

    kind = TRANSIENT


class ConfigurationError(AccountDBError):
    """The URL, an endpoint path or the TLS setup is wrong: alert, keep events, retry capped."""

    kind = CONFIGURATION


class AuthError(AccountDBError):
    """The token was refused or cannot be read: alert, re-read the token, retry capped."""

    kind = AUTH


class RejectedError(AccountDBError):
    """AccountDB refuses this request's content (400/413/422): bisect a batch."""

    kind = REJECTED


class PreconditionFailed(AccountDBError):
    """412: the whitelist changed since it was read (stale ``If-Match``)."""

    kind = CONFLICT


_BY_KIND = {cls.kind: cls for cls in (TransientError, ConfigurationError, AuthError,
                                      RejectedError, PreconditionFailed)}


def one_line(text, limit=_REASON_MAX):
    """Given any text, return it on one line, at most ``limit`` characters."""
    text = ' '.join(str(text).split())
    if len(text) > limit:
        text = text[:limit - 3] + '...'
    return text


def kind_for_status(status, accountdb_error=True):
    """Given an HTTP status that is an error for this contract, return its kind.

    ``accountdb_error``: the body was AccountDB's JSON error shape (see
    :func:`is_accountdb_error`); only then is a 400/413/422 a rejection.
    2xx and 304 are not errors and are never passed here.
    """
    if status in (401, 403):
        return AUTH
    if status in (400, 413, 422):
        return REJECTED if accountdb_error else CONFIGURATION
    if status == 412:
        return CONFLICT
    if status in (408, 409, 425, 429) or status >= 500:
        return TRANSIENT
    # 404/405 (wrong path or method), 3xx (redirect: wrong URL scheme or host),
    # 415 (no gzip support), and any other 4xx or 1xx this contract does not use.
    return CONFIGURATION


_STATUS_HINTS = {
    CONFIGURATION: 'check accountdb.url and accountdb.endpoints',
    AUTH: 'check the token in accountdb.token_file',
}


def is_accountdb_error(content_type, data):
    """Given a response's Content-Type and its decoded JSON body (or None), say whether it is AccountDB's error shape.

    AccountDB's error bodies are ``{"error": "<one line>"}`` sent as
    application/json (docs/accountdb-api.md).
    """
    return ('json' in str(content_type or '').lower() and isinstance(data, dict)
            and isinstance(data.get('error'), str) and bool(data['error'].strip()))


def classify(status=None, exception=None, reason=None, retry_after=None, accountdb_error=True):
    """Return the :class:`AccountDBError` for a failed request. Never raises.

    Give either ``status`` (an HTTP error status; ``reason`` is what the body
    said; ``accountdb_error`` whether the body was AccountDB's JSON error
    shape) or ``exception`` (what requests, the TLS layer, the OS or a
    parser raised). ``retry_after`` is the parsed Retry-After in seconds, if any.
    """
    if exception is not None:
        try:
            return _classify_exception(exception)
        except Exception:  # never let a strange exception escape the taxonomy
            return TransientError('request to AccountDB failed ({0})'.format(type(exception).__name__))
    if not isinstance(status, int) or isinstance(status, bool):
        return TransientError(one_line(reason or 'request to AccountDB failed for an unknown reason'))
    kind = kind_for_status(status, accountdb_error)
    text = reason or 'AccountDB answered HTTP {0}'.format(status)
    if kind in _STATUS_HINTS and status in (401, 403, 404, 405):
        text = '{0} ({1})'.format(text, _STATUS_HINTS[kind])
    elif kind == CONFIGURATION and status in (400, 413, 422):
        text = '{0} (not AccountDB\'s JSON error: a proxy or firewall between this node and AccountDB ' \
               'refused the request; check accountdb.url and that proxy; every event is kept)'.format(text)
    return _BY_KIND[kind](text, status=status, retry_after=retry_after)


def malformed(reason, status=None):
    """Return the TransientError for a response that does not fit the contract."""
    return TransientError('malformed response from AccountDB: ' + reason, status=status)


def _chain(exception):
    """Yield the exception and everything it wraps (cause, context, args, .reason)."""
    seen = set()
    todo = [exception]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.append(getattr(current, '__cause__', None))
        todo.append(getattr(current, '__context__', None))
        todo.append(getattr(current, 'reason', None) if isinstance(
            getattr(current, 'reason', None), BaseException) else None)
        for arg in getattr(current, 'args', ()):
            if isinstance(arg, BaseException):
                todo.append(arg)


def _classify_exception(exception):
    """Map an exception raised while sending or reading a request to an AccountDBError."""
    import ssl

    import requests

    chain = list(_chain(exception))
    text = redact_urls(' '.join(_safe_str(item) for item in chain))
    lowered = text.lower()
    if any(isinstance(item, RecursionError) for item in chain):
        return malformed('answer nested too deeply to parse')
    if any(isinstance(item, OverflowError) for item in chain):
        return malformed('a number in the answer is out of range')

    if any(isinstance(item, (ssl.SSLCertVerificationError,)) for item in chain) or (
            isinstance(exception, requests.exceptions.SSLError) and (
                'certificate verify failed' in lowered or "doesn't match" in lowered
                or 'hostname mismatch' in lowered or 'wrong version number' in lowered)):
        return ConfigurationError('TLS verification of AccountDB failed ({0}); check accountdb.url, '
                                  'accountdb.ca_bundle and accountdb.verify_tls'.format(_tls_detail(lowered)))
    if isinstance(exception, (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                              requests.exceptions.InvalidURL, requests.exceptions.URLRequired)):
        return ConfigurationError('invalid AccountDB URL ({0}); check accountdb.url'.format(
            one_line(redact_urls(_safe_str(exception)), 120)))
    if isinstance(exception, requests.exceptions.TooManyRedirects):
        return ConfigurationError('too many redirects from AccountDB; check accountdb.url')
    if isinstance(exception, requests.exceptions.ConnectTimeout):
        return TransientError('timed out connecting to AccountDB (accountdb.timeout.connect)')
    if isinstance(exception, requests.exceptions.ReadTimeout) or 'read timed out' in lowered:
        return TransientError('timed out waiting for AccountDB to answer (accountdb.timeout.read)')
    if isinstance(exception, (requests.exceptions.ChunkedEncodingError,
                              requests.exceptions.ContentDecodingError)):
        return malformed('body cut short or not decodable')
    if isinstance(exception, OSError) and not isinstance(exception, requests.exceptions.RequestException) \
            and 'ca certificate bundle' in lowered:
        return ConfigurationError('cannot read the CA bundle ({0}); check accountdb.ca_bundle'.format(
            one_line(redact_urls(_safe_str(exception)), 120)))
    for item in chain:
        if type(item).__name__ == 'RemoteDisconnected':
            return TransientError('AccountDB closed the connection without a response')
        if isinstance(item, ConnectionRefusedError) or getattr(item, 'errno', None) == errno.ECONNREFUSED:
            return TransientError('connection to AccountDB refused')
        if isinstance(item, socket.gaierror):
            return TransientError('DNS lookup of the AccountDB host failed ({0})'.format(
                one_line(item.strerror or item, 80)))
        if isinstance(item, ConnectionResetError) or getattr(item, 'errno', None) == errno.ECONNRESET:
            return TransientError('connection to AccountDB reset')
        if isinstance(item, (socket.timeout, TimeoutError)):
            return TransientError('timed out talking to AccountDB')
    if 'remotedisconnected' in lowered or 'connection aborted' in lowered or 'without response' in lowered:
        return TransientError('AccountDB closed the connection without a response')
    if 'name or service not known' in lowered or 'failed to resolve' in lowered \
            or 'temporary failure in name resolution' in lowered:
        return TransientError('DNS lookup of the AccountDB host failed')
    if isinstance(exception, requests.exceptions.SSLError):
        return TransientError('TLS error talking to AccountDB ({0})'.format(
            one_line(redact_urls(_safe_str(exception)), 120)))
    name = type(exception).__name__
    return TransientError('request to AccountDB failed ({0}: {1})'.format(name, one_line(
        redact_urls(_safe_str(exception)), 160)))


def _safe_str(item):
    try:
        return str(item)
    except Exception:
        return type(item).__name__


_URL_SECRETS = None


def redact_urls(text):
    """Given any text, return it with the userinfo (``user:pass@``) and query string of every URL replaced by '...'."""
    global _URL_SECRETS
    if _URL_SECRETS is None:
        import re

        _URL_SECRETS = (re.compile(r'(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s@]*@'), re.compile(r'\?[^\s\'"]*'))
    userinfo, query = _URL_SECRETS
    text = userinfo.sub(r'\1...@', str(text))
    return query.sub('?...', text)


def _tls_detail(lowered):
    if 'self-signed' in lowered or 'self signed' in lowered:
        return 'self-signed certificate'
    if 'unable to get local issuer' in lowered:
        return 'unknown certificate authority'
    if 'expired' in lowered:
        return 'certificate expired'
    if "doesn't match" in lowered or 'hostname mismatch' in lowered or 'ip address mismatch' in lowered:
        return 'certificate does not match the host name'
    if 'wrong version number' in lowered:
        return 'the server does not speak TLS'
    return 'certificate verify failed'
