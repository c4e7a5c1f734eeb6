"""Unit tests for pve_hooks.outbox.store: the daemon's list/claim/ack/release/dead/quarantine API."""

import json
import os

import pytest

from pve_hooks.hook import event
from pve_hooks.hook import spool
from pve_hooks.outbox import admin
from pve_hooks.outbox.store import Outbox
from tests.support.outbox import event as _event
from tests.support.outbox import spool_n as _spool_n
from tests.support.outbox import write_ready as _write_ready


def test_spool_then_list_in_order_and_claim(box):
    _spool_n(box, 3)
    entries = admin.list_ready(box)
    assert [entry.vmid for entry in entries] == [100, 101, 102]
    assert [entry.seq for entry in entries] == sorted(entry.seq for entry in entries)
    assert admin.list_ready(box, limit=2) == entries[:2]
    ev = box.claim(entries[0])
    assert ev['vmid'] == 100 and ev['seq'] == entries[0].seq and ev['event_id'] == entries[0].event_id
    event.validate(ev)
    assert box.claim(entries[0]) is None  # already claimed
    assert [entry.vmid for entry in admin.list_ready(box)] == [101, 102]


def test_ack_removes_and_updates_counters(box):
    _spool_n(box, 2)
    entry = admin.list_ready(box)[0]
    box.claim(entry)
    box.ack(entry)
    box.ack(entry)  # twice is fine
    assert box.stats()['depth'] == 1
    with spool.StateLock(box.spool_dir) as state:
        assert state.count == 1
        assert state.bytes == admin.list_ready(box)[0].size


def test_release_returns_to_ready(box):
    _spool_n(box, 1)
    entry = admin.list_ready(box)[0]
    box.claim(entry)
    assert admin.list_ready(box) == []
    box.release(entry)
    assert [e.name for e in admin.list_ready(box)] == [entry.name]


def test_dead_moves_the_claimed_event_with_its_reason(box):
    _spool_n(box, 2)
    first, _second = admin.list_ready(box)
    box.claim(first)
    box.dead(first, 'AccountDB said 422: unknown vmid')
    dead_dir = os.path.join(box.root, 'dead')
    assert sorted(os.listdir(dead_dir)) == [first.name, first.name + '.reason']
    with open(os.path.join(dead_dir, first.name + '.reason')) as stream:
        assert json.load(stream) == {'time': '2026-11-26T10:35:28.000000Z', 'from': 'claimed',
                                     'reason': 'AccountDB said 422: unknown vmid'}
    assert os.listdir(os.path.join(box.root, 'claimed')) == []
    assert box.stats()['dead'] == 1 and box.stats()['depth'] == 1


@pytest.mark.parametrize('data, reason', [
    (b'{not json', 'not valid JSON'),
    (b'\xff\xfe', 'not valid JSON'),
    (b'', 'not valid JSON'),
    (b'{"schema": 2}', "'schema'"),
    (b'[1, 2]', 'JSON object'),
    (b'x' * (event.MAX_EVENT_BYTES + 1), 'larger than'),
])
def test_corrupt_file_is_quarantined_with_reason_and_does_not_block(box, data, reason):
    _spool_n(box, 1)
    bad = _write_ready(box, spool.event_name(1, 100, '0f8fad5b-d9cb-469f-a165-70867728950e'), data)
    entries = admin.list_ready(box)
    assert entries[0].path == bad
    assert box.claim(entries[0]) is None
    assert box.claim(entries[1])['vmid'] == 100
    names = admin.list_quarantine(box)
    assert len(names) == 1 and reason in names[0][1]['reason']
    assert box.stats()['quarantine'] == 1


def test_name_not_matching_content_is_quarantined(box):
    _spool_n(box, 1)
    entry = admin.list_ready(box)[0]
    data = open(entry.path, 'rb').read()
    os.unlink(entry.path)
    _write_ready(box, spool.event_name(entry.seq, 101, entry.event_id), data)
    assert box.claim(admin.list_ready(box)[0]) is None
    assert 'does not match' in admin.list_quarantine(box)[0][1]['reason']


def test_badly_named_files_in_ready_are_quarantined_never_listed(box):
    _spool_n(box, 1)
    _write_ready(box, 'stray.txt', b'hello')
    _write_ready(box, 'x.reason', b'hello')
    assert len(admin.list_ready(box)) == 1
    quarantined = admin.list_quarantine(box)
    assert len(quarantined) == 2
    assert all('file name' in reason['reason'] for _, reason in quarantined)


def test_unreadable_file_is_quarantined(box):
    if os.geteuid() == 0:
        # root reads mode-000 files; a directory in place of the file is unreadable for everyone
        os.mkdir(os.path.join(box.root, 'ready', spool.event_name(1, 100, 'ab-cd')))
    else:
        _write_ready(box, spool.event_name(1, 100, 'ab-cd'), b'{}')
        os.chmod(os.path.join(box.root, 'ready', spool.event_name(1, 100, 'ab-cd')), 0)
    entry = admin.list_ready(box)[0]
    assert box.claim(entry) is None
    assert admin.list_quarantine(box)[0][0] == entry.name


def test_stats(box):
    assert box.stats() == {'depth': 0, 'bytes': 0, 'oldest_age': None, 'dead': 0, 'quarantine': 0,
                           'dropped': 0, 'spooled': 0, 'hookscript_errors': 0, 'spooled_seq': 0}
    paths = _spool_n(box, 2)
    os.utime(paths[0], (box.test_clock.now - 50,) * 2)
    stats = box.stats()
    assert stats['depth'] == 2 and stats['oldest_age'] == pytest.approx(50)
    assert stats['spooled_seq'] == admin.list_ready(box)[-1].seq
    assert stats['spooled'] == 2


def test_full_outbox_drop_is_counted_in_stats(tmp_path):
    box = Outbox(str(tmp_path / 'spool'), max_events=1)
    box.spool(_event())
    with pytest.raises(spool.OutboxFull):
        box.spool(_event())
    assert box.stats()['dropped'] == 1 and box.stats()['depth'] == 1


def test_quarantine_of_missing_file_returns_none(box):
    assert box.quarantine('nothing-here', 'x') is None


def test_from_settings(tmp_path):
    from pve_hooks.config import loader as config
    settings = config.load(env={'PVE_HOOKS_PATHS__SPOOL_DIR': str(tmp_path), 'PVE_HOOKS_OUTBOX__MAX_EVENTS': '7',
                                'PVE_HOOKS_CONFIG': ''})
    box = Outbox.from_settings(settings)
    assert (box.spool_dir, box.max_events) == (str(tmp_path), 7)


def test_claim_recreates_a_missing_claimed_dir(box):
    _spool_n(box, 1)
    os.rmdir(os.path.join(box.root, 'claimed'))
    assert box.claim(admin.list_ready(box)[0])['vmid'] == 100


def test_ack_many_removes_the_batch_with_one_counter_update(box, monkeypatch):
    _spool_n(box, 4)
    entries = admin.list_ready(box)
    for entry in entries:
        box.claim(entry)
    box.ack(entries[0])                       # already gone: skipped, not counted twice
    calls = []
    real_adjust = spool.adjust
    monkeypatch.setattr(spool, 'adjust', lambda *args, **kw: calls.append(args) or real_adjust(*args, **kw))
    assert box.ack_many(entries) == []
    assert calls == [(box.spool_dir, -3, -sum(entry.size for entry in entries[1:]))]
    assert os.listdir(os.path.join(box.root, 'claimed')) == []
    with spool.StateLock(box.spool_dir) as state:
        assert (state.count, state.bytes) == (0, 0)
    calls.clear()
    assert box.ack_many([]) == [] and calls == []   # nothing removed: the state is not touched


def test_ack_many_reports_what_it_could_not_remove_and_counts_only_the_rest(box):
    _spool_n(box, 3)
    entries = admin.list_ready(box)
    for entry in entries:
        box.claim(entry)
    stuck = os.path.join(box.root, 'claimed', entries[1].name)
    os.unlink(stuck)
    os.mkdir(stuck)                            # unlink() of a directory fails with EISDIR, not ENOENT
    failed = box.ack_many(entries)
    assert [(entry.name, type(error)) for entry, error in failed] == [(entries[1].name, IsADirectoryError)]
    assert os.listdir(os.path.join(box.root, 'claimed')) == [entries[1].name]
    with spool.StateLock(box.spool_dir) as state:
        assert (state.count, state.bytes) == (1, entries[1].size)


def test_ready_names_are_sorted_bad_names_quarantined_on_use_and_claim_fills_size(box):
    paths = _spool_n(box, 3)
    _write_ready(box, 'junk.json', b'{}')
    names = box.ready_names()
    assert names == sorted(os.path.basename(path) for path in paths) + ['junk.json']
    assert admin.list_quarantine(box) == []           # listing is cheap: nothing parsed yet
    assert box.ready_entry('junk.json') is None
    assert [name for name, _reason in admin.list_quarantine(box)] == ['junk.json']
    entry = box.ready_entry(names[0])
    assert (entry.seq, entry.vmid, entry.size, entry.mtime) == (spool.parse_name(entry.name)[0], 100, None, None)
    info = os.stat(paths[0])
    assert box.claim(entry)['vmid'] == 100
    assert (entry.size, entry.mtime) == (info.st_size, info.st_mtime)
    box.ack(entry)
    with spool.StateLock(box.spool_dir) as state:
        assert state.count == 2 and state.bytes == sum(os.stat(path).st_size for path in paths[1:])


def test_release_many_moves_back_skips_the_gone_and_syncs_ready_once(box, monkeypatch):
    _spool_n(box, 4)
    entries = admin.list_ready(box)
    for entry in entries:
        box.claim(entry)
    box.ack(entries[0])                       # gone from claimed/: skipped
    os.mkdir(os.path.join(box.root, 'ready', entries[1].name))   # a file cannot replace a directory
    synced = []
    monkeypatch.setattr(spool, 'fsync_dir', lambda path: synced.append(os.path.basename(path)))
    failed = box.release_many(entries)
    assert [(entry.name, type(error)) for entry, error in failed] == [(entries[1].name, IsADirectoryError)]
    assert synced == ['ready']
    assert os.listdir(os.path.join(box.root, 'claimed')) == [entries[1].name]
    assert [entry.path for entry in entries[2:]] == [os.path.join(box.root, 'ready', entry.name)
                                                    for entry in entries[2:]]
    assert all(os.path.isfile(entry.path) for entry in entries[2:])


def test_stats_counts_event_shaped_names_without_parsing_each(box):
    paths = _spool_n(box, 2)
    _write_ready(box, 'junk.json', b'{}')
    _write_ready(box, '.hidden', b'')
    os.utime(paths[0], (box.test_clock.now - 30,) * 2)
    os.utime(paths[1], (box.test_clock.now - 90,) * 2)   # the oldest by seq is what counts, not by mtime
    stats = box.stats()
    assert stats['depth'] == 2 and stats['oldest_age'] == pytest.approx(30)
