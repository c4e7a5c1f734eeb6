"""Retry delays: capped exponential backoff with full jitter, honouring Retry-After.

These are plain functions of their inputs (randomness and the clock are
parameters), so the daemon, the CLI and the tests compute identical delays.

Why not urllib3's ``Retry``: its constructor arguments and behaviour changed
between urllib3 1.26 (Debian 12) and 2.x (``method_whitelist`` →
``allowed_methods``, ``backoff_max`` and ``backoff_jitter`` only in 2.x,
different Retry-After handling), it sleeps inside the request (the caller
could not keep events, log once or consult the circuit breaker between
attempts), and it cannot see our taxonomy (a malformed 200 is transient for
us). So the client makes exactly one request per call and the caller retries
with :func:`delay`; the behaviour is identical on both urllib3 versions.
"""

import email.utils
import re
import time

# Longest wait any header can ask for (a year); longer values are clamped, so a
# Retry-After of hundreds of digits is a number, not an OverflowError.
MAX_SECONDS = 365 * 86400.0
_DIGITS = re.compile(r'[0-9]+\Z')


def delay(attempt, base, cap, rand, retry_after=None, max_retry_after=None):
    """Return the seconds to wait before retry number ``attempt`` (1 = first retry).

    Full jitter: a uniform draw in [0, min(cap, base * 2**(attempt-1))), with
    ``rand()`` returning a float in [0, 1). When the server sent Retry-After
    (``retry_after`` seconds), wait at least that long, but never longer than
    ``max_retry_after`` (when given) for the Retry-After part.
    """
    attempt = max(1, int(attempt))
    exponent = min(attempt - 1, 64)  # 2**64 * base is far above any cap; avoids huge ints
    ceiling = min(float(cap), float(base) * (2 ** exponent))
    jittered = rand() * ceiling
    if retry_after is not None and retry_after > 0:
        honoured = float(retry_after)
        if max_retry_after is not None:
            honoured = min(honoured, float(max_retry_after))
        return max(jittered, honoured)
    return jittered


def delay_for(settings, attempt, rand, retry_after=None):
    """Return :func:`delay` with ``retry.base_delay``, ``retry.max_delay`` and ``retry.max_retry_after``."""
    return delay(attempt, settings['retry.base_delay'], settings['retry.max_delay'], rand,
                 retry_after=retry_after, max_retry_after=settings['retry.max_retry_after'])


def parse_retry_after(value, now=time.time):
    """Given a Retry-After header value, return the seconds to wait (0 .. MAX_SECONDS), or None.

    Accepts delta-seconds (``"120"``) and an HTTP date; a date in the past
    gives 0. Returns None for a missing or unparseable value; never raises,
    whatever the server sent (hundreds of digits, non-ASCII digits, a date
    in the year 9999).
    """
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value:
        return None
    if _DIGITS.match(value):
        return parse_length(value, maximum=MAX_SECONDS)
    when = parse_http_date(value)
    if when is None:
        return None
    return min(MAX_SECONDS, max(0.0, when - now()))


def parse_length(value, maximum):
    """Given a header of ASCII digits (Content-Length, Retry-After), return it as a float clamped to ``maximum``.

    Return None when ``value`` is not ASCII digits. Never converts thousands
    of digits to an int (ValueError since Python 3.11) or a float (OverflowError).
    """
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not _DIGITS.match(value):
        return None
    digits = value.lstrip('0') or '0'
    if len(digits) > len(str(int(maximum))):
        return float(maximum)
    return min(float(maximum), float(int(digits)))


def parse_http_date(value):
    """Given an HTTP date (``Thu, 26 Nov 2026 10:49:17 GMT``), return seconds since the epoch, or None."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when is None:
            return None
        return when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
