"""Unit tests for pve_hooks.daemon.dirwatch: real inotify on a temporary directory."""

import os
import time

import pytest

from pve_hooks.daemon import dirwatch


@pytest.fixture
def watched(tmp_path):
    directory = tmp_path / 'ready'
    directory.mkdir()
    watch = dirwatch.DirWatch(str(directory))
    yield watch, directory
    watch.close()


def test_rename_into_directory_wakes_the_waiter(watched, tmp_path):
    watch, directory = watched
    assert watch.available, watch.reason
    assert dirwatch.wait([watch], 0) == []
    source = tmp_path / 'event.tmp'
    source.write_text('{}')
    os.rename(str(source), str(directory / 'event.json'))
    assert dirwatch.wait([watch], 5) == [watch]
    assert watch.drain() >= 1
    assert dirwatch.wait([watch], 0) == []


def test_file_created_in_directory_wakes_the_waiter(watched):
    watch, directory = watched
    (directory / 'linked.json').write_text('{}')
    assert dirwatch.wait([watch], 5) == [watch]
    assert watch.drain() >= 1


def test_wait_times_out_without_events(watched):
    watch, _directory = watched
    started = time.monotonic()
    assert dirwatch.wait([watch, None], 0.05) == []
    assert time.monotonic() - started >= 0.04


def test_removed_directory_is_noticed_and_can_be_rewatched(watched):
    watch, directory = watched
    os.rmdir(str(directory))
    dirwatch.wait([watch], 5)
    watch.drain()
    assert not watch.available
    assert 'removed' in watch.reason
    directory.mkdir()
    assert watch.rewatch()
    (directory / 'x.json').write_text('{}')
    assert dirwatch.wait([watch], 5) == [watch]


def test_missing_directory_is_unavailable_with_a_reason(tmp_path):
    watch = dirwatch.DirWatch(str(tmp_path / 'nope'))
    try:
        assert not watch.available
        assert 'nope' in watch.reason and 'No such file' in watch.reason
    finally:
        watch.close()


def test_no_inotify_falls_back_with_a_reason(tmp_path):
    def broken():
        raise OSError('libc has no inotify')

    watch = dirwatch.DirWatch(str(tmp_path), libc_loader=broken)
    assert not watch.available
    assert watch.fileno() is None
    assert 'inotify unavailable' in watch.reason
    assert watch.drain() == 0
    assert dirwatch.wait([watch if watch.available else None], 0) == []


def test_wait_accepts_plain_descriptors(tmp_path):
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b'x')
        assert dirwatch.wait([read_end], 1) == [read_end]
    finally:
        os.close(read_end)
        os.close(write_end)
