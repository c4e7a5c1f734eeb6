"""Fault specifications for the reference AccountDB: validation and rule consumption."""

import pytest

from pve_hooks_devserver import faults


@pytest.mark.parametrize('spec, words', [
    ('{', 'not valid JSON'),
    ('"x"', 'object or a list'),
    ('{"rules": {}}', '"rules" must be a list'),
    ('{"surprise": 1}', 'unknown key'),
    ('[{"mode": "nope"}]', '"mode" must be one of'),
    ('[{"mode": "status"}]', 'needs "status"'),
    ('[{"mode": "slow", "delay": true}]', 'needs "delay"'),
    ('[{"mode": "drop", "count": 0}]', '"count"'),
    ('[{"mode": "drop", "probability": 2}]', '"probability"'),
    ('[{"mode": "drop", "after": -1}]', '"after"'),
    ('[{"mode": "reject", "event_ids": ["a"], "as": "500"}]', '"as"'),
    ('{"max_body_bytes": 0}', 'max_body_bytes'),
])
def test_invalid_specs_say_what_is_wrong(spec, words):
    with pytest.raises(faults.FaultSpecError, match=words):
        faults.parse(spec)


def test_count_expires_a_rule():
    active = faults.Faults([{'mode': 'drop', 'count': 2}])
    assert [bool(active.take('GET', '/x')) for _ in range(3)] == [True, True, False]
    assert active.current()['rules'] == []


def test_after_lets_requests_through_first():
    active = faults.Faults([{'mode': 'drop', 'after': 2, 'count': 1}])
    assert [bool(active.take('GET', '/x')) for _ in range(4)] == [False, False, True, False]


def test_path_and_method_filters():
    active = faults.Faults([{'mode': 'drop', 'path': '/api/v1/events', 'method': 'post'}])
    assert active.take('POST', '/api/v1/events') is not None
    assert active.take('GET', '/api/v1/events') is None
    assert active.take('POST', '/api/v1/health') is None


def test_probability_is_reproducible_with_a_seed():
    def run():
        active = faults.Faults({'seed': 3, 'rules': [{'mode': 'drop', 'probability': 0.3}]})
        return [bool(active.take('GET', '/')) for _ in range(50)]

    first = run()
    assert first == run() and 0 < sum(first) < 50


def test_first_matching_rule_wins_and_reject_rules_are_separate():
    active = faults.Faults([{'mode': 'reject', 'event_ids': ['a']}, {'mode': 'slow', 'delay': 1},
                            {'mode': 'drop'}])
    assert active.take('POST', '/api/v1/events')['mode'] == 'slow'
    assert active.rejections('POST', '/api/v1/events', ['a', 'b']) == (None, {'a'})


def test_reject_as_status():
    active = faults.Faults([{'mode': 'reject', 'event_ids': ['a', 'z'], 'as': '422'}])
    assert active.rejections('POST', '/', ['x', 'a']) == (422, {'a'})
    assert active.rejections('POST', '/', ['x']) == (None, set())


def test_max_body_bytes():
    assert faults.Faults({'max_body_bytes': 10}).max_body_bytes == 10
    assert faults.Faults().max_body_bytes is None
