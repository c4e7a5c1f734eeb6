"""The operator's side of the outbox: what ``pve-hooks outbox list|show|retry|purge`` does.

The daemon's side (spool, claim, ack, release, dead, quarantine, recover,
stats) is :class:`pve_hooks.outbox.store.Outbox`; each function here takes
one, lists what waits, and lists, shows, retries or purges the events the
daemon set aside: dead ones (AccountDB rejected them) and quarantined files
(unreadable). Like the daemon's calls, none of them raises for a corrupt
file.
"""

import json
import os

from pve_hooks.hook import spool
from pve_hooks.hook.spool import CLAIMED, DEAD, QUARANTINE, READY
from pve_hooks.outbox.files import open_regular
from pve_hooks.outbox.store import REASON_SUFFIX, remove_file, scan_dir


def list_ready(outbox, limit=None):
    """Given an Outbox, return up to ``limit`` (None: all) Entries in ready/, oldest ``seq`` first.

    Files whose names do not parse are quarantined, never returned. Only
    the returned files are stat()ed (for ``size`` and ``mtime``). Raise
    OSError if ready/ cannot be listed. (The daemon lists with
    ``Outbox.ready_names``/``ready_entry``, which stat nothing.)
    """
    entries = []
    for name in outbox.ready_names():
        if limit is not None and len(entries) >= limit:
            break
        entry = outbox.ready_entry(name)
        if entry is None:
            continue
        try:
            info = os.lstat(entry.path)
        except FileNotFoundError:
            continue  # claimed or acknowledged meanwhile
        entry.size, entry.mtime = info.st_size, info.st_mtime
        entries.append(entry)
    return entries


def list_dead(outbox):
    """Given an Outbox, return [(Entry, reason dict or None)] for dead/, oldest first. Raise OSError."""
    return [(entry, _read_reason(entry.path + REASON_SUFFIX))
            for entry in sorted(outbox.entries(DEAD), key=lambda entry: entry.name)]


def list_quarantine(outbox):
    """Given an Outbox, return [(name, reason dict or None)] for quarantine/, by name. Raise OSError."""
    directory = outbox.subdir(QUARANTINE)
    return [(name, _read_reason(os.path.join(directory, name + REASON_SUFFIX)))
            for name in outbox.quarantine_names()]


def retry_dead(outbox):
    """Given an Outbox, move every dead event back to ready/ (the daemon sends it again); return how many.

    The outbox's counters grow by what is moved and ready/ is synced once.
    Raise OSError (the events moved by then stay in ready/).
    """
    ready = outbox.subdir(READY)
    moved = 0
    for entry in outbox.entries(DEAD):
        try:
            os.rename(entry.path, os.path.join(ready, entry.name))
        except FileNotFoundError:
            continue
        remove_file(entry.path + REASON_SUFFIX)
        spool.adjust(outbox.spool_dir, 1, entry.size)
        moved += 1
    if moved:
        spool.fsync_dir(ready)
    return moved


def purge_dead(outbox):
    """Given an Outbox, delete every dead event and its reason; return how many events. Raise OSError."""
    removed = 0
    for entry in outbox.entries(DEAD):
        if remove_file(entry.path):
            removed += 1
        remove_file(entry.path + REASON_SUFFIX)
    return removed


def show(outbox, event_id):
    """Given an Outbox and an event_id, return (state, event dict or None if unreadable), or None.

    ``state`` is where the event is: ready, claimed, dead or quarantine
    (a quarantined file is found by the event_id in its name). None when no
    file holds it (delivered, or never spooled). Raise OSError if a
    directory cannot be listed.
    """
    for sub in (READY, CLAIMED, DEAD, QUARANTINE):
        for item in scan_dir(outbox.subdir(sub)):
            parsed = spool.parse_name(item.name)
            if parsed is None and sub == QUARANTINE and ('-' + event_id + '.json') in item.name:
                parsed = (None, None, event_id)
            if parsed is None or parsed[2] != event_id or item.name.endswith(REASON_SUFFIX):
                continue
            try:
                return sub, outbox.read_event(item.path)
            except (OSError, ValueError):
                return sub, None
    return None


def _read_reason(path):
    """Return the reason record (JSON: time, reason, from) at ``path``, or None if missing or unreadable."""
    try:
        fd = open_regular(path)   # a FIFO or symlink named like a reason must not block or mislead the listing
    except (OSError, ValueError):
        return None
    try:
        return json.loads(os.read(fd, 65536).decode('utf-8'))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
