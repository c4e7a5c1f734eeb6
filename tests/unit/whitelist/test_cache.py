"""The whitelist cache's file and states. Refreshing over HTTP is in
tests/integration/test_whitelist_http.py (against the reference AccountDB)."""

import json
import logging
import os

import pytest

from pve_hooks import statedir
from pve_hooks.whitelist import cache as whitelist
from pve_hooks.whitelist import filter as whitelist_filter
from pve_hooks.whitelist.cache import WhitelistCache


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def write_cache(state_dir, **fields):
    record = {'version': 1, 'vmids': [101, 102, 105], 'etag': '"wl-3"',
              'last_modified': 'Tue, 14 Nov 2023 22:13:20 GMT', 'fetched_at': 1_700_000_000.0,
              'last_attempt_at': 1_700_000_000.0, 'last_error': None, 'failing_since': None}
    record.update(fields)
    path = os.path.join(str(state_dir), statedir.WHITELIST)
    with open(path, 'w') as stream:
        json.dump(record, stream)
    return path


# --- the cache file -------------------------------------------------------

def test_no_file_means_no_cache_and_everything_allowed(tmp_path):
    cache = WhitelistCache(str(tmp_path), clock=Clock())
    assert not cache.has_list
    assert cache.allows(12345)
    assert cache.age() is None
    status = cache.status()
    assert status['state'] == whitelist.NO_CACHE
    assert status['filtering'] is False
    assert status['fetched_at'] is None
    assert cache.due()


def test_using_the_filter_with_no_list_warns_once(tmp_path, caplog):
    cache = WhitelistCache(str(tmp_path), clock=Clock())
    with caplog.at_level(logging.WARNING, logger='pve_hooks.whitelist.filter'):
        assert cache.allows(100) and cache.filter.allows(200)
        assert cache.filter.select([300, 100]) == [300, 100]
        (tmp_path / statedir.WHITELIST).write_text(json.dumps({'vmids': None, 'last_error': 'x'}))
        assert cache.reload_if_changed() and cache.allows(300)
    assert [r.getMessage() for r in caplog.records] == [
        whitelist_filter.UNFILTERED_WARNING.format(cache.path)]
    assert 'reporting ALL guests (nothing filtered)' in caplog.records[0].getMessage()


def test_cached_file_is_loaded_without_fetching(tmp_path):
    write_cache(tmp_path)
    clock = Clock(1_700_000_100.0)
    cache = WhitelistCache(str(tmp_path), clock=clock, refresh_interval=300, max_stale=1000)
    assert cache.has_list
    assert cache.vmids.format() == '101-102,105'
    assert cache.allows(105) and not cache.allows(103)
    assert cache.age() == 100.0
    assert cache.etag == '"wl-3"'
    assert not cache.due()
    clock.now += 200
    assert cache.due()
    status = cache.status()
    assert status['state'] == whitelist.OK
    assert status['fetched_at'] == 1_700_000_000.0
    assert status['count'] == 3


def test_an_empty_cached_list_allows_all_but_is_a_list(tmp_path):
    write_cache(tmp_path, vmids=[])
    cache = WhitelistCache(str(tmp_path), clock=Clock())
    assert cache.has_list and cache.allows(4242)
    assert cache.status()['state'] == whitelist.OK
    assert cache.status()['filtering'] is False


def test_stale_and_failing_states(tmp_path):
    write_cache(tmp_path, last_error='connection refused', failing_since=1_700_000_050.0)
    clock = Clock(1_700_000_500.0)
    cache = WhitelistCache(str(tmp_path), clock=clock, max_stale=1000)
    assert cache.state() == whitelist.FAILING
    clock.now += 1000
    assert cache.is_stale()
    assert cache.state() == whitelist.STALE
    assert cache.allows(101) and not cache.allows(103)  # a stale list still filters


@pytest.mark.parametrize('content, reason', [
    (b'{"vmids": [101', 'Expecting'),
    (b'\xff\xfe', 'codec'),
    (b'[1, 2]', 'not a JSON object'),
    (b'{"vmids": [101, "x"], "fetched_at": 1}', "'vmids' is not a list of integers"),
    (b'{"vmids": [101, true], "fetched_at": 1}', "'vmids' is not a list of integers"),
    (b'{"vmids": {"101": 1}, "fetched_at": 1}', "'vmids' is not a list of integers"),
    (b'{"vmids": [101], "fetched_at": "yesterday"}', "'fetched_at' is not a number"),
    (b'{"vmids": [101]}', "'vmids' without 'fetched_at'"),
])
def test_corrupt_file_is_quarantined_and_treated_as_no_cache(tmp_path, caplog, content, reason):
    path = tmp_path / statedir.WHITELIST
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger='pve_hooks.whitelist.cache'):
        cache = WhitelistCache(str(tmp_path), clock=Clock())
    assert not cache.has_list and cache.allows(7777)
    assert not path.exists()
    moved = [name for name in os.listdir(str(tmp_path)) if name.startswith('whitelist.json.corrupt-')]
    assert moved == ['whitelist.json.corrupt-1700000000']
    assert (tmp_path / moved[0]).read_bytes() == content
    [record] = [r for r in caplog.records if 'whitelist cache is corrupt' in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert 'whitelist cache is corrupt' in record.getMessage() and reason in record.getMessage()
    assert moved[0] in record.getMessage()


def test_a_second_corrupt_file_does_not_overwrite_the_first(tmp_path):
    for _ in range(2):
        (tmp_path / statedir.WHITELIST).write_text('garbage')
        WhitelistCache(str(tmp_path), clock=Clock())
    assert sorted(os.listdir(str(tmp_path))) == ['whitelist.json.corrupt-1700000000',
                                                 'whitelist.json.corrupt-1700000000.1']


def test_save_is_atomic_and_round_trips(tmp_path):
    write_cache(tmp_path)
    cache = WhitelistCache(str(tmp_path / 'sub'), clock=Clock())
    assert not cache.has_list
    source = WhitelistCache(str(tmp_path), clock=Clock())
    source.path = str(tmp_path / 'sub' / statedir.WHITELIST)
    source.save()
    assert os.listdir(str(tmp_path / 'sub')) == [statedir.WHITELIST]
    assert cache.reload_if_changed()
    assert cache.vmids.format() == '101-102,105'
    assert not cache.reload_if_changed()


def test_unwritable_state_dir_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / 'not-a-dir'
    blocker.write_text('')
    cache = WhitelistCache(str(blocker), clock=Clock())
    with caplog.at_level(logging.ERROR, logger='pve_hooks.whitelist.cache'):
        cache._save_quietly()
    assert 'cannot write the whitelist cache' in caplog.text


def test_from_settings_uses_the_configured_values(tmp_path):
    from pve_hooks.config import loader as config

    settings = config.load(env={}, overrides=['paths.state_dir={0}'.format(tmp_path),
                                              'whitelist.refresh_interval=60', 'whitelist.max_stale=600'])
    cache = WhitelistCache.from_settings(settings)
    assert cache.path == str(tmp_path / 'whitelist.json')
    assert (cache.refresh_interval, cache.max_stale) == (60.0, 600.0)


def test_times_written_before_the_clock_stepped_back_are_taken_as_now(tmp_path):
    write_cache(tmp_path, fetched_at=1_700_086_400.0, last_attempt_at=1_700_086_400.0)   # a day ahead
    clock = Clock(1_700_000_000.0)
    cache = WhitelistCache(str(tmp_path), clock=clock, refresh_interval=300, max_stale=1000)
    assert cache.fetched_at == 1_700_000_000.0 and cache.age() == 0.0
    clock.now += 301
    assert cache.due()   # after refresh_interval, not after a day and refresh_interval
