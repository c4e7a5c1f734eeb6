"""The durable local outbox: the daemon's view of the spool.

The hookscript writes events with :func:`pve_hooks.hook.spool.spool_event`; the
daemon lists them in ``seq`` order, claims, acknowledges, releases or
declares them dead. Layout and write protocol: :mod:`pve_hooks.hook.spool` and
docs/architecture-outbox.md. What the operator does with the events set
aside (list, show, retry, purge) is in :mod:`pve_hooks.outbox.admin`.

Rules kept here: a corrupt or unreadable file never crashes the reader and
never blocks the rest (it is moved to quarantine/ with a logged reason);
claimed events left by a crashed process return to ready/ at :meth:`Outbox.recover`.
"""

import json
import logging
import os
import time

from pve_hooks.hook import event as event_mod
from pve_hooks.config import schema
from pve_hooks.hook import spool
from pve_hooks.hook.spool import CLAIMED, DEAD, QUARANTINE, READY
from pve_hooks.outbox.files import open_regular

log = logging.getLogger(__name__)
REASON_SUFFIX = '.reason'
BAD_NAME = 'file name is not <seq>-<vmid>-<event_id>.json'


class Entry:
    """One event file: ``name``, ``seq``, ``vmid``, ``event_id``, ``path``, ``size``, ``mtime``."""

    __slots__ = ('name', 'seq', 'vmid', 'event_id', 'path', 'size', 'mtime')

    def __init__(self, name, seq, vmid, event_id, path, size, mtime):
        self.name, self.seq, self.vmid, self.event_id = name, seq, vmid, event_id
        self.path, self.size, self.mtime = path, size, mtime

    def __repr__(self):
        return 'Entry({0!r})'.format(self.name)

    def __eq__(self, other):
        return isinstance(other, Entry) and self.name == other.name and self.path == other.path

    def __hash__(self):
        return hash((self.name, self.path))


class Outbox:
    """The outbox under ``spool_dir`` (``paths.spool_dir``).

    ``clock`` returns seconds since the epoch (time.time); ``max_events``,
    ``max_bytes`` and ``tmp_max_age`` default to the schema's values for
    ``outbox.*`` (use :meth:`from_settings` to take them from a Settings).
    """

    def __init__(self, spool_dir, clock=time.time, max_events=None, max_bytes=None, tmp_max_age=None):
        self.spool_dir = spool_dir
        self.root = spool.outbox_dir(spool_dir)
        self._dirs = {sub: os.path.join(self.root, sub) for sub in spool.SUBDIRS}  # joined once, used per event
        self.clock = clock
        self.max_events = _or_default(max_events, 'outbox.max_events')
        self.max_bytes = _or_default(max_bytes, 'outbox.max_bytes')
        self.tmp_max_age = _or_default(tmp_max_age, 'outbox.tmp_max_age')

    @classmethod
    def from_settings(cls, settings, clock=time.time):
        """Return the Outbox configured by a :class:`pve_hooks.config.loader.Settings`."""
        return cls(settings['paths.spool_dir'], clock, settings['outbox.max_events'],
                   settings['outbox.max_bytes'], settings['outbox.tmp_max_age'])

    def subdir(self, sub):
        """Return the path of the outbox directory ``sub`` (hook.spool's READY, CLAIMED, DEAD, QUARANTINE, TMP)."""
        return self._dirs[sub]

    def ensure(self):
        """Create the spool and outbox directories (mode 0700) where missing; raise OSError."""
        spool.ensure_dirs(self.spool_dir)

    # -- writing -----------------------------------------------------------

    def spool(self, event, random_bytes=os.urandom):
        """Write ``event`` (a dict; ``event_id`` and ``seq`` are filled in when absent) durably.

        Return the path in ready/. Raise spool.OutboxFull or OSError (see
        :func:`pve_hooks.hook.spool.spool_event`).
        """
        event = dict(event)
        event.setdefault('event_id', event_mod.new_event_id(random_bytes(16)))

        def build(seq):
            event['seq'] = seq
            return (json.dumps(event, separators=(',', ':'), sort_keys=False) + '\n').encode('utf-8')

        path, _seq = spool.spool_event(self.spool_dir, int(event['vmid']), event['event_id'], build,
                                       int(self.clock() * 1e9), self.max_events, self.max_bytes)
        return path

    # -- reading -----------------------------------------------------------

    def entries(self, sub):
        """Given a subdirectory (READY, CLAIMED, DEAD, QUARANTINE), return [Entry] for its events.

        Only files whose names parse are returned, unsorted, stat()ed (size,
        mtime); a missing directory is empty. Raise OSError if it cannot be
        listed.
        """
        result = []
        sidecars = sub in (DEAD, QUARANTINE)  # <name>.reason and .<name>.tmp live there
        for item in scan_dir(self.subdir(sub)):
            name = item.name
            if sidecars and is_sidecar(name):
                continue
            parsed = spool.parse_name(name)
            if parsed is None:
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # acknowledged or moved meanwhile
            result.append(Entry(name, parsed[0], parsed[1], parsed[2], item.path, info.st_size, info.st_mtime))
        return result

    def ready_names(self):
        """Return the file names in ready/, sorted (so events come oldest ``seq`` first): one listing.

        Nothing is parsed or stat()ed here, so listing a large backlog is
        cheap; :meth:`ready_entry` parses each name when it is used. Raise
        OSError if ready/ cannot be listed (a missing ready/ is empty).
        """
        try:
            names = os.listdir(self.subdir(READY))
        except FileNotFoundError:
            return []
        names.sort()   # zero-padded seq first: name order is seq order
        return names

    def ready_entry(self, name):
        """Return the Entry of ``name`` (from :meth:`ready_names`) without touching the disk.

        Its ``size`` and ``mtime`` are None until :meth:`claim` reads the
        file. Return None if ``name`` is not an event's name: that file is
        moved to quarantine/ (logged), as a file there never blocks the rest.
        """
        parsed = spool.parse_name(name)
        path = self.subdir(READY) + '/' + name
        if parsed is None:
            self.quarantine(path, BAD_NAME)
            return None
        return Entry(name, parsed[0], parsed[1], parsed[2], path, None, None)

    def _pending_names(self):
        """Return [(name, sub)] for the files in ready/ and claimed/ shaped like events' names, unsorted.

        A shape check (``<20 digits>-…json``), not a full parse: stats() runs
        after every pass and a backlog can be 100,000 files. A badly named
        file that passes it is quarantined when delivery reaches it.
        """
        pending = []
        for sub in (READY, CLAIMED):
            try:
                names = os.listdir(self.subdir(sub))
            except FileNotFoundError:
                continue
            pending.extend((name, sub) for name in names
                           if name.endswith(spool.SUFFIX) and name[20:21] == '-' and name[:20].isdigit())
        return pending

    def claim(self, entry):
        """Move ``entry`` from ready/ to claimed/, read and validate it.

        Return the event dict; None when the file is gone (already claimed or
        acknowledged) or was quarantined because it is unreadable or invalid.
        """
        claimed = self.subdir(CLAIMED) + '/' + entry.name
        ready = self.subdir(READY) + '/' + entry.name
        try:
            os.rename(ready, claimed)
        except FileNotFoundError:
            if not os.path.lexists(ready):
                return None  # claimed or acknowledged meanwhile
            self.ensure()  # claimed/ itself was missing
            os.rename(ready, claimed)
        entry.path = claimed
        try:
            return self.read_event(claimed, entry)
        except (OSError, ValueError) as error:
            self.quarantine(claimed, str(error))
            return None

    def read_event(self, path, entry=None):
        """Given a file's path (and its Entry, or None), return the event it holds, validated.

        ``entry``'s size and mtime are filled in from the open file, and its
        name must match the event's event_id, seq and vmid. Raise OSError if
        the file cannot be read, ValueError if it is not a regular file (a
        symlink, FIFO, directory or device: see :func:`open_regular`), too
        large, not JSON, fails :func:`pve_hooks.hook.event.validate` or does
        not match ``entry``.
        """
        fd = open_regular(path)
        try:
            data = os.read(fd, event_mod.MAX_EVENT_BYTES + 1)
            if entry is not None:
                info = os.fstat(fd)
                entry.size, entry.mtime = info.st_size, info.st_mtime
        finally:
            os.close(fd)
        if len(data) > event_mod.MAX_EVENT_BYTES:
            raise ValueError('file is larger than {0} bytes'.format(event_mod.MAX_EVENT_BYTES))
        try:
            event = json.loads(data.decode('utf-8'))
        except (UnicodeDecodeError, ValueError) as error:
            raise ValueError('not valid JSON ({0})'.format(error))
        except RecursionError:   # e.g. 60 KB of '[': json recurses once per level
            raise ValueError('not valid JSON (nested too deeply)')
        event_mod.validate(event)
        if entry is not None and (event['event_id'], event['seq'], event['vmid']) != (
                entry.event_id, entry.seq, entry.vmid):
            raise ValueError('file name does not match the event it holds (event_id/seq/vmid)')
        return event

    # -- state changes ---------------------------------------------------

    def ack(self, entry):
        """Remove a claimed event: AccountDB has it. A missing file is fine; raise OSError."""
        failed = self.ack_many([entry])
        if failed:
            raise failed[0][1]

    def ack_many(self, entries):
        """Remove claimed events AccountDB has, with one update of the counters for all of them.

        A missing file is fine (acknowledged already). Return [(entry,
        OSError)] for the files that could not be removed (they stay in
        claimed/, go back to ready/ at the next recover and AccountDB
        deduplicates them); raise OSError only if the counters cannot be
        updated (the files are removed by then; recover() recounts).
        """
        directory = self.subdir(CLAIMED) + '/'
        failed = []
        count = size = 0
        for entry in entries:
            try:
                os.unlink(directory + entry.name)
            except FileNotFoundError:
                continue
            except OSError as error:
                failed.append((entry, error))
                continue
            count += 1
            size += entry.size
        if count:
            self._adjust(-count, -size)
        return failed

    def release(self, entry):
        """Return a claimed event to ready/ (to be sent again later); raise OSError."""
        failed = self.release_many([entry])
        if failed:
            raise failed[0][1]

    def release_many(self, entries):
        """Return claimed events to ready/, then sync ready/ once.

        A file already gone from claimed/ is skipped. Return [(entry,
        OSError)] for the files that could not be moved (they stay in
        claimed/ until :meth:`recover`); raise OSError if ready/ cannot be
        synced (the moves are done by then; a rename is atomic, so after a
        crash each file is in claimed/ or ready/, and recover() takes both).
        """
        ready = self.subdir(READY) + '/'
        claimed = self.subdir(CLAIMED) + '/'
        failed = []
        moved = False
        for entry in entries:
            try:
                os.rename(claimed + entry.name, ready + entry.name)
            except FileNotFoundError:
                continue
            except OSError as error:
                failed.append((entry, error))
                continue
            entry.path = ready + entry.name
            moved = True
        if moved:
            spool.fsync_dir(self.subdir(READY))
        return failed

    def dead(self, entry, reason):
        """Move a claimed event to dead/ with ``reason`` stored in ``<name>.reason``.

        Not logged here: the caller (delivery) logs the rejection at CRITICAL
        with AccountDB's answer, as docs/logging.md asks.
        """
        self._write_reason(DEAD, entry.name, reason, CLAIMED)
        try:
            os.rename(os.path.join(self.subdir(CLAIMED), entry.name), os.path.join(self.subdir(DEAD), entry.name))
        except FileNotFoundError:
            remove_file(os.path.join(self.subdir(DEAD), entry.name + REASON_SUFFIX))
            return
        spool.fsync_dir(self.subdir(DEAD))
        self._adjust(-1, -entry.size)

    def quarantine(self, path_or_name, reason):
        """Move a file (a path, or a name in ready/ or claimed/) to quarantine/ with ``reason``.

        Return the new path, or None if the file had gone. Never raises for a
        missing file; logs the reason.
        """
        if os.sep in path_or_name:
            path = path_or_name
        else:
            path = os.path.join(self.subdir(READY), path_or_name)
            if not os.path.lexists(path):
                path = os.path.join(self.subdir(CLAIMED), path_or_name)
        source = os.path.basename(os.path.dirname(path))
        name = os.path.basename(path)
        target_name = name
        if name.endswith(REASON_SUFFIX) or name.startswith('.') or os.path.lexists(
                os.path.join(self.subdir(QUARANTINE), name)):
            target_name = '{0}.{1}.file'.format(name.lstrip('.'), time.time_ns())
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            return None
        self._write_reason(QUARANTINE, target_name, reason, source)
        target = os.path.join(self.subdir(QUARANTINE), target_name)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            remove_file(target + REASON_SUFFIX)
            return None
        spool.fsync_dir(self.subdir(QUARANTINE))
        if source in (READY, CLAIMED) and spool.parse_name(name) is not None:
            self._adjust(-1, -size)
        log.error('outbox file %s moved to %s: %s', path, target, reason)
        return target

    def _write_reason(self, sub, name, reason, source):
        record = {'time': event_mod.format_time(int(self.clock() * 1e9)), 'reason': reason, 'from': source}
        directory = self.subdir(sub)
        data = (json.dumps(record) + '\n').encode('utf-8')
        spool.write_file(os.path.join(directory, '.{0}.{1}.tmp'.format(name, time.time_ns())),
                         os.path.join(directory, name + REASON_SUFFIX), data)

    def _adjust(self, count_delta, bytes_delta):
        spool.adjust(self.spool_dir, count_delta, bytes_delta)

    # -- maintenance -----------------------------------------------------

    def recover(self):
        """Repair after a crash; call once at daemon start before anything else.

        Return {released, tmp_removed, quarantined, depth, bytes}; raise
        OSError. What it repairs and how: :func:`pve_hooks.outbox.recovery.recover`.
        """
        from pve_hooks.outbox import recovery   # here, not at the top: recovery builds on this module

        return recovery.recover(self)

    def quarantine_names(self):
        """Return the names of the files in quarantine/ (not their reasons), sorted. Raise OSError."""
        return sorted(item.name for item in scan_dir(self.subdir(QUARANTINE)) if not is_sidecar(item.name))

    def stats(self):
        """Return {depth, bytes, oldest_age, dead, quarantine, dropped, spooled, hookscript_errors, spooled_seq}.

        ``depth`` counts the events in ready/ + claimed/ (one listing each, no
        stat per file: the daemon calls this after every pass); ``bytes`` is
        the outbox's size counter (exact after :meth:`recover`, approximate
        in between, like the full-outbox check that uses it); ``oldest_age``
        is seconds since the oldest of them was written (None when empty);
        ``dropped`` counts events lost (full outbox or failed write),
        ``spooled`` events written and ``hookscript_errors`` error lines of
        the hookscript, all since the outbox was created; ``spooled_seq`` the
        last seq given.
        """
        pending = self._pending_names()
        oldest_mtime = None
        if pending:   # the oldest that still exists: one stat, unless it just went
            for name, sub in _oldest_first(pending):
                try:
                    oldest_mtime = os.stat(self.subdir(sub) + '/' + name).st_mtime
                    break
                except FileNotFoundError:
                    continue
        with spool.StateLock(self.spool_dir) as state:
            dropped, seq, spooled, errors = state.dropped, state.seq, state.spooled, state.errors
            size = state.bytes
        return {'depth': len(pending), 'bytes': size if pending else 0,
                'oldest_age': None if oldest_mtime is None else max(0.0, self.clock() - oldest_mtime),
                'dead': len(self.entries(DEAD)),
                'quarantine': len(self.quarantine_names()),
                'dropped': dropped, 'spooled': spooled, 'hookscript_errors': errors, 'spooled_seq': seq}


def _or_default(value, key):
    return schema.BY_KEY[key].default_value() if value is None else value


def _oldest_first(items):
    """Yield ``items`` smallest first: min() alone (O(n)), sorting the rest only if asked for more."""
    yield min(items)
    yield from sorted(items)[1:]


def is_sidecar(name):
    """Return True if ``name`` in dead/ or quarantine/ is a reason (``<name>.reason``) or being written (``.*``)."""
    return name.startswith('.') or name.endswith(REASON_SUFFIX)


def scan_dir(directory):
    """Return ``directory``'s os.DirEntry items, unsorted ([] if it is missing). Raise OSError."""
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []


def remove_file(path):
    """Delete ``path``; return True, or False if it was already gone. Raise OSError."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False

