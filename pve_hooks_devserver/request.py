"""What a request brings besides its path: its body (length, gzip, JSON) and its bearer token.

Each reader raises :class:`BadRequest` with the status to answer; the
handler (pve_hooks_devserver.handler) turns it into a JSON error.
"""

import hmac
import json
import logging
import os
import threading
import zlib

from pve_hooks.config import loader as config

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """The request cannot be processed: answer ``status`` with ``message``; ``close``: close the connection."""

    def __init__(self, message, status=400, close=False):
        super().__init__(message)
        self.status = status
        self.close = close


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


def read_body(headers, rfile, limit):
    """Given a request's ``headers`` and its stream, return its raw body (b'' without Content-Length).

    Raise BadRequest that closes the connection: 411 for a chunked body, 400
    for an invalid Content-Length, 413 for one over ``limit`` bytes.
    """
    if headers.get('Transfer-Encoding', '').lower() == 'chunked':
        raise BadRequest('chunked request bodies are not supported; send Content-Length', 411, close=True)
    length = headers.get('Content-Length')
    if length is None:
        return b''
    if not length.isdigit():
        raise BadRequest('invalid Content-Length', close=True)
    length = int(length)
    if length > limit:
        raise BadRequest('request body of {0} bytes is over the limit of {1}'.format(length, limit), 413, close=True)
    return rfile.read(length)


def json_body(headers, raw, limit):
    """Given a request's ``headers`` and raw body, return the decoded JSON; raise BadRequest.

    gzip (Content-Encoding) is decompressed to at most ``limit`` bytes (413
    beyond, 400 for bad gzip, 415 for another encoding); 400 for invalid JSON.
    """
    encoding = headers.get('Content-Encoding', 'identity').strip().lower()
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


def check_token(headers, token):
    """Raise BadRequest unless ``headers`` carry the bearer token ``token`` (a TokenFile) holds.

    503 when the token file cannot be read, 401 when the token is missing or wrong.
    """
    try:
        expected = token.get()
    except (OSError, config.TokenError) as error:
        log.error('dev-accountdb: cannot read the token file: %s', error)
        raise BadRequest('the server cannot read its token file', 503)
    header = headers.get('Authorization', '')
    given = header[7:] if header[:7].lower() == 'bearer ' else ''
    if not (given and hmac.compare_digest(given.encode('utf-8'), expected.encode('utf-8'))):
        raise BadRequest('missing or invalid bearer token', 401)
