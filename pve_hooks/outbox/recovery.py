"""Repair the outbox after a crash: what :meth:`Outbox.recover` does once at daemon start.

A crash (SIGKILL, power cut) can leave events in claimed/ (a batch was
being sent), half-written files in tmp/ (a hookscript died mid-write), badly
named files anywhere, and counters in ``state`` that are behind or ahead
(``state`` is not fsynced). :func:`recover` returns claimed events to ready/
(AccountDB deduplicates the ones it already has), removes old tmp/ files,
quarantines foreign files, and recounts ``state`` from the files, while
hookscripts keep spooling.
"""

import logging
import os

from pve_hooks import statedir
from pve_hooks.hook import spool
from pve_hooks.hook.spool import CLAIMED, DEAD, READY, TMP
from pve_hooks.outbox.store import BAD_NAME, scan_dir

log = logging.getLogger(__name__)


def check_dirs(spool_dir):
    """Given ``paths.spool_dir``, check it and the outbox directories at daemon start.

    Each must belong to this process's user (root) and not be writable by
    group or other, as :func:`pve_hooks.hook.spool.ensure_dirs` creates them
    (0700): one we own is fixed (logged at WARNING with the old and new
    mode), one owned by another user is refused
    (:class:`pve_hooks.statedir.UnsafeDirectory`, naming the fix). Missing
    ones are fine (created later). Raise OSError.
    """
    root = spool.outbox_dir(spool_dir)
    for directory in [spool_dir, root] + [os.path.join(root, sub) for sub in spool.SUBDIRS]:
        statedir.secure_dir(directory)


def recover(outbox):
    """Repair after a crash; call once at daemon start before anything else.

    Return claimed events to ready/, remove tmp/ files older than
    ``tmp_max_age``, quarantine badly named files in ready/, recompute the
    counters (and raise ``seq`` to the highest seen). Return a dict
    {released, tmp_removed, quarantined, depth, bytes}.

    Hookscripts keep spooling during the recount; what they reserve
    meanwhile is counted exactly. Only an event whose write was in
    progress at the very start of the recount can be missed (its file
    not yet in ready/); the next start counts it.
    """
    outbox.ensure()
    claimed = outbox.entries(CLAIMED)
    failed = outbox.release_many(claimed)
    if failed:
        raise failed[0][1]
    released = len(claimed)
    tmp_removed = 0
    now = outbox.clock()
    quarantined = 0
    for item in scan_dir(outbox.subdir(TMP)):
        try:
            if now - item.stat(follow_symlinks=False).st_mtime > outbox.tmp_max_age:
                os.unlink(item.path)
                tmp_removed += 1
        except FileNotFoundError:
            pass
        except OSError as error:   # a directory, or a file we may not remove: set aside, never block the start
            if outbox.quarantine(item.path, 'stale entry in tmp/ that cannot be removed ({0})'.format(
                    error.strerror or error)):
                quarantined += 1
    bad = []
    with spool.StateLock(outbox.spool_dir) as state:
        before = (state.seq, state.count, state.bytes)
    # Hookscripts do not wait for this scan. An event they reserve meanwhile gets a seq above
    # both the stored seq and the time now in microseconds (spool.spool_event), so the scan
    # leaves it out and the counters' own change below keeps it.
    up_to = max(before[0], int(outbox.clock() * 1e6) - 1)
    depth, size, highest, later = _tally_ready(outbox, bad, up_to)
    for path in bad:
        if outbox.quarantine(path, BAD_NAME):
            quarantined += 1
    for item in scan_dir(outbox.subdir(CLAIMED)):  # left over with a bad name
        if spool.parse_name(item.name) is None and outbox.quarantine(item.path, 'unexpected file in claimed/'):
            quarantined += 1
    highest = max([highest] + [entry.seq for entry in outbox.entries(DEAD)])
    with spool.StateLock(outbox.spool_dir) as state:
        depth += max(0, state.count - before[1])
        size += max(0, state.bytes - before[2])
        for seq, file_size in later:   # above every seq reserved: not a reservation (clock stepped back)
            if seq > state.seq:
                depth += 1
                size += file_size
        state.count = depth
        state.bytes = size
        state.seq = max(state.seq, highest)
        state.save()
    result = {'released': released, 'tmp_removed': tmp_removed, 'quarantined': quarantined,
              'depth': depth, 'bytes': size}
    if released or tmp_removed or quarantined:
        log.info('outbox recovered: %d claimed events returned to ready, %d stale tmp files removed, '
                 '%d files quarantined', released, tmp_removed, quarantined)
    return result


def _tally_ready(outbox, bad, up_to):
    """Count the events in ready/ whose seq is at most ``up_to``.

    Return (count, bytes, highest seq of all, [(seq, size)] of the events
    above ``up_to``); append bad names' paths to ``bad``. One scan and one
    stat per file: a restart with a backlog of 100,000 events recounts
    them in well under a second.
    """
    count = size = highest = 0
    later = []
    for item in scan_dir(outbox.subdir(READY)):
        parsed = spool.parse_name(item.name)
        if parsed is None:
            bad.append(item.path)
            continue
        try:
            file_size = item.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue  # claimed or acknowledged meanwhile
        seq = parsed[0]
        highest = max(highest, seq)
        if seq > up_to:
            later.append((seq, file_size))
        else:
            count += 1
            size += file_size
    return count, size, highest, later
