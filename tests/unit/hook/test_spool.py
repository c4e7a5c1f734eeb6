"""Unit tests for pve_hooks.hook.spool: layout, names, state counters, the durable write path."""

import errno
import os
import stat

import pytest

from pve_hooks.hook import spool


def _build(seq):
    return '{{"seq":{0}}}\n'.format(seq).encode()


def _spool(tmp_path, now_ns=10**15, max_events=None, max_bytes=None, **kw):
    return spool.spool_event(str(tmp_path / 'spool'), 100, 'abc-def', _build, now_ns, max_events, max_bytes, **kw)


def _state(tmp_path):
    with spool.StateLock(str(tmp_path / 'spool')) as state:
        return state.seq, state.count, state.bytes, state.dropped, state.spooled, state.errors


def test_ensure_dirs_creates_layout_0700_despite_umask(tmp_path):
    old = os.umask(0o022)
    try:
        spool.ensure_dirs(str(tmp_path / 'a' / 'spool'))
    finally:
        os.umask(old)
    root = tmp_path / 'a' / 'spool'
    for path in [root, root / 'outbox'] + [root / 'outbox' / sub for sub in spool.SUBDIRS]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_name_round_trip_and_sorting():
    names = [spool.event_name(seq, 100, 'ab-cd') for seq in (10, 9, 100)]
    assert sorted(names) == [spool.event_name(seq, 100, 'ab-cd') for seq in (9, 10, 100)]
    assert spool.parse_name(names[0]) == (10, 100, 'ab-cd')


@pytest.mark.parametrize('name', ['x.json', '0001-100-ab.json', '00000000000000000010-100-ab.txt',
                                  '00000000000000000010-0100-ab.json', '00000000000000000010-100-.json',
                                  '00000000000000000010-100-AB.json', '0000000000000000001x-100-ab.json',
                                  '00000000000000000010-1x0-ab.json', '.00000000000000000010-100-ab.json',
                                  '00000000000000000010-100-ab.cd.json', '00000000000000000010-100-a b.json'])
def test_parse_name_rejects(name):
    assert spool.parse_name(name) is None


def test_spool_event_writes_file_0600_and_counts(tmp_path):
    path, seq = _spool(tmp_path)
    assert seq == 10**15 // 1000
    assert os.path.basename(path) == spool.event_name(seq, 100, 'abc-def')
    assert open(path, 'rb').read() == _build(seq)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path / 'spool' / 'outbox' / 'tmp') == []
    assert _state(tmp_path) == (seq, 1, len(_build(seq)), 0, 1, 0)


def test_seq_is_monotonic_when_the_clock_steps_back(tmp_path):
    _, first = _spool(tmp_path, now_ns=2 * 10**15)
    _, second = _spool(tmp_path, now_ns=10**15)  # clock stepped back
    _, third = _spool(tmp_path, now_ns=2 * 10**15)
    assert first < second < third


def test_full_by_events_drops_the_new_event_and_counts_it(tmp_path):
    _spool(tmp_path, max_events=1)
    with pytest.raises(spool.OutboxFull, match='outbox full') as info:
        _spool(tmp_path, max_events=1)
    assert info.value.dropped == 1
    assert len(os.listdir(tmp_path / 'spool' / 'outbox' / 'ready')) == 1
    assert _state(tmp_path)[1:] == (1, len(_build(10**12)), 1, 1, 0)  # count, bytes, dropped, spooled, errors


def test_full_by_bytes(tmp_path):
    size = len(_build(10**12))
    _spool(tmp_path, max_bytes=size + 5)
    with pytest.raises(spool.OutboxFull):
        _spool(tmp_path, max_bytes=size + 5)


def test_enospc_from_write_leaves_nothing_and_restores_counters(tmp_path):
    _spool(tmp_path)
    before = _state(tmp_path)

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        _spool(tmp_path, now_ns=10**16, write=full)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path / 'spool' / 'outbox' / 'tmp') == []
    assert len(os.listdir(tmp_path / 'spool' / 'outbox' / 'ready')) == 1
    after = _state(tmp_path)
    # count and bytes are put back; the lost event is counted as dropped so the daemon alerts on it
    assert after[1:3] == before[1:3]
    assert after[3] == before[3] + 1
    assert after[4] == before[4]  # spooled counts only events written


def test_state_written_by_an_older_four_field_format_is_read(tmp_path):
    _spool(tmp_path)
    (tmp_path / 'spool' / 'outbox' / 'state').write_bytes(b'5 1 10 2\n')
    assert _state(tmp_path) == (5, 1, 10, 2, 0, 0)


def test_short_writes_are_completed(tmp_path):
    def one_byte(fd, data):
        return os.write(fd, bytes(data[:1]))

    path, seq = _spool(tmp_path, write=one_byte)
    assert open(path, 'rb').read() == _build(seq)


def test_corrupt_state_file_reads_as_zero(tmp_path):
    _spool(tmp_path)
    (tmp_path / 'spool' / 'outbox' / 'state').write_bytes(b'garbage\n')
    assert _state(tmp_path) == (0, 0, 0, 0, 0, 0)
    _, seq = _spool(tmp_path, now_ns=5 * 10**15)
    assert seq == 5 * 10**12


def test_recreates_removed_tmp_dir(tmp_path):
    _spool(tmp_path)
    os.rmdir(tmp_path / 'spool' / 'outbox' / 'tmp')
    path, _ = _spool(tmp_path, now_ns=10**16)
    assert os.path.exists(path)


def test_adjust_never_goes_below_zero(tmp_path):
    spool.adjust(str(tmp_path / 'spool'), -5, -100)
    assert _state(tmp_path) == (0, 0, 0, 0, 0, 0)


def test_a_failed_sync_of_ready_after_the_rename_is_recorded_not_dropped(tmp_path, monkeypatch):
    def failing_sync(path):
        raise OSError(errno.EIO, 'Input/output error', path)

    monkeypatch.setattr(spool, 'fsync_dir', failing_sync)
    notes = []
    path, seq = _spool(tmp_path, notes=notes)
    assert os.path.exists(path) and [note.errno for note in notes] == [errno.EIO]
    assert _state(tmp_path)[1:5] == (1, len(_build(seq)), 0, 1)   # counted as written, nothing dropped


def test_a_busy_lock_is_waited_for_at_most_the_timeout_then_the_event_is_written(tmp_path):
    spool.ensure_dirs(str(tmp_path / 'spool'))
    holder = os.open(str(tmp_path / 'spool' / 'outbox' / 'lock'), os.O_RDWR | os.O_CREAT, 0o600)
    import fcntl
    import time
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        notes = []
        started = time.monotonic()
        path, seq = _spool(tmp_path, now_ns=7 * 10 ** 15, lock_timeout=0.2, notes=notes)
        assert 0.2 <= time.monotonic() - started < 1.5
        assert os.path.exists(path) and seq == 7 * 10 ** 12
        assert isinstance(notes[0], spool.LockBusy) and 'hook.lock_timeout' in notes[0].strerror
        with pytest.raises(spool.LockBusy):
            _spool(tmp_path, lock_timeout=0.05)   # without notes it raises, as before
    finally:
        os.close(holder)
    assert _state(tmp_path)[1] == 0   # the counters were not touched: recover() recounts


@pytest.mark.parametrize('name', [spool.STATE_FILE, spool.LOCK_FILE])
def test_state_and_lock_are_never_followed_through_a_symlink(tmp_path, name):
    spool.ensure_dirs(str(tmp_path / 'spool'))
    target = tmp_path / 'target'
    target.write_text('keep\n')
    os.symlink(str(target), str(tmp_path / 'spool' / 'outbox' / name))
    notes = []
    path, _ = _spool(tmp_path, notes=notes)
    assert os.path.exists(path) and target.read_text() == 'keep\n'
    assert isinstance(notes[0], spool.UnsafeFile) and 'symbolic link' in notes[0].strerror


def test_a_fifo_as_state_is_refused_without_blocking(tmp_path):
    spool.ensure_dirs(str(tmp_path / 'spool'))
    os.mkfifo(str(tmp_path / 'spool' / 'outbox' / spool.STATE_FILE))
    with pytest.raises(spool.UnsafeFile, match='not a regular file'):
        _spool(tmp_path)


def test_a_busy_lock_still_honours_the_outbox_limits(tmp_path):
    _spool(tmp_path)
    holder = os.open(str(tmp_path / 'spool' / 'outbox' / 'lock'), os.O_RDWR)
    import fcntl
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(spool.OutboxFull, match='read without the lock'):
            _spool(tmp_path, max_events=1, lock_timeout=0.05, notes=[])
        path, seq = _spool(tmp_path, now_ns=0, max_events=2, lock_timeout=0.05, notes=[])
        assert seq == 10 ** 12 + 1   # above the stored seq, read without the lock
    finally:
        os.close(holder)
