"""Backoff delays are a pure function of attempt, settings, randomness and Retry-After."""

import email.utils

import pytest

from pve_hooks.accountdb import backoff
from pve_hooks.config import loader as config


def test_first_retry_draws_below_the_base_delay():
    assert backoff.delay(1, base=1.0, cap=300.0, rand=lambda: 0.5) == 0.5
    assert backoff.delay(1, base=1.0, cap=300.0, rand=lambda: 0.0) == 0.0


def test_ceiling_doubles_each_attempt_until_the_cap():
    ceilings = [backoff.delay(n, base=1.0, cap=30.0, rand=lambda: 1.0) for n in range(1, 8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_full_jitter_spreads_uniformly_over_zero_to_ceiling():
    draws = [i / 10 for i in range(10)]
    delays = [backoff.delay(4, base=0.5, cap=100.0, rand=lambda d=d: d) for d in draws]
    assert delays == [d * 4.0 for d in draws]


def test_huge_attempt_numbers_stay_at_the_cap():
    assert backoff.delay(10 ** 6, base=1.0, cap=300.0, rand=lambda: 0.999) == pytest.approx(299.7)


def test_attempt_below_one_counts_as_the_first():
    assert backoff.delay(0, base=2.0, cap=300.0, rand=lambda: 1.0) == 2.0


def test_retry_after_is_a_floor():
    assert backoff.delay(1, base=1.0, cap=300.0, rand=lambda: 0.1, retry_after=7) == 7.0
    # A jittered delay already longer than Retry-After wins.
    assert backoff.delay(9, base=1.0, cap=300.0, rand=lambda: 0.5, retry_after=7) == 128.0


def test_retry_after_is_capped_by_max_retry_after():
    assert backoff.delay(1, base=1.0, cap=300.0, rand=lambda: 0.0, retry_after=86400,
                         max_retry_after=600) == 600.0


def test_delay_for_uses_the_retry_settings(tmp_path):
    settings = config.load(env={}, require_file=False, overrides=[
        'retry.base_delay=2', 'retry.max_delay=10', 'retry.max_retry_after=5'])
    assert backoff.delay_for(settings, 3, lambda: 1.0) == 8.0
    assert backoff.delay_for(settings, 5, lambda: 1.0) == 10.0
    assert backoff.delay_for(settings, 1, lambda: 0.0, retry_after=60) == 5.0


@pytest.mark.parametrize('value, expected', [
    ('120', 120.0), (' 3 ', 3.0), ('0', 0.0), ('', None), (None, None), ('soon', None), ('-5', None)])
def test_parse_retry_after_seconds(value, expected):
    assert backoff.parse_retry_after(value) == expected


def test_parse_retry_after_http_date_uses_the_injected_clock():
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert backoff.parse_retry_after(header, now=lambda: now) == 42.0
    past = email.utils.formatdate(now - 42, usegmt=True)
    assert backoff.parse_retry_after(past, now=lambda: now) == 0.0


def test_parse_http_date():
    assert backoff.parse_http_date('Thu, 01 Jan 1970 00:01:00 GMT') == 60.0
    assert backoff.parse_http_date('not a date') is None
