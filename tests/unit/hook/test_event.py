"""Unit tests for pve_hooks.hook.event: ids, times, argv checks, hand-written JSON, validation."""

import json
import os

import pytest

from pve_hooks.hook import event


def _valid(**changes):
    base = event.make_event('0f8fad5b-d9cb-469f-a165-70867728950e', 'pve1', 100, 'qemu', 'pre-start',
                            '2026-11-26T10:35:26.123456Z', 5)
    base.update(changes)
    return base


def test_new_event_id_is_uuid4_shaped():
    value = event.new_event_id(bytes(range(16)))
    assert value == '00010203-0405-4607-8809-0a0b0c0d0e0f'
    import uuid
    assert uuid.UUID(value).version == 4
    assert uuid.UUID(event.new_event_id(os.urandom(16))).version == 4


def test_new_event_id_rejects_wrong_length():
    with pytest.raises(ValueError):
        event.new_event_id(b'short')


@pytest.mark.parametrize('ns, text', [
    (0, '1970-01-01T00:00:00.000000Z'),
    (1795689326123456789, '2026-11-26T10:35:26.123456Z'),
    (1795689326999999999, '2026-11-26T10:35:26.999999Z'),
])
def test_format_time(ns, text):
    assert event.format_time(ns) == text


@pytest.mark.parametrize('text', ['100', '999999999', '12345'])
def test_parse_vmid_accepts(text):
    assert event.parse_vmid(text) == int(text)


@pytest.mark.parametrize('text', ['99', '0', '1000000000', '0100', '-100', '+100', '10 0', '', 'abc',
                                  '１２３', '100\n', '1e3'])
def test_parse_vmid_rejects(text):
    with pytest.raises(event.EventError, match='vmid'):
        event.parse_vmid(text)


def test_check_phase():
    for phase in event.PHASES:
        assert event.check_phase(phase) == phase
    with pytest.raises(event.EventError, match='pre-start, post-start, pre-stop, post-stop'):
        event.check_phase('pre-migrate')


@pytest.mark.parametrize('value', ['plain', 'quote " and \\ back', 'tab\tnew\nline\x00', 'ünïcødé',
                                   '\U0001F600 emoji', 'surrogate \udcff byte', ''])
def test_encode_matches_json(value):
    data = event.encode({'a': value, 'n': 12, 't': True, 'f': False, 'z': None})
    assert data.endswith(b'\n')
    data.decode('ascii')
    assert json.loads(data) == {'a': value, 'n': 12, 't': True, 'f': False, 'z': None}


def test_encode_rejects_other_types():
    with pytest.raises(TypeError):
        event.encode({'x': 1.5})


def test_make_event_field_order_and_migrated_from():
    ev = event.make_event('id', 'n', 100, 'lxc', 'post-stop', 't', 1, migrated_from='pve2')
    assert list(ev) == ['schema', 'event_id', 'node', 'vmid', 'guest_type', 'phase', 'occurred_at', 'seq',
                        'migrated_from', 'source']
    assert 'migrated_from' not in event.make_event('id', 'n', 100, 'lxc', 'post-stop', 't', 1)


def test_validate_accepts_a_valid_event_and_extras():
    assert event.validate(_valid()) == _valid()
    assert event.validate(_valid(migrated_from='pve2', extra='x'))


@pytest.mark.parametrize('changes, field', [
    ({'schema': 2}, 'schema'), ({'schema': True}, 'schema'),
    ({'event_id': 'nope'}, 'event_id'), ({'event_id': '0F8FAD5B-D9CB-469F-A165-70867728950E'}, 'event_id'),
    ({'node': ''}, 'node'), ({'node': 5}, 'node'),
    ({'vmid': 99}, 'vmid'), ({'vmid': '100'}, 'vmid'), ({'vmid': True}, 'vmid'),
    ({'guest_type': 'vm'}, 'guest_type'), ({'phase': 'start'}, 'phase'),
    ({'occurred_at': '2026-11-26 10:35:26Z'}, 'occurred_at'),
    ({'occurred_at': '2026-13-26T10:35:26.123456Z'}, 'occurred_at'),
    ({'event_id': '0f8fad5b-d9cb-469f-a165-70867728950'}, 'event_id'),    # 35 characters
    ({'event_id': '0f8fad5bd-9cb-469f-a165-70867728950e'}, 'event_id'),   # '-' one place late
    ({'event_id': '0f8fad5b-d9cb-469f-a165-7086-728950e'}, 'event_id'),   # a fifth '-'
    ({'event_id': '0f8fad5b-d9cb-469f-a165-70867g28950e'}, 'event_id'),   # 'g' inside
    ({'occurred_at': '2026-11-26T10:35:26.12x456Z'}, 'occurred_at'),
    ({'occurred_at': '2026-11-26T10:35:26.123456+'}, 'occurred_at'),
    ({'occurred_at': '2026-11-26T10-35:26.123456Z'}, 'occurred_at'),
    ({'occurred_at': '2026-11-26T10:35:26.12\u0663456Z'}, 'occurred_at'),  # a non-ASCII digit
    ({'seq': -1}, 'seq'), ({'seq': 1.0}, 'seq'), ({'source': ''}, 'source'),
    ({'migrated_from': ''}, 'migrated_from'),
    ({'node': 'n' * 256}, 'node'), ({'source': 's' * 256}, 'source'), ({'source': None}, 'source'),
    ({'vmid': 1000000000}, 'vmid'), ({'vmid': 100.0}, 'vmid'), ({'seq': True}, 'seq'),
    ({'guest_type': ['qemu']}, 'guest_type'), ({'phase': None}, 'phase'),
    ({'event_id': None}, 'event_id'), ({'occurred_at': 20261126}, 'occurred_at'),
    ({'migrated_from': 5}, 'migrated_from'), ({'schema': 1.0}, 'schema'),
])
def test_validate_rejects(changes, field):
    with pytest.raises(event.EventError, match=repr(field)):
        event.validate(_valid(**changes))
    assert not event._passes(_valid(**changes))   # the fast path never accepts what the loop rejects


def test_validate_rejects_missing_field_and_non_object():
    ev = _valid()
    del ev['phase']
    with pytest.raises(event.EventError, match="'phase' is missing"):
        event.validate(ev)
    with pytest.raises(event.EventError, match='JSON object'):
        event.validate([1])
