"""Fault injection for the reference AccountDB.

A fault specification is JSON: either a list of rules or an object
``{"seed": 1, "max_body_bytes": N, "rules": [rule, ...]}``. Each rule is an
object with a ``mode`` and optional filters:

``path``
    apply only to requests whose path starts with this (default: every
    request except ``/_admin/``);
``method``
    apply only to this HTTP method;
``count``
    apply to the next N matching requests only, then expire;
``probability``
    apply with this probability (drawn from a generator seeded by ``seed``);
``after``
    let the first N matching requests through untouched, then apply.

Modes (extra fields in brackets):

``refuse``    reset the connection (TCP RST) after reading the request
``drop``      close the connection without any response
``status``    answer [``status``] with a JSON error (text [``message``]), [``retry_after``] header
``slow``      wait [``delay``] seconds, then handle the request normally
``garbage``   answer 200 with an HTML page (or [``body``] as text/html)
``bad_json``  answer 200 as application/json with a body that is not JSON
``wrong_shape`` answer 200 with valid JSON of the wrong shape
``huge``      answer 200 with a JSON body of [``size``] bytes (with [``no_length``]:
              without Content-Length, ended by closing the connection)
``unauthorized`` answer 401 whatever the token
``reject``    events whose event_id is in [``event_ids``] are answered
              ``rejected``; with [``as``] = 400, 413 or 422 the whole request
              containing one of them gets that status instead

The first matching rule of all modes but ``reject`` applies; ``reject``
rules apply to the events endpoint in addition. Admin endpoints are never
faulted. ``max_body_bytes`` makes larger (decompressed) request bodies 413.
"""

import json
import random
import threading

MODES = ('refuse', 'drop', 'status', 'slow', 'garbage', 'bad_json', 'wrong_shape', 'huge',
         'unauthorized', 'reject')

_FIELDS = {
    'status': {'status': int}, 'slow': {'delay': (int, float)}, 'huge': {'size': int},
    'reject': {'event_ids': list},
}


class FaultSpecError(ValueError):
    """The fault specification is invalid; the message says where."""


def parse(text):
    """Given a fault specification as JSON text, return it validated (see :func:`validate`)."""
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise FaultSpecError('fault specification is not valid JSON ({0})'.format(error))
    return validate(spec)


def validate(spec):
    """Return ``spec`` normalised to ``{"seed", "max_body_bytes", "rules"}``; raise FaultSpecError."""
    if spec is None:
        spec = {}
    if isinstance(spec, list):
        spec = {'rules': spec}
    if not isinstance(spec, dict):
        raise FaultSpecError('fault specification must be an object or a list of rules')
    unknown = set(spec) - {'seed', 'max_body_bytes', 'rules'}
    if unknown:
        raise FaultSpecError('fault specification: unknown key(s) {0}'.format(', '.join(sorted(unknown))))
    rules = spec.get('rules', [])
    if not isinstance(rules, list):
        raise FaultSpecError('fault specification: "rules" must be a list')
    max_body = spec.get('max_body_bytes')
    if max_body is not None and (not isinstance(max_body, int) or max_body < 1):
        raise FaultSpecError('fault specification: "max_body_bytes" must be a positive integer')
    checked = []
    for number, rule in enumerate(rules, 1):
        where = 'fault rule {0}'.format(number)
        if not isinstance(rule, dict) or rule.get('mode') not in MODES:
            raise FaultSpecError('{0}: "mode" must be one of {1}'.format(where, ', '.join(MODES)))
        for field, kind in _FIELDS.get(rule['mode'], {}).items():
            if not isinstance(rule.get(field), kind) or isinstance(rule.get(field), bool):
                raise FaultSpecError('{0}: mode {1} needs "{2}"'.format(where, rule['mode'], field))
        if 'count' in rule and (not isinstance(rule['count'], int) or rule['count'] < 1):
            raise FaultSpecError('{0}: "count" must be a positive integer'.format(where))
        if 'after' in rule and (not isinstance(rule['after'], int) or rule['after'] < 0):
            raise FaultSpecError('{0}: "after" must be a non-negative integer'.format(where))
        if 'probability' in rule and not (isinstance(rule['probability'], (int, float))
                                          and 0 <= rule['probability'] <= 1):
            raise FaultSpecError('{0}: "probability" must be from 0 to 1'.format(where))
        if rule['mode'] == 'reject' and str(rule.get('as', 'result')) not in ('result', '400', '413', '422'):
            raise FaultSpecError('{0}: "as" must be result, 400, 413 or 422'.format(where))
        checked.append(dict(rule))
    return {'seed': spec.get('seed'), 'max_body_bytes': max_body, 'rules': checked}


class Faults:
    """The active fault rules; thread-safe. ``spec`` as for :func:`validate`."""

    def __init__(self, spec=None):
        self.lock = threading.Lock()
        self.set(spec)

    def set(self, spec):
        """Replace every rule with ``spec``; raise FaultSpecError when it is invalid."""
        spec = validate(spec)
        with self.lock:
            self.spec = spec
            self.random = random.Random(spec['seed'])

    def current(self):
        """Return the active specification (counts show what is left)."""
        with self.lock:
            return json.loads(json.dumps(self.spec))

    @property
    def max_body_bytes(self):
        return self.spec['max_body_bytes']

    def _applies(self, rule, method, path):
        if rule.get('path') and not path.startswith(rule['path']):
            return False
        if rule.get('method') and rule['method'].upper() != method:
            return False
        return True

    def _fire(self, rule):
        """Return True when ``rule`` fires now (after, probability), consuming one of its count."""
        if rule.get('after', 0) > 0:
            rule['after'] -= 1
            return False
        if 'probability' in rule and self.random.random() >= rule['probability']:
            return False
        if 'count' in rule:
            rule['count'] -= 1
            if rule['count'] <= 0:
                self.spec['rules'].remove(rule)
        return True

    def take(self, method, path):
        """Return the request-level rule for this request (consuming it), or None."""
        with self.lock:
            for rule in list(self.spec['rules']):
                if rule['mode'] != 'reject' and self._applies(rule, method, path) and self._fire(rule):
                    return dict(rule)
        return None

    def rejections(self, method, path, event_ids):
        """Return (status or None, set of rejected event_ids) for a batch of ``event_ids``."""
        rejected = set()
        with self.lock:
            for rule in list(self.spec['rules']):
                if rule['mode'] != 'reject' or not self._applies(rule, method, path):
                    continue
                hit = set(rule['event_ids']) & set(event_ids)
                if not hit or not self._fire(rule):
                    continue
                if str(rule.get('as', 'result')) != 'result':
                    return int(rule['as']), hit
                rejected |= hit
        return None, rejected
