"""Unit tests for pve_hooks.outbox.admin: the operator's list/show/retry/purge of dead and quarantined events."""

import json
import os

from pve_hooks.hook import spool
from pve_hooks.outbox import admin
from tests.support.outbox import spool_n, write_ready


def test_dead_keeps_reason_retry_and_purge(box):
    spool_n(box, 2)
    first, second = admin.list_ready(box)
    box.claim(first)
    box.dead(first, 'AccountDB said 422: unknown vmid')
    dead = admin.list_dead(box)
    assert [(e.name, r['reason'], r['from']) for e, r in dead] == [(first.name, 'AccountDB said 422: unknown vmid',
                                                                      'claimed')]
    assert dead[0][1]['time'] == '2026-11-26T10:35:28.000000Z'
    assert box.stats()['dead'] == 1 and box.stats()['depth'] == 1
    assert admin.retry_dead(box) == 1
    assert [e.name for e in admin.list_ready(box)] == [first.name, second.name]
    assert os.listdir(os.path.join(box.root, 'dead')) == []
    box.claim(first)
    box.dead(first, 'again')
    assert admin.purge_dead(box) == 1
    assert os.listdir(os.path.join(box.root, 'dead')) == []
    assert box.stats()['dead'] == 0


def test_retry_dead_gives_the_counters_back_and_syncs_ready_once(box, monkeypatch):
    spool_n(box, 3)
    entries = admin.list_ready(box)
    for entry in entries:
        box.claim(entry)
        box.dead(entry, 'rejected')
    with spool.StateLock(box.spool_dir) as state:
        assert (state.count, state.bytes) == (0, 0)
    synced = []
    monkeypatch.setattr(spool, 'fsync_dir', lambda path: synced.append(os.path.basename(path)))
    assert admin.retry_dead(box) == 3
    assert synced == ['ready']
    with spool.StateLock(box.spool_dir) as state:
        assert (state.count, state.bytes) == (3, sum(entry.size for entry in entries))
    assert admin.retry_dead(box) == 0 and synced == ['ready']


def test_list_dead_without_a_reason_file(box):
    spool_n(box, 1)
    entry = admin.list_ready(box)[0]
    box.claim(entry)
    box.dead(entry, 'rejected')
    os.unlink(os.path.join(box.root, 'dead', entry.name + '.reason'))
    assert [(dead.name, reason) for dead, reason in admin.list_dead(box)] == [(entry.name, None)]


def test_list_quarantine_is_by_name_with_reasons_and_skips_sidecars(box):
    write_ready(box, 'zz-stray', b'x')
    write_ready(box, 'aa-stray', b'y')
    assert box.ready_names() == ['aa-stray', 'zz-stray']
    for name in box.ready_names():
        box.ready_entry(name)                      # a bad name is quarantined when used
    listed = admin.list_quarantine(box)
    assert [name for name, _reason in listed] == ['aa-stray', 'zz-stray']
    assert all(reason['reason'].startswith('file name is not') and reason['from'] == 'ready'
               for _name, reason in listed)
    assert box.stats()['quarantine'] == 2


def test_show_finds_each_state(box):
    spool_n(box, 2)
    first, second = admin.list_ready(box)
    assert admin.show(box, first.event_id)[0] == 'ready'
    box.claim(first)
    assert admin.show(box, first.event_id) == ('claimed', box.claim(second) and json.loads(
        open(os.path.join(box.root, 'claimed', first.name)).read()))
    box.dead(first, 'why')
    assert admin.show(box, first.event_id)[0] == 'dead'
    assert admin.show(box, '0f8fad5b-d9cb-469f-a165-70867728950e') is None
    box.quarantine(second.name, 'test')
    assert admin.show(box, second.event_id)[0] == 'quarantine'


def test_show_of_a_corrupt_quarantined_file_says_where_it_is(box):
    name = spool.event_name(1, 100, '0f8fad5b-d9cb-469f-a165-70867728950e')
    write_ready(box, name, b'{not json')
    assert box.claim(admin.list_ready(box)[0]) is None
    assert admin.show(box, '0f8fad5b-d9cb-469f-a165-70867728950e') == ('quarantine', None)
