"""WhitelistCache and bulk changes against the reference AccountDB over loopback HTTP."""

import logging

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.whitelist import cache as whitelist
from pve_hooks.whitelist import edit
from pve_hooks.whitelist.vmidset import VmidSet
from pve_hooks.whitelist.cache import WhitelistCache
from tests.support.accountdb import dev_accountdb, run_dev_accountdb  # noqa: F401  (pytest fixture)

WHITELIST_GET = 'GET /api/v1/whitelist'
WHITELIST_POST = 'POST /api/v1/whitelist'


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def endpoint(server, key):
    return server.stats()['endpoints'].get(key, {'count': 0, 'status': {}, 'bytes_out': 0})


def make(server, tmp_path, name, clock=None, **overrides):
    settings = server.settings(*['{0}={1}'.format(k.replace('__', '.'), v) for k, v in overrides.items()],
                               directory=tmp_path / name)
    return WhitelistCache.from_settings(settings, clock=clock or Clock()), accountdb.Client(settings)


def records(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == 'pve_hooks.whitelist.cache' and r.levelno == level]


def test_conditional_refresh_answered_304_carries_no_body(dev_accountdb, tmp_path):
    clock = Clock()
    cache, client = make(dev_accountdb, tmp_path, 'node', clock)
    client.update_whitelist(add=list(range(100, 1100)))
    assert cache.refresh(client) == whitelist.UPDATED
    assert len(cache.vmids) == 1000 and cache.etag
    full = endpoint(dev_accountdb, WHITELIST_GET)

    dev_accountdb.reset_stats()
    clock.now += 600
    response = client.get_whitelist(etag=cache.etag, last_modified=cache.last_modified)
    assert response.status == 304 and response.body_bytes == 0 and response.vmids is None
    assert cache.refresh(client) == whitelist.UNCHANGED
    assert cache.fetched_at == clock.now and cache.age() == 0
    stats = endpoint(dev_accountdb, WHITELIST_GET)
    assert stats['status'] == {'304': 2}
    # two 304s together are far smaller than the one 200 (whose body alone is ~6 kB)
    assert stats['bytes_out'] < full['bytes_out'] / 5
    assert stats['bytes_out'] < 1000


def test_a_change_on_accountdb_replaces_the_cached_list(dev_accountdb, tmp_path):
    cache, client = make(dev_accountdb, tmp_path, 'node')
    client.update_whitelist(add=[101, 102])
    cache.refresh(client)
    first = cache.etag
    client.update_whitelist(remove=[101], add=[300])
    assert cache.refresh(client) == whitelist.UPDATED
    assert cache.vmids.format() == '102,300' and cache.etag != first
    assert cache.allows(300) and not cache.allows(101)


def test_empty_whitelist_on_accountdb_means_all_guests(dev_accountdb, tmp_path):
    cache, client = make(dev_accountdb, tmp_path, 'node')
    assert cache.refresh(client) == whitelist.UPDATED
    assert cache.has_list and not cache.filter.active and cache.allows(4242)
    assert cache.status()['state'] == whitelist.OK


def test_restart_loads_the_cache_without_fetching(dev_accountdb, tmp_path):
    clock = Clock()
    cache, client = make(dev_accountdb, tmp_path, 'node', clock)
    client.update_whitelist(add=[101, 105])
    cache.refresh(client)
    dev_accountdb.reset_stats()

    clock.now += 60
    again, client = make(dev_accountdb, tmp_path, 'node', clock)
    assert again.vmids.format() == '101,105' and again.etag == cache.etag
    assert again.refresh_if_due(client) == whitelist.NOT_DUE
    assert endpoint(dev_accountdb, WHITELIST_GET)['count'] == 0
    clock.now += again.refresh_interval
    assert again.refresh_if_due(client) == whitelist.UNCHANGED
    assert endpoint(dev_accountdb, WHITELIST_GET)['status'] == {'304': 1}


def test_failing_refresh_keeps_the_list_logs_once_and_critical_when_stale(dev_accountdb, tmp_path, caplog):
    clock = Clock()
    cache, client = make(dev_accountdb, tmp_path, 'node', clock, whitelist__max_stale=3600)
    client.update_whitelist(add=[101, 102])
    cache.refresh(client)
    dev_accountdb.set_faults([{'mode': 'status', 'status': 503, 'path': '/api/v1/whitelist'}])
    caplog.set_level(logging.DEBUG, logger='pve_hooks.whitelist.cache')
    caplog.clear()   # another test may have left the logger at INFO: drop the set-up's records

    for step in range(3):   # within max_stale: one WARNING for the three failures
        clock.now += 600
        assert cache.refresh(client) == whitelist.FAILED
    assert cache.allows(101) and not cache.allows(999)
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert 'whitelist refresh failed (HTTP 503' in warnings[0]
    assert 'keeping the cached list (2 VMIDs' in warnings[0]
    status = cache.status()
    assert status['state'] == whitelist.FAILING and status['age'] == 1800
    assert 'HTTP 503' in status['last_error'] and status['failing_since'] == cache.fetched_at + 600
    assert not records(caplog, logging.CRITICAL)

    clock.now += 1801       # now 3601 s old: stale
    assert cache.refresh(client) == whitelist.FAILED
    clock.now += 600
    assert cache.refresh(client) == whitelist.FAILED
    [critical] = records(caplog, logging.CRITICAL)
    assert 'older than whitelist.max_stale (60 min)' in critical and 'still filtering with it' in critical
    assert cache.status()['state'] == whitelist.STALE
    assert cache.allows(101) and not cache.allows(999)

    dev_accountdb.set_faults([])
    clock.now += 600
    assert cache.refresh(client) == whitelist.UNCHANGED
    [recovered] = records(caplog, logging.INFO)
    assert 'whitelist refresh works again after failing for' in recovered
    assert cache.status()['state'] == whitelist.OK and cache.status()['last_error'] is None
    assert len(records(caplog, logging.WARNING)) == 1 and len(records(caplog, logging.CRITICAL)) == 1


def test_failure_state_is_persisted_for_status_of_another_process(dev_accountdb, tmp_path):
    clock = Clock()
    cache, client = make(dev_accountdb, tmp_path, 'node', clock)
    cache.refresh(client)
    dev_accountdb.set_faults([{'mode': 'refuse'}])
    clock.now += 10
    assert cache.refresh(client) == whitelist.FAILED
    reader, _ = make(dev_accountdb, tmp_path, 'node', clock)
    status = reader.status()
    assert status['state'] == whitelist.FAILING
    assert status['last_error'] == 'connection to AccountDB reset'
    assert status['last_attempt_at'] == clock.now


def test_no_cache_and_failing_allows_all_with_the_documented_warning(dev_accountdb, tmp_path, caplog):
    dev_accountdb.set_faults([{'mode': 'status', 'status': 503}])
    cache, client = make(dev_accountdb, tmp_path, 'node')
    caplog.set_level(logging.INFO, logger='pve_hooks.whitelist.cache')
    assert cache.refresh(client) == whitelist.FAILED
    assert cache.refresh(client) == whitelist.FAILED
    [warning] = records(caplog, logging.WARNING)
    assert warning == whitelist.NO_CACHE_WARNING.format('HTTP 503: injected fault: HTTP 503', '5 min')
    assert cache.allows(100) and cache.allows(999999999)
    assert cache.status()['state'] == whitelist.NO_CACHE and cache.status()['filtering'] is False


def test_two_operators_second_gets_412_and_a_refetched_cache(dev_accountdb, tmp_path):
    first, client_a = make(dev_accountdb, tmp_path, 'a')
    second, client_b = make(dev_accountdb, tmp_path, 'b')
    client_a.update_whitelist(add=[100])
    first.refresh(client_a)
    second.refresh(client_b)

    edit.change(client_a, first, add=VmidSet.from_ints([500]))
    assert first.vmids.format() == '100,500'
    stale_etag = second.etag
    with pytest.raises(edit.ConcurrentChange) as caught:
        edit.change(client_b, second, add=VmidSet.from_ints([600]))
    assert 'changed on AccountDB since it was read (ETag {0})'.format(stale_etag) in str(caught.value)
    assert 'run the command again' in str(caught.value)
    assert second.vmids.format() == '100,500' and second.etag == first.etag   # refetched

    edit.change(client_b, second, add=VmidSet.from_ints([600]))
    assert dev_accountdb.dump()['whitelist']['vmids'] == [100, 500, 600]
    assert endpoint(dev_accountdb, WHITELIST_POST)['status'] == {'200': 3, '412': 1}


def test_set_fetches_fresh_and_sends_the_difference_in_one_request(dev_accountdb, tmp_path):
    cache, client = make(dev_accountdb, tmp_path, 'node')
    client.update_whitelist(add=list(range(100, 106)))
    dev_accountdb.reset_stats()
    sent = edit.change(client, cache, set_to=VmidSet([(103, 110)]))
    assert sent.add.format() == '106-110' and sent.remove.format() == '100-102'
    assert dev_accountdb.dump()['whitelist']['vmids'] == list(range(103, 111))
    assert endpoint(dev_accountdb, WHITELIST_POST)['count'] == 1
    assert cache.vmids.format() == '103-110'
    dev_accountdb.reset_stats()
    assert not edit.change(client, cache, set_to=VmidSet([(103, 110)]))   # nothing to do
    assert endpoint(dev_accountdb, WHITELIST_POST)['count'] == 0


def test_bulk_add_of_10000_vmids_is_one_request(dev_accountdb, tmp_path):
    cache, client = make(dev_accountdb, tmp_path, 'node')
    sent = edit.change(client, cache, add=VmidSet([(1000, 10999)]))
    assert len(sent) == 10000
    assert endpoint(dev_accountdb, WHITELIST_POST)['count'] == 1
    assert len(dev_accountdb.dump()['whitelist']['vmids']) == 10000
    assert len(cache.vmids) == 10000 and cache.allows(10999) and not cache.allows(11000)


def test_a_change_over_max_change_sends_nothing(dev_accountdb, tmp_path):
    from pve_hooks.whitelist.vmidset import InputError

    cache, client = make(dev_accountdb, tmp_path, 'node')
    cache.refresh(client)
    dev_accountdb.reset_stats()
    with pytest.raises(InputError):
        edit.change(client, cache, add=VmidSet([(100, 999999999)]), limit=100000)
    assert endpoint(dev_accountdb, WHITELIST_POST)['count'] == 0
    assert endpoint(dev_accountdb, WHITELIST_GET)['count'] == 0


def test_a_list_cached_from_another_accountdb_is_refetched_unconditionally(dev_accountdb, tmp_path):
    cache, client = make(dev_accountdb, tmp_path, 'node')
    client.update_whitelist(add=[101])
    cache.refresh(client)
    with run_dev_accountdb(tmp_path / 'other') as other:
        # Same version counter, same ETag ("wl-1"), different list: a conditional GET would get a 304.
        settings = other.settings(directory=tmp_path / 'node')
        other_client = accountdb.Client(settings)
        other_client.update_whitelist(add=[202])
        moved = WhitelistCache.from_settings(settings)
        assert moved.etag == '"wl-1"' and moved.allows(101) and not moved.from_this_source
        assert moved.refresh(other_client) == whitelist.UPDATED
        assert moved.vmids.format() == '202' and moved.from_this_source
        assert other.stats()['endpoints'][WHITELIST_GET]['status'] == {'200': 1}
