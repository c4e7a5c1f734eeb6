"""The hook event: its fields (schema version 1), how it is built, encoded and validated.

Imported by the hookscript's hot path: built-ins only (no ``json``, ``re``,
``uuid``, ``datetime``). The JSON encoding is written by hand for the few
value types an event holds; :func:`validate` checks an event read back from
disk (the daemon decodes it with ``json``).

An event (JSON object, one per file)::

    {"schema": 1, "event_id": "<uuid4>", "node": "pve1", "vmid": 100,
     "guest_type": "qemu"|"lxc"|"unknown", "phase": "pre-start"|...,
     "occurred_at": "2026-11-26T10:35:26.123456Z", "seq": 1764153326123456,
     "migrated_from": "pve2" (only when PVE_MIGRATED_FROM was set),
     "source": "hookscript"}
"""

import time

SCHEMA_VERSION = 1
PHASES = ('pre-start', 'post-start', 'pre-stop', 'post-stop')
GUEST_TYPES = ('qemu', 'lxc', 'unknown')
VMID_MIN = 100
VMID_MAX = 999999999
MAX_EVENT_BYTES = 65536  # an event is ~300 bytes; anything larger is corrupt
FIELD_ORDER = ('schema', 'event_id', 'node', 'vmid', 'guest_type', 'phase', 'occurred_at', 'seq',
               'migrated_from', 'source')
_HEX = '0123456789abcdef'


class EventError(ValueError):
    """An event failed validation; the message names the field and the problem."""


def new_event_id(random_bytes):
    """Given 16 random bytes (``os.urandom(16)``), return them as a UUID4 string."""
    raw = bytearray(random_bytes)
    if len(raw) != 16:
        raise ValueError('expected 16 random bytes, got {0}'.format(len(raw)))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return '-'.join((text[:8], text[8:12], text[12:16], text[16:20], text[20:]))


def format_time(ns):
    """Given nanoseconds since the epoch, return RFC 3339 UTC with microseconds (``...26.123456Z``)."""
    seconds, rest = divmod(ns, 1000000000)
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds)) + '.{0:06d}Z'.format(rest // 1000)


def parse_vmid(text):
    """Given argv's vmid text, return it as an int; raise EventError unless it is digits in range."""
    if not text.isdigit() or not text.isascii() or len(text) > 9 or text[0] == '0':
        raise EventError('vmid {0!r} is not a number from {1} to {2}'.format(text, VMID_MIN, VMID_MAX))
    vmid = int(text)
    if not VMID_MIN <= vmid <= VMID_MAX:
        raise EventError('vmid {0!r} is not a number from {1} to {2}'.format(text, VMID_MIN, VMID_MAX))
    return vmid


def check_phase(text):
    """Return ``text`` if it is one of the four hook phases; raise EventError otherwise."""
    if text not in PHASES:
        raise EventError('phase {0!r} is not one of {1}'.format(text, ', '.join(PHASES)))
    return text


def make_event(event_id, node, vmid, guest_type, phase, occurred_at, seq, migrated_from=None,
               source='hookscript'):
    """Return an event dict in field order (``migrated_from`` only when given)."""
    event = {'schema': SCHEMA_VERSION, 'event_id': event_id, 'node': node, 'vmid': vmid,
             'guest_type': guest_type, 'phase': phase, 'occurred_at': occurred_at, 'seq': seq}
    if migrated_from is not None:
        event['migrated_from'] = migrated_from
    event['source'] = source
    return event


def _escape(text):
    if text.isascii() and text.isprintable() and '"' not in text and '\\' not in text:
        return '"' + text + '"'
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"' or ch == '\\':
            out.append('\\' + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append('\\u{0:04x}\\u{1:04x}'.format(0xD800 | (code >> 10), 0xDC00 | (code & 0x3FF)))
        else:
            out.append('\\u{0:04x}'.format(code))
    out.append('"')
    return ''.join(out)


def encode(event):
    """Return ``event`` (a flat dict of str -> str/int/bool/None) as compact ASCII JSON bytes.

    Non-ASCII text is written as \\u escapes, so any str (even with
    surrogate-escaped bytes from the environment) encodes. Raise TypeError
    for any other value type.
    """
    parts = []
    for key, value in event.items():
        if value is None:
            text = 'null'
        elif value is True:
            text = 'true'
        elif value is False:
            text = 'false'
        elif isinstance(value, int):
            text = str(int(value))
        elif isinstance(value, str):
            text = _escape(value)
        else:
            raise TypeError('cannot encode {0}={1!r} in an event'.format(key, value))
        parts.append(_escape(key) + ':' + text)
    return ('{' + ','.join(parts) + '}\n').encode('ascii')


def _is_event_id(value):
    # 8-4-4-12 lower-case hex: '-' exactly at 8, 13, 18, 23 and nothing but hex elsewhere (str methods, no loop)
    return (isinstance(value, str) and len(value) == 36 and value.count('-') == 4
            and value[8] == value[13] == value[18] == value[23] == '-' and not value.strip(_HEX + '-'))


def _is_timestamp(value):
    # 2026-11-26T10:35:26.123456Z
    if not isinstance(value, str) or len(value) != 27 or not value.isascii():
        return False
    if value[4] + value[7] + value[10] + value[13] + value[16] + value[19] + value[26] != '--T::.Z':
        return False
    if not (value[:4] + value[5:7] + value[8:10] + value[11:13] + value[14:16] + value[17:19]
            + value[20:26]).isdigit():  # ASCII only (checked above), so isdigit means 0-9
        return False
    month, day = int(value[5:7]), int(value[8:10])
    hour, minute, second = int(value[11:13]), int(value[14:16]), int(value[17:19])
    return 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value):
    return isinstance(value, str) and value != '' and len(value) <= 255


_CHECKS = (
    ('schema', lambda v: _is_int(v) and v == SCHEMA_VERSION, 'schema version {0}'.format(SCHEMA_VERSION)),
    ('event_id', _is_event_id, 'a lower-case UUID string'),
    ('node', _is_text, 'a node name'),
    ('vmid', lambda v: _is_int(v) and VMID_MIN <= v <= VMID_MAX,
     'an integer from {0} to {1}'.format(VMID_MIN, VMID_MAX)),
    ('guest_type', lambda v: v in GUEST_TYPES, 'one of ' + ', '.join(GUEST_TYPES)),
    ('phase', lambda v: v in PHASES, 'one of ' + ', '.join(PHASES)),
    ('occurred_at', _is_timestamp, 'an RFC 3339 UTC time with microseconds'),
    ('seq', lambda v: _is_int(v) and v >= 0, 'a non-negative integer'),
    ('source', _is_text, 'a non-empty string'),
)


def _passes(event):
    """Return True if the dict ``event`` passes every check of :func:`validate`, in one expression.

    The daemon validates every event it claims (100,000 in a backlog); this
    costs a third of the per-field loop below, which runs only when this
    says no, to name the first wrong field. It never accepts what the loop
    rejects (tests/unit/test_event.py feeds both the same bad events).
    """
    try:
        schema, vmid, seq = event['schema'], event['vmid'], event['seq']
        node, source = event['node'], event['source']
        return (type(schema) is int and schema == SCHEMA_VERSION
                and type(vmid) is int and VMID_MIN <= vmid <= VMID_MAX
                and type(seq) is int and seq >= 0
                and type(node) is str and 0 < len(node) <= 255
                and type(source) is str and 0 < len(source) <= 255
                and event['guest_type'] in GUEST_TYPES and event['phase'] in PHASES
                and _is_event_id(event['event_id']) and _is_timestamp(event['occurred_at'])
                and ('migrated_from' not in event or _is_text(event['migrated_from'])))
    except (KeyError, TypeError):
        return False


def validate(event):
    """Check a decoded event; return it unchanged.

    Raise EventError naming the first field that is missing or wrong.
    Unknown extra fields are allowed (forward compatibility within schema 1).
    """
    if type(event) is dict and _passes(event):
        return event
    if not isinstance(event, dict):
        raise EventError('event is a {0}, expected a JSON object'.format(type(event).__name__))
    for key, check, expected in _CHECKS:
        if key not in event:
            raise EventError('event field {0!r} is missing'.format(key))
        if not check(event[key]):
            raise EventError('event field {0!r} is {1!r}, expected {2}'.format(key, event[key], expected))
    if 'migrated_from' in event and not _is_text(event['migrated_from']):
        raise EventError('event field {0!r} is {1!r}, expected a node name'.format(
            'migrated_from', event['migrated_from']))
    return event
