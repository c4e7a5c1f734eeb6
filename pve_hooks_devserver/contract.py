"""What contract v1 (docs/accountdb-api.md) asks of a request, apart from HTTP itself.

The routes (name, path template, regex) and the methods each allows; the
reference server's own limits; what makes an event valid; when a
conditional GET is answered 304. Endpoint paths are the schema defaults of
``accountdb.endpoints.*``, so the server and the client's default
configuration cannot drift apart.
"""

import re

from pve_hooks.accountdb import backoff
from pve_hooks.config import schema

PHASES = ('pre-start', 'post-start', 'pre-stop', 'post-stop')
VMID_MIN, VMID_MAX = 100, 999999999
# The reference server's own limits (documented in docs/accountdb-api.md).
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 10000
MAX_EVENT_ID_CHARS = 200


def _route_regex(template):
    pattern = re.escape(template).replace(re.escape('{node}'), '(?P<node>[^/]+)')
    return re.compile('^' + pattern + '$')


ROUTES = [(name, schema.BY_KEY['accountdb.endpoints.' + name].default)
          for name in ('health', 'events', 'inventory', 'heartbeat', 'whitelist')]
ROUTES = [(name, template, _route_regex(template)) for name, template in ROUTES]
METHODS = {'health': ('GET',), 'events': ('POST',), 'inventory': ('PUT',), 'heartbeat': ('POST',),
           'whitelist': ('GET', 'POST')}


def is_vmid(value):
    """Return True when ``value`` is a VMID: an integer (not a bool) from VMID_MIN to VMID_MAX."""
    return isinstance(value, int) and not isinstance(value, bool) and VMID_MIN <= value <= VMID_MAX


def event_problem(event):
    """Return why ``event`` is not acceptable (one line), or None when it is valid."""
    if not is_vmid(event.get('vmid')):
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
