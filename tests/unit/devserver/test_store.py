"""The reference AccountDB's SQLite store."""

import pytest

from pve_hooks_devserver import contract
from pve_hooks_devserver.store import Store


class Clock:
    now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path / 'db.sqlite'), clock=Clock())
    yield store
    store.close()


def event(event_id, vmid=100):
    return {'event_id': event_id, 'vmid': vmid, 'phase': 'pre-start', 'seq': 1, 'occurred_at': 't'}


def test_events_are_deduplicated_also_within_a_batch(store):
    assert store.add_events('pve1', [event('a'), event('b'), event('a')]) == ['accepted', 'accepted', 'duplicate']
    assert store.add_events('pve1', [event('b')]) == ['duplicate']
    assert [row['event_id'] for row in store.events()] == ['a', 'b']


def test_events_survive_reopening(tmp_path):
    first = Store(str(tmp_path / 'db.sqlite'))
    first.add_events('pve1', [event('kept')])
    first.close()
    again = Store(str(tmp_path / 'db.sqlite'))
    assert again.events('pve1')[0]['body']['event_id'] == 'kept'
    assert again.db.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    again.close()


def test_inventory_etag_follows_content(store):
    one = store.put_inventory('pve1', {'node': 'pve1', 'guests': [{'vmid': 100}]})
    assert store.put_inventory('pve1', {'guests': [{'vmid': 100}], 'node': 'pve1'}) == one
    assert store.put_inventory('pve1', {'node': 'pve1', 'guests': []}) != one
    assert store.inventories()['pve1']['puts'] == 3


def test_heartbeats_are_counted(store):
    store.heartbeat('pve1', {'node': 'pve1'})
    store.heartbeat('pve1', {'node': 'pve1', 'n': 2})
    assert store.heartbeats()['pve1']['count'] == 2 and store.heartbeats()['pve1']['last']['n'] == 2


def test_whitelist_versions_change_only_with_the_set(store):
    body, etag, modified, seconds = store.whitelist()
    assert body == b'{"vmids":[]}' and etag == '"wl-0"'
    body, etag, _, _ = store.update_whitelist([101, 100], [])
    assert body == b'{"vmids":[100,101]}' and etag == '"wl-1"'
    assert store.update_whitelist([100], [999])[1] == '"wl-1"'  # no change, same version
    assert store.update_whitelist([], [100], if_match='"wl-0"') is None  # stale
    assert store.update_whitelist([], [100], if_match='"wl-1"')[1] == '"wl-2"'
    assert store.update_whitelist([5000], [], if_match='*')[1] == '"wl-3"'


def test_dump_summarises_everything(store):
    store.add_events('pve1', [event('a')])
    store.add_events('pve2', [event('b')])
    store.put_inventory('pve1', {'node': 'pve1', 'guests': [{'vmid': 100}, {'vmid': 101}]})
    store.update_whitelist([100], [])
    data = store.dump()
    assert data['events']['per_node'] == {'pve1': 1, 'pve2': 1}
    assert data['inventories']['pve1']['guests'] == 2
    assert data['whitelist']['vmids'] == [100]


@pytest.mark.parametrize('inm, ims, expected', [
    ('"wl-1"', None, True), ('"wl-0", "wl-1"', None, True), ('*', None, True), ('W/"wl-1"', None, True),
    ('"wl-0"', None, False), ('"wl-0"', 'Thu, 01 Jan 2099 00:00:00 GMT', False),
    (None, 'Thu, 01 Jan 2099 00:00:00 GMT', True), (None, 'Thu, 01 Jan 1970 00:00:00 GMT', False),
    (None, 'garbage', False), (None, None, False)])
def test_not_modified(inm, ims, expected):
    assert contract.not_modified(inm, ims, '"wl-1"', 1_800_000_000) is expected


@pytest.mark.parametrize('change, words', [
    ({'vmid': 99}, 'vmid'), ({'vmid': True}, 'vmid'), ({'phase': 'boot'}, 'phase'), ({'seq': '1'}, 'seq'),
    ({'occurred_at': None}, 'occurred_at'), ({'node': 5}, 'node')])
def test_event_problems(change, words):
    assert words in contract.event_problem(dict(event('x'), **change))
    assert contract.event_problem(event('x')) is None
