"""Unit tests for pve_hooks.outbox.recovery: the repair at daemon start (Outbox.recover)."""

import os

from pve_hooks.hook import spool
from pve_hooks.outbox import admin
from pve_hooks.outbox import recovery
from tests.support.outbox import event as _event
from tests.support.outbox import spool_n as _spool_n
from tests.support.outbox import write_ready as _write_ready


def test_recover_releases_claimed_cleans_tmp_and_recomputes(box):
    _spool_n(box, 3)
    entries = admin.list_ready(box)
    box.claim(entries[0])
    box.claim(entries[1])
    old_tmp = os.path.join(box.root, 'tmp', 'old')
    new_tmp = os.path.join(box.root, 'tmp', 'new')
    for path in (old_tmp, new_tmp):
        open(path, 'wb').close()
    os.utime(old_tmp, (box.test_clock.now - box.tmp_max_age - 1,) * 2)
    os.utime(new_tmp, (box.test_clock.now - 1,) * 2)
    _write_ready(box, 'junk', b'')
    with spool.StateLock(box.spool_dir) as state:
        state.count, state.bytes, state.seq = 999, 999999, 0
        state.save()
    result = box.recover()
    assert result == {'released': 2, 'tmp_removed': 1, 'quarantined': 1, 'depth': 3,
                      'bytes': sum(e.size for e in entries)}
    assert os.listdir(os.path.join(box.root, 'tmp')) == ['new']
    with spool.StateLock(box.spool_dir) as state:
        assert (state.count, state.bytes) == (3, sum(e.size for e in entries))
        assert state.seq == entries[-1].seq


def test_seq_stays_monotonic_after_state_loss_and_a_clock_step_back(box):
    _spool_n(box, 3)
    highest = admin.list_ready(box)[-1].seq
    os.unlink(os.path.join(box.root, 'state'))  # lost in a crash
    box.test_clock.now -= 3600  # and the clock stepped back an hour
    box.recover()
    box.spool(_event(200))
    assert admin.list_ready(box)[-1].vmid == 200 and admin.list_ready(box)[-1].seq == highest + 1


def test_recover_recounts_a_backlog_whose_counters_were_never_kept(box):
    paths = _spool_n(box, 3)
    with spool.StateLock(box.spool_dir) as state:
        state.count, state.bytes, state.seq = 0, 0, 0   # as if the state file had been lost
        state.save()
    _write_ready(box, 'stray.txt', b'x')
    result = box.recover()
    sizes = sum(os.stat(path).st_size for path in paths)
    assert (result['depth'], result['bytes'], result['quarantined']) == (3, sizes, 1)
    with spool.StateLock(box.spool_dir) as state:
        assert (state.count, state.bytes) == (3, sizes)


def test_recover_keeps_what_hookscripts_spool_while_it_recounts(box, monkeypatch):
    _spool_n(box, 3)
    original = recovery._tally_ready

    def tally_while_spooling(*args):
        _spool_n(box, 2)                # written before the scan lists ready/: seen by it
        counted = original(*args)
        _spool_n(box, 2)                # written after: not seen by it
        return counted

    monkeypatch.setattr(recovery, '_tally_ready', tally_while_spooling)
    result = box.recover()
    files = os.listdir(os.path.join(box.root, 'ready'))
    sizes = sum(os.stat(os.path.join(box.root, 'ready', name)).st_size for name in files)
    assert len(files) == 7 and (result['depth'], result['bytes']) == (7, sizes)
    with spool.StateLock(box.spool_dir) as state:
        assert (state.count, state.bytes) == (7, sizes)
