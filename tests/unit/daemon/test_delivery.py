"""Unit tests for pve_hooks.daemon.delivery: a real Outbox on tmp_path, the real reference AccountDB over loopback."""

import logging
import os
import shutil
import threading
import time

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb import breaker
from pve_hooks.hook import spool
from pve_hooks.accountdb.connection import Connection
from pve_hooks.daemon.delivery import Delivery, Interrupted
from pve_hooks.outbox import admin
from pve_hooks.outbox.store import Outbox
from pve_hooks.whitelist.cache import WhitelistCache
from tests.support.accountdb import dev_accountdb  # noqa: F401 (fixture)
from tests.support.clock import Clock


class Site:
    """Settings, outbox, connection and delivery for one test."""

    def __init__(self, server, tmp_path, *overrides, whitelist=None, should_stop=None):
        self.server = server
        self.clock = Clock()
        self.settings = server.settings('retry.base_delay=1', 'retry.max_delay=4', 'breaker.failure_threshold=3',
                                        'breaker.reset_timeout=10', 'delivery.batch_size=2', *overrides,
                                        directory=str(tmp_path / 'client'))
        self.outbox = Outbox.from_settings(self.settings, clock=self.clock)
        self.outbox.ensure()
        self.client = accountdb.Client(self.settings)
        self.connection = Connection(self.settings, self.client, breaker.from_settings(self.settings, self.clock),
                                     clock=self.clock, rand=lambda: 0.5)
        self.delivery = Delivery(self.settings, self.outbox, self.connection, whitelist=whitelist,
                                 clock=self.clock, should_stop=should_stop)

    def spool(self, *vmids, phase='pre-start'):
        """Spool one event per vmid, in order; return their event_ids."""
        ids = []
        for vmid in vmids:
            self.clock.now += 0.001
            path = self.outbox.spool({'schema': 1, 'node': 'pve1', 'vmid': vmid, 'guest_type': 'qemu',
                                      'phase': phase, 'occurred_at': '2026-11-26T10:35:26.123456Z',
                                      'source': 'hookscript'})
            ids.append(spool.parse_name(os.path.basename(path))[2])
        return ids

    def ready(self):
        return [entry.event_id for entry in admin.list_ready(self.outbox)]

    def claimed(self):
        return os.listdir(os.path.join(self.outbox.root, 'claimed'))

    def stored(self):
        return [event['event_id'] for event in self.server.events()]


@pytest.fixture
def site(dev_accountdb, tmp_path):
    return Site(dev_accountdb, tmp_path)


def test_batches_follow_outbox_order(site):
    ids = site.spool(100, 101, 100, 102, 101)
    result = site.delivery.run()
    assert result.batches == 3 and result.accepted == 5 and result.delivered == 5
    assert site.stored() == ids                       # received in outbox order
    assert site.ready() == [] and site.claimed() == []
    assert len(result.latencies) == 5
    assert site.delivery.last_delivery_at == site.clock.now
    requests = site.server.stats()['endpoints']['POST /api/v1/events']
    assert requests['count'] == 3


def test_redelivered_event_is_acknowledged_as_duplicate(site, tmp_path):
    (event_id,) = site.spool(100)
    entry = admin.list_ready(site.outbox)[0]
    saved = str(tmp_path / 'copy.json')
    shutil.copy(entry.path, saved)
    assert site.delivery.run().accepted == 1
    shutil.move(saved, entry.path)   # as if the daemon died after sending, before acknowledging
    result = site.delivery.run()
    assert result.duplicate == 1 and result.accepted == 0
    assert site.stored() == [event_id] and site.ready() == []


def test_rejected_event_goes_to_dead_with_reason_and_a_critical_line(site, caplog):
    ids = site.spool(100, 101, 102)
    site.server.set_faults([{'mode': 'reject', 'event_ids': [ids[1]]}])
    with caplog.at_level(logging.CRITICAL, logger='pve_hooks.daemon.delivery'):
        result = site.delivery.run()
    assert (result.accepted, result.rejected) == (2, 1)
    assert site.stored() == [ids[0], ids[2]]
    dead = admin.list_dead(site.outbox)
    assert [entry.event_id for entry, _reason in dead] == [ids[1]]
    assert 'rejected' in dead[0][1]['reason']
    criticals = [r for r in caplog.records if r.name == 'pve_hooks.daemon.delivery' and r.levelno == logging.CRITICAL]
    assert len(criticals) == 1 and ids[1] in criticals[0].getMessage()
    assert criticals[0].EVENT_ID == ids[1] and criticals[0].VMID == 101


def test_batch_refused_with_422_is_bisected_to_the_one_bad_event(dev_accountdb, tmp_path):
    site = Site(dev_accountdb, tmp_path, 'delivery.batch_size=8')
    ids = site.spool(*range(100, 108))
    dev_accountdb.set_faults([{'mode': 'reject', 'event_ids': [ids[5]], 'as': 422}])
    result = site.delivery.run()
    assert (result.accepted, result.rejected) == (7, 1)
    assert [entry.event_id for entry, _reason in admin.list_dead(site.outbox)] == [ids[5]]
    assert sorted(site.stored()) == sorted(ids[:5] + ids[6:])
    assert site.connection.state == 'up'


def test_transient_failure_keeps_every_event_and_schedules_a_retry(site):
    ids = site.spool(100, 101, 102)
    site.server.set_faults([{'mode': 'status', 'status': 503, 'path': '/api/v1/events'}])
    result = site.delivery.run()
    assert result.delivered == 0 and result.error is not None and result.error.kind == 'transient'
    assert result.released == 2    # the first batch was claimed and returned
    assert site.ready() == ids and site.claimed() == []
    assert site.connection.next_try_at == site.clock.now + 0.5
    again = site.delivery.run()    # backoff pending: nothing is claimed or sent
    assert again.deferred and again.released == 2 and site.ready() == ids
    site.server.set_faults([])
    site.clock.now = site.connection.next_try_at
    assert site.delivery.run().accepted == 3
    assert site.stored() == ids


@pytest.mark.parametrize('override, kind', [
    ('accountdb.endpoints.events=/api/v1/wrong', 'configuration'),
    ('accountdb.token_file={token}', 'auth'),
])
def test_configuration_and_auth_errors_never_make_dead_letters(dev_accountdb, tmp_path, override, kind):
    token_file = str(tmp_path / 'bad-token')
    dev_accountdb.write_token(token_file, 'not-the-token')
    site = Site(dev_accountdb, tmp_path, override.format(token=token_file))
    ids = site.spool(100, 101)
    for _attempt in range(4):
        result = site.delivery.run()
        assert result.error is not None and result.error.kind == kind
        site.clock.now = site.connection.next_try_at
    assert site.ready() == ids and admin.list_dead(site.outbox) == []
    assert site.connection.breaker.state == breaker.CLOSED


def test_later_events_of_a_guest_wait_when_an_earlier_one_cannot_be_taken(site, caplog):
    a1, b1, a2, b2 = site.spool(100, 101, 100, 101)
    entry = [e for e in admin.list_ready(site.outbox) if e.event_id == a1][0]
    with open(entry.path, 'w') as stream:
        stream.write('{"truncated": ')   # corrupt: quarantined on claim
    result = site.delivery.run()
    # guest 101 flows; guest 100's later event is not sent in the pass that lost its predecessor
    assert site.stored() == [b1, b2]
    assert result.quarantined == 1 and result.held == 1
    assert site.ready() == [a2]
    assert site.delivery.run().accepted == 1
    assert site.stored() == [b1, b2, a2]


def test_whitelist_filters_at_send_time(dev_accountdb, tmp_path):
    settings = dev_accountdb.settings(directory=str(tmp_path / 'client'))
    client = accountdb.Client(settings)
    client.update_whitelist(add=[100])
    cache = WhitelistCache.from_settings(settings)
    assert cache.refresh(client) == 'updated'
    site = Site(dev_accountdb, tmp_path, whitelist=cache)
    kept, dropped, kept2 = site.spool(100, 101, 100)
    result = site.delivery.run()
    assert (result.accepted, result.filtered) == (2, 1)
    assert site.stored() == [kept, kept2]
    assert site.ready() == [] and admin.list_dead(site.outbox) == []


def test_empty_whitelist_filters_nothing(dev_accountdb, tmp_path):
    settings = dev_accountdb.settings(directory=str(tmp_path / 'client'))
    cache = WhitelistCache.from_settings(settings)
    cache.refresh(accountdb.Client(settings))
    site = Site(dev_accountdb, tmp_path, whitelist=cache)
    site.spool(100, 101)
    assert site.delivery.run().filtered == 0
    assert len(site.stored()) == 2


def test_interrupted_pass_returns_its_claimed_batch(site):
    ids = site.spool(100, 101, 102)

    class Tripwire:
        calls = 0

        def allows(self, vmid):
            Tripwire.calls += 1
            if Tripwire.calls == 2:
                raise Interrupted()   # what the daemon's shutdown timer raises
            return True

    site.delivery.whitelist = Tripwire()
    with pytest.raises(Interrupted):
        site.delivery.run()
    assert site.claimed() == [] and site.ready() == ids and site.stored() == []
    assert site.delivery.in_flight == []


def test_stop_request_ends_the_pass_between_batches(dev_accountdb, tmp_path):
    stop = []
    site = Site(dev_accountdb, tmp_path, should_stop=lambda: bool(stop))
    ids = site.spool(100, 101, 102, 103)
    original = site.client.send_events_bisect

    def send_then_stop(node, events, **kwargs):
        stop.append(True)
        return original(node, events, **kwargs)

    site.client.send_events_bisect = send_then_stop
    result = site.delivery.run()
    assert result.accepted == 2
    assert site.ready() == ids[2:] and site.claimed() == []


def _count_listings(site):
    listings = []
    original = site.outbox.ready_names

    def counting():
        names = original()
        listings.append(len(names))
        return names

    site.outbox.ready_names = counting
    return listings


def test_one_listing_serves_every_batch_and_events_spooled_meanwhile_follow_in_order(site):
    ids = site.spool(*[100 + index % 7 for index in range(45)])   # 23 batches of 2
    listings = _count_listings(site)
    original = site.client.send_events_bisect
    late = []

    def send_and_spool(node, events, **kwargs):
        if not late:   # a hookscript writes two events while the first batch is in flight
            late.extend(site.spool(100, 107))
        return original(node, events, **kwargs)

    site.client.send_events_bisect = send_and_spool
    result = site.delivery.run()
    assert result.accepted == 47 and result.batches == 24
    assert listings == [45, 2, 0]      # not one listing per batch, nor per 20 batches
    assert site.stored() == ids + late  # per-guest order holds: the late event of 100 comes after the rest
    assert site.ready() == [] and site.claimed() == []
    with spool.StateLock(site.outbox.spool_dir) as state:
        assert (state.count, state.bytes) == (0, 0)


def test_an_event_gone_since_the_listing_holds_its_guest_and_the_rest_flows(site):
    a1, b1, a2, b2, a3 = site.spool(100, 101, 100, 101, 100)
    original = site.client.send_events_bisect

    def send_and_remove(node, events, **kwargs):
        for entry in admin.list_ready(site.outbox):
            if entry.event_id == a2:
                os.unlink(entry.path)   # removed by hand after the listing, before its claim
        return original(node, events, **kwargs)

    site.client.send_events_bisect = send_and_remove
    result = site.delivery.run()
    assert site.stored() == [a1, b1, b2]      # a3 is not sent in the pass that lost a2
    assert result.held == 1 and site.ready() == [a3]
    assert site.delivery.run().accepted == 1
    assert site.stored() == [a1, b1, b2, a3]


def _claim_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith('pve-hooks-claim')]


def _send_with(site, before_send):
    """Wrap the client's batch send: ``before_send(call number, events)`` runs first; return the call list."""
    original = site.client.send_events_bisect
    calls = []

    def send(node, events, **kwargs):
        calls.append([event['event_id'] for event in events])
        outcome = before_send(len(calls), events)
        results = original(node, events, **kwargs)
        return outcome(results) if callable(outcome) else results

    site.client.send_events_bisect = send
    return calls


@pytest.fixture
def ahead(site):
    """The site, claiming ahead from its batches of 2 (the default threshold is larger)."""
    site.delivery.claim_ahead_min_batch = 2
    return site


def _wait_until_claimed(site, event_id, timeout=10.0):
    """Wait until the worker thread has moved ``event_id`` to claimed/; fail the test otherwise."""
    deadline = time.monotonic() + timeout
    while not any(event_id in name for name in site.claimed()):
        assert time.monotonic() < deadline, 'event {0} was not claimed ahead'.format(event_id)
        time.sleep(0.005)


def test_next_batch_is_claimed_while_the_current_one_is_in_flight(ahead):
    site = ahead
    ids = site.spool(*range(100, 108))   # four batches of 2
    seen_claimed = []

    def before_send(call, events):
        if call >= 2 and call < 4:   # from the second batch on, the next one is claimed meanwhile
            _wait_until_claimed(site, ids[2 * call + 1])
            seen_claimed.append(sorted(site.claimed()))
    calls = _send_with(site, before_send)
    result = site.delivery.run()
    assert result.accepted == 8 and calls == [ids[0:2], ids[2:4], ids[4:6], ids[6:8]]
    assert len(seen_claimed) == 2 and all(len(names) == 4 for names in seen_claimed)  # in flight + ahead
    assert site.stored() == ids and site.ready() == [] and site.claimed() == []
    assert _claim_threads() == []         # the worker lives only as long as the pass


def test_events_claimed_ahead_go_back_when_their_guest_is_held_meanwhile(ahead):
    site = ahead
    a1, b1, a2, b2, a3, b3, a4, b4 = site.spool(100, 101, 100, 101, 100, 101, 100, 101)

    def before_send(call, events):
        if call == 2:   # a2 gets no result: guest 100 is held while a3 is already claimed ahead
            _wait_until_claimed(site, a3)
            return lambda results: {key: value for key, value in results.items() if key != a2}
    calls = _send_with(site, before_send)
    result = site.delivery.run()
    assert calls == [[a1, b1], [a2, b2], [b3], [b4]]   # a3 was claimed ahead (with b3) but never sent
    assert site.stored() == [a1, b1, a2, b2, b3, b4]   # AccountDB has a2; we did not hear so
    assert site.ready() == [a2, a3, a4] and site.claimed() == []
    assert (result.accepted, result.released, result.held) == (5, 1, 3)   # held: a2, a3, a4
    again = site.delivery.run()
    assert (again.duplicate, again.accepted) == (1, 2)
    assert site.stored() == [a1, b1, a2, b2, b3, b4, a3, a4]   # guest 100 in its order


def test_a_failed_send_returns_the_batch_claimed_ahead_uncounted(ahead):
    site = ahead
    ids = site.spool(*range(100, 108))
    site.server.set_faults([{'mode': 'status', 'status': 503, 'path': '/api/v1/events', 'after': 1}])
    _send_with(site, lambda call, events: _wait_until_claimed(site, ids[4]) if call == 2 else None)
    result = site.delivery.run()
    assert result.accepted == 2 and result.error is not None and result.error.kind == 'transient'
    assert result.released == 2          # the batch that failed, not the one claimed ahead of it
    assert site.ready() == ids[2:] and site.claimed() == []
    with spool.StateLock(site.outbox.spool_dir) as state:
        assert state.count == 6
    site.server.set_faults([])
    site.clock.now = site.connection.next_try_at
    assert site.delivery.run().accepted == 6 and site.stored() == ids


def test_a_corrupt_event_claimed_ahead_holds_its_guest(ahead):
    site = ahead
    a1, b1, a2, b2, a3, b3, a4 = site.spool(100, 101, 100, 101, 100, 101, 100)
    corrupt = [entry for entry in admin.list_ready(site.outbox) if entry.event_id == a3][0]
    with open(corrupt.path, 'w') as stream:
        stream.write('{"truncated": ')
    result = site.delivery.run()
    assert site.stored() == [a1, b1, a2, b2, b3]      # a4 waits: its predecessor a3 was lost
    assert result.quarantined == 1 and result.held == 1 and site.ready() == [a4]
    assert [name for name, _reason in admin.list_quarantine(site.outbox)] == [corrupt.name]


def test_interrupted_while_a_batch_is_claimed_ahead_returns_both(ahead):
    site = ahead
    ids = site.spool(*range(100, 108))

    def before_send(call, events):
        if call == 2:
            _wait_until_claimed(site, ids[4])
            raise Interrupted()   # what the daemon's shutdown timer raises during a send
    _send_with(site, before_send)
    with pytest.raises(Interrupted):
        site.delivery.run()
    assert site.delivery.returned_on_interrupt == 4   # the batch in flight and the one claimed ahead
    assert site.ready() == ids[2:] and site.claimed() == [] and site.delivery.in_flight == []
    assert _claim_threads() == []


def test_small_batches_are_claimed_in_line_without_a_thread(site):
    ids = site.spool(*range(100, 106))
    assert site.delivery.claim_ahead_min_batch > 2   # batches of 2: the handoff would cost more
    during = []
    _send_with(site, lambda call, events: during.append((len(site.claimed()), len(_claim_threads()))))
    assert site.delivery.run().accepted == 6 and site.stored() == ids
    assert during == [(2, 0)] * 3   # only the batch in flight is claimed, and no worker exists
