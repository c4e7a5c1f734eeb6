"""pve_hooks.outbox.files and its users: FIFOs, symlinks, directories, deep JSON, bad directory modes.

Each is quarantined with a reason and never blocks the events after it
(pve_hooks.outbox.files.open_regular, Outbox.read_event); the directories
are checked at daemon start (pve_hooks.outbox.recovery.check_dirs).
"""

import json
import os
import stat
import threading

import pytest

from pve_hooks import statedir
from pve_hooks.hook import spool
from pve_hooks.outbox import admin, recovery
from tests.support.outbox import spool_n as _spool_n
from tests.support.outbox import write_ready as _write_ready

NAME = '{0:020d}-100-{1}.json'.format(1, '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9')


def _claim_all(box):
    """Claim every ready event in a thread (a FIFO must not block it); return the events claimed."""
    got = []

    def run():
        for name in box.ready_names():
            entry = box.ready_entry(name)
            if entry is not None:
                event = box.claim(entry)
                if event is not None:
                    got.append(event)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), 'claiming blocked'
    return got


def _reason(box, name):
    with open(os.path.join(box.subdir(spool.QUARANTINE), name + '.reason')) as stream:
        return json.load(stream)['reason']


def test_a_fifo_named_like_an_event_is_quarantined_without_blocking(box):
    os.mkfifo(os.path.join(box.subdir(spool.READY), NAME))
    _spool_n(box, 2)
    assert len(_claim_all(box)) == 2
    assert box.quarantine_names() == [NAME]
    assert _reason(box, NAME) == 'a FIFO, not a regular file'
    assert stat.S_ISFIFO(os.lstat(os.path.join(box.subdir(spool.QUARANTINE), NAME)).st_mode)


def test_a_symlink_named_like_an_event_is_never_followed(box, tmp_path):
    target = tmp_path / 'secret'
    target.write_text('{"not": "an event"}')
    os.symlink(str(target), os.path.join(box.subdir(spool.READY), NAME))
    _spool_n(box, 1)
    assert len(_claim_all(box)) == 1
    assert _reason(box, NAME) == 'a symbolic link, not a regular file (never followed)'
    assert os.path.islink(os.path.join(box.subdir(spool.QUARANTINE), NAME)) and target.exists()


def test_a_directory_named_like_an_event_is_quarantined(box):
    os.mkdir(os.path.join(box.subdir(spool.READY), NAME))
    _spool_n(box, 1)
    assert len(_claim_all(box)) == 1
    assert _reason(box, NAME) == 'a directory, not a regular file'


@pytest.mark.parametrize('data, reason', [
    (b'[' * 60000, 'not valid JSON (nested too deeply)'),
    (b'{"a":' * 12000, 'not valid JSON (nested too deeply)'),
    (b'', 'not valid JSON (Expecting value: line 1 column 1 (char 0))'),
    (b'x' * 70000, 'file is larger than 65536 bytes'),
])
def test_deep_empty_or_huge_content_is_quarantined_not_stuck_in_claimed(box, data, reason):
    _write_ready(box, NAME, data)
    _spool_n(box, 1)
    assert len(_claim_all(box)) == 1
    assert NAME not in os.listdir(box.subdir(spool.CLAIMED))
    assert _reason(box, NAME) == reason


def test_show_and_listing_survive_a_fifo_reason_and_a_deep_file(box):
    os.mkfifo(os.path.join(box.subdir(spool.QUARANTINE), 'x.json.reason'))
    with open(os.path.join(box.subdir(spool.QUARANTINE), 'x.json'), 'w') as stream:
        stream.write('[' * 60000)
    _write_ready(box, NAME, b'[' * 60000)
    assert admin.list_quarantine(box) == [('x.json', None)]
    assert admin.show(box, NAME.split('-', 2)[2][:-5]) == ('ready', None)


def test_recover_sets_aside_a_directory_in_tmp_instead_of_failing(box):
    stale = os.path.join(box.subdir(spool.TMP), 'leftover')
    os.mkdir(stale)
    os.utime(stale, (0, 0))
    result = box.recover()
    assert result['quarantined'] == 1 and not os.path.exists(stale)


def test_a_group_writable_spool_directory_is_fixed_with_a_warning(box, caplog):
    ready = box.subdir(spool.READY)
    os.chmod(ready, 0o777)
    os.chmod(box.spool_dir, 0o775)
    recovery.check_dirs(box.spool_dir)
    assert stat.S_IMODE(os.stat(ready).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(box.spool_dir).st_mode) == 0o755
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert '{0} was writable by group or other (mode 0777); changed to 0755'.format(ready) in warnings
    recovery.check_dirs(box.spool_dir)   # nothing more to fix
    assert len([r for r in caplog.records if r.levelname == 'WARNING']) == 2


def test_a_spool_directory_owned_by_another_user_is_refused_with_the_fix(box):
    with pytest.raises(statedir.UnsafeDirectory) as raised:
        statedir.secure_dir(box.subdir(spool.READY), geteuid=lambda: 4242)
    error = raised.value
    assert error.filename == box.subdir(spool.READY)
    assert error.strerror.startswith('owned by uid {0}, not uid 4242; fix: chown 4242 '.format(os.geteuid()))


def test_missing_spool_directories_are_fine(tmp_path):
    recovery.check_dirs(str(tmp_path / 'nothing-yet'))
