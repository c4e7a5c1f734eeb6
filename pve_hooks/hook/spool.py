"""The outbox's on-disk primitives, shared by the hookscript and :mod:`pve_hooks.outbox.store`.

On the hookscript's hot path: it follows the import rules in
:mod:`pve_hooks.hook` (built-ins only, ``posix`` rather than ``os``).

Layout under ``paths.spool_dir`` (directories mode 0700, files 0600)::

    outbox/tmp/         files being written (never read)
    outbox/ready/       complete events, <seq:020d>-<vmid>-<event_id>.json
    outbox/claimed/     events the daemon is sending
    outbox/dead/        events AccountDB rejected for good (+ <name>.reason)
    outbox/quarantine/  unreadable or corrupt files (+ <name>.reason)
    outbox/state        "seq count bytes dropped spooled errors" (fixed width, one line)
    outbox/lock         fcntl.flock guarding ``state``

Writing is Maildir-style: create in tmp/ with O_CREAT|O_EXCL, write, fsync
the file, rename into ready/, fsync ready/. A reader listing ready/ never sees
a partial file; a writer killed half-way leaves at most a file in tmp/, which
``Outbox.recover`` removes by age.

``spooled``, ``dropped`` and ``errors`` in ``state`` count every event
written, every event lost and every error the hookscript reported since the
outbox was created (the metrics' totals).
``count`` and ``bytes`` in ``state`` are approximate counters of the events
in ready/ + claimed/ (the hookscript increments them, the daemon decrements
them, ``Outbox.recover`` recomputes them from a scan); the full-outbox check
uses them so the hookscript never scans a directory.
"""

import fcntl
import posix  # not os: see pve_hooks.hook
import time

OUTBOX = 'outbox'
TMP, READY, CLAIMED, DEAD, QUARANTINE = 'tmp', 'ready', 'claimed', 'dead', 'quarantine'
SUBDIRS = (TMP, READY, CLAIMED, DEAD, QUARANTINE)
STATE_FILE = 'state'
LOCK_FILE = 'lock'
SUFFIX = '.json'
_ID_CHARS = '0123456789abcdef-'
_STATE_FORMAT = '{0:020d} {1:020d} {2:020d} {3:020d} {4:020d} {5:020d}\n'


class LockBusy(OSError):
    """The outbox lock was held by another process for longer than the lock timeout (a stalled holder)."""


class UnsafeFile(OSError):
    """``state`` or ``lock`` is a symbolic link or not a regular file; it is refused, never followed."""


class OutboxFull(Exception):
    """The outbox is at ``outbox.max_events`` or ``outbox.max_bytes``; the new event was dropped.

    ``dropped`` is the total number of events dropped so far on this node.
    """

    def __init__(self, message, dropped):
        super().__init__(message)
        self.dropped = dropped


def _join(directory, *names):
    """os.path.join for an absolute ``directory`` and names without slashes (no os: see the module docstring)."""
    return '/'.join((directory.rstrip('/'),) + names)


def _dirname(path):
    """os.path.dirname for a path without trailing or repeated slashes."""
    head = path.rpartition('/')[0]
    return head or ('/' if path.startswith('/') else '')


def outbox_dir(spool_dir):
    """Given ``paths.spool_dir``, return the outbox directory inside it."""
    return _join(spool_dir, OUTBOX)


def event_name(seq, vmid, event_id):
    """Return the file name of an event: sorting names sorts by ``seq``."""
    return '{0:020d}-{1:d}-{2}{3}'.format(seq, vmid, event_id, SUFFIX)


def parse_name(name):
    """Given a file name, return (seq, vmid, event_id), or None if it is not an event's name."""
    if not name.endswith(SUFFIX) or len(name) < 20 + 1 + 1 + 1 + 1 + len(SUFFIX):
        return None
    seq, sep1, rest = name[:-len(SUFFIX)].partition('-')
    vmid, sep2, event_id = rest.partition('-')
    if not (sep1 and sep2 and len(seq) == 20 and seq.isdigit() and vmid.isdigit() and event_id):
        return None
    if not vmid.isascii() or not seq.isascii() or vmid[0] == '0':
        return None
    if event_id.strip(_ID_CHARS):  # anything left is a character outside [0-9a-f-] (one C call, no loop)
        return None
    return int(seq), int(vmid), event_id


def _mkdir(path):
    try:
        posix.mkdir(path, 0o700)
    except FileExistsError:
        return
    posix.chmod(path, 0o700)  # mkdir's mode is reduced by the umask


def ensure_dirs(spool_dir):
    """Create the spool directory and the outbox layout (mode 0700) where missing.

    Raise OSError if a directory cannot be created.
    """
    try:
        _mkdir(spool_dir)
    except FileNotFoundError:  # its parent is missing too (rare: a new node or a custom paths.spool_dir)
        import os
        os.makedirs(_dirname(spool_dir.rstrip('/')), 0o755, exist_ok=True)
        _mkdir(spool_dir)
    root = outbox_dir(spool_dir)
    _mkdir(root)
    for sub in SUBDIRS:
        _mkdir(_join(root, sub))


def fsync_dir(path):
    """fsync directory ``path`` so a rename into (or out of) it is durable."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        posix.fsync(fd)
    finally:
        posix.close(fd)


def write_file(tmp_path, final_path, data, write=posix.write):
    """Durably publish ``data`` at ``final_path`` via ``tmp_path`` (same file system).

    Create ``tmp_path`` with O_CREAT|O_EXCL mode 0600, write, fsync, rename to
    ``final_path``, fsync the final directory. On any failure before the
    rename the temporary file is removed and the OSError propagates. ``write``
    is ``os.write`` (``posix.write`` is the same function; a parameter so
    tests can inject faults such as ENOSPC).
    """
    publish(tmp_path, final_path, data, write)
    fsync_dir(_dirname(final_path))


def publish(tmp_path, final_path, data, write=posix.write):
    """:func:`write_file` up to the rename: the file is complete at ``final_path``, its directory not synced."""
    fd = posix.open(tmp_path, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = write(fd, view)
                view = view[written:]
            posix.fsync(fd)
        finally:
            posix.close(fd)
        posix.rename(tmp_path, final_path)
    except BaseException:
        try:
            posix.unlink(tmp_path)
        except OSError:
            pass
        raise


def _open_regular(path):
    """Open ``path`` read-write without following a symbolic link, creating it (O_EXCL, 0600) when missing.

    Return the fd. Raise UnsafeFile when it is a symbolic link or not a
    regular file (a FIFO or a device is never read: O_NONBLOCK, then fstat),
    FileNotFoundError when its directory is missing, OSError otherwise.
    """
    flags = posix.O_RDWR | posix.O_CLOEXEC | posix.O_NOFOLLOW | posix.O_NONBLOCK
    try:
        try:
            fd = posix.open(path, flags)
        except FileNotFoundError:
            try:
                fd = posix.open(path, flags | posix.O_CREAT | posix.O_EXCL, 0o600)
            except FileExistsError:  # created by another writer in between
                fd = posix.open(path, flags)
    except OSError as error:
        if error.errno in (40, 21):  # ELOOP (a symbolic link), EISDIR
            raise UnsafeFile(error.errno, '{0} is {1}; remove it (it is recreated as a regular file)'.format(
                path, 'a symbolic link' if error.errno == 40 else 'a directory'), path)
        raise
    if posix.fstat(fd).st_mode & 0o170000 != 0o100000:  # not stat.S_ISREG
        posix.close(fd)
        raise UnsafeFile(22, '{0} is not a regular file; remove it (it is recreated as a regular file)'.format(path),
                         path)
    return fd


def _flock(fd, timeout, path):
    """Take the exclusive flock on ``fd``; wait at most ``timeout`` seconds (None: as long as it takes).

    Raise LockBusy when the timeout passes (polls with LOCK_NB: no signal, no thread).
    """
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    end = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        left = end - time.monotonic()
        if left <= 0:
            raise LockBusy(11, 'the outbox lock {0} was held by another process for {1:g} s (hook.lock_timeout; '
                               'a stalled process?)'.format(path, timeout), path)
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)


class StateLock:
    """Context manager: hold the outbox lock and read/write ``state``.

    ``timeout``: seconds to wait for the lock, then raise LockBusy (None:
    wait as long as it takes). ``state`` and ``lock`` are never opened
    through a symbolic link, and refused (UnsafeFile) unless regular files.

    Inside, ``seq``, ``count``, ``bytes``, ``dropped``, ``spooled`` and ``errors`` are the stored
    values (0 when the file is missing or unreadable); :meth:`save` writes
    them back in place (fixed width, so a crash cannot leave a torn longer
    line). Creates the outbox layout when it is missing.
    """

    def __init__(self, spool_dir, timeout=None):
        self.root = outbox_dir(spool_dir)
        self.spool_dir = spool_dir
        self.timeout = timeout
        self.lock_fd = self.state_fd = -1
        self.seq = self.count = self.bytes = self.dropped = self.spooled = self.errors = 0

    def __enter__(self):
        lock_path = _join(self.root, LOCK_FILE)
        try:
            self.lock_fd = _open_regular(lock_path)
        except FileNotFoundError:
            ensure_dirs(self.spool_dir)
            self.lock_fd = _open_regular(lock_path)
        try:
            # Opened before the lock so the lock is held for a pread and a pwrite only.
            self.state_fd = _open_regular(_join(self.root, STATE_FILE))
            _flock(self.lock_fd, self.timeout, lock_path)
            self._read()
        except BaseException:
            self._close()
            raise
        return self

    def _read(self):
        fields = posix.pread(self.state_fd, 128, 0).split()
        if 4 <= len(fields) <= 6 and all(field.isdigit() for field in fields):
            values = [int(field) for field in fields] + [0, 0]  # older, shorter formats
            self.seq, self.count, self.bytes, self.dropped, self.spooled, self.errors = values[:6]

    def save(self):
        """Write the current values back to ``state`` (not fsynced: see module docstring)."""
        values = [max(0, value) for value in (self.seq, self.count, self.bytes, self.dropped, self.spooled,
                                              self.errors)]
        posix.pwrite(self.state_fd, _STATE_FORMAT.format(*values).encode('ascii'), 0)

    def _close(self):
        for fd in (self.state_fd, self.lock_fd):
            if fd >= 0:
                posix.close(fd)  # closing the lock file releases the flock
        self.state_fd = self.lock_fd = -1

    def __exit__(self, *exc):
        self._close()
        return False


def spool_event(spool_dir, vmid, event_id, build, now_ns, max_events, max_bytes, write=posix.write,
                lock_timeout=None, notes=None):
    """Write one event durably into ready/; the one write path of the hookscript and the daemon.

    ``build(seq)`` returns the event's bytes with ``seq`` filled in; ``seq`` is
    ``max(stored seq + 1, now_ns // 1000)`` under the lock, so it is monotonic
    per node even when the clock steps back. ``max_events`` / ``max_bytes``
    (None = unbounded) are checked against the counters in ``state``.

    ``lock_timeout`` bounds the wait for the outbox lock (None: no bound).
    With a list ``notes`` the event is written even when the counters cannot
    be (the lock stayed busy: LockBusy; ``state`` or ``lock`` is a symbolic
    link or not a regular file: UnsafeFile): then ``seq`` and the outbox
    limits come from ``state`` read without the lock (LockBusy; ``now_ns //
    1000`` and no limits for UnsafeFile), the counters are left for the
    daemon's recovery to recount, and the exception is appended to ``notes``.
    Likewise an OSError syncing ready/ after the rename is appended there:
    the event is in ready/ and counted as written. Without ``notes`` both raise.

    Return (path, seq). Raise OutboxFull when the outbox is full (the event
    is dropped and counted) and OSError when the event cannot be written (the
    event is lost: the counters are put back and it is counted as dropped, so
    the daemon alerts on it like on a full outbox).
    """
    counted = True
    try:
        with StateLock(spool_dir, lock_timeout) as state:
            seq = max(state.seq + 1, now_ns // 1000)
            data = build(seq)
            if (max_events is not None and state.count >= max_events) or (
                    max_bytes is not None and state.bytes + len(data) > max_bytes):
                state.dropped += 1
                state.save()
                raise OutboxFull('outbox full ({0} events, {1} bytes; limits outbox.max_events={2}, '
                                 'outbox.max_bytes={3})'.format(state.count, state.bytes, max_events, max_bytes),
                                 state.dropped)
            state.seq = seq
            state.count += 1
            state.bytes += len(data)
            state.spooled += 1
            state.save()
    except (LockBusy, UnsafeFile) as error:
        if notes is None:
            raise
        counted = False
        stored = _peek_state(outbox_dir(spool_dir)) if isinstance(error, LockBusy) else None
        seq = max(stored[0] + 1, now_ns // 1000) if stored else now_ns // 1000
        data = build(seq)
        if stored and ((max_events is not None and stored[1] >= max_events) or (
                max_bytes is not None and stored[2] + len(data) > max_bytes)):
            raise OutboxFull('outbox full ({0} events, {1} bytes; limits outbox.max_events={2}, outbox.max_bytes={3}; '
                             'read without the lock, which was busy)'.format(stored[1], stored[2], max_events,
                                                                              max_bytes), stored[3] + 1)
        notes.append(error)
    name = event_name(seq, vmid, event_id)
    root = outbox_dir(spool_dir)
    final = _join(root, READY, name)
    try:
        try:
            publish(_join(root, TMP, name), final, data, write)
        except FileNotFoundError:  # a directory was removed under us: recreate it once
            ensure_dirs(spool_dir)
            publish(_join(root, TMP, name), final, data, write)
    except BaseException:
        if counted:
            try:
                adjust(spool_dir, -1, -len(data), dropped_delta=1, spooled_delta=-1, lock_timeout=lock_timeout)
            except OSError:
                pass  # the counters are approximate; recover() recomputes them
        raise
    try:  # from here on the event is in ready/: a failure is not a loss
        fsync_dir(_join(root, READY))
    except OSError as error:
        if notes is None:
            raise
        notes.append(error)
    return final, seq


def _peek_state(root):
    """Return (seq, count, bytes, dropped) read from ``state`` without the lock, or None if it cannot be.

    For a writer whose lock wait timed out: the line is written in place with
    one pwrite of fixed width, so an unlocked read sees the old or the new one.
    """
    try:
        fd = posix.open(_join(root, STATE_FILE), posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW | posix.O_NONBLOCK)
    except OSError:
        return None
    try:
        if posix.fstat(fd).st_mode & 0o170000 != 0o100000:
            return None
        fields = posix.pread(fd, 128, 0).split()
    except OSError:
        return None
    finally:
        posix.close(fd)
    if 4 <= len(fields) <= 6 and all(field.isdigit() for field in fields):
        return tuple(int(field) for field in fields[:4])
    return None


def adjust(spool_dir, count_delta, bytes_delta, dropped_delta=0, spooled_delta=0, errors_delta=0,
           lock_timeout=None):
    """Add the deltas to the counters in ``state`` (never below 0). Raise OSError if it cannot.

    ``lock_timeout``: as for :class:`StateLock` (LockBusy is an OSError).
    """
    with StateLock(spool_dir, lock_timeout) as state:
        state.count = max(0, state.count + count_delta)
        state.bytes = max(0, state.bytes + bytes_delta)
        state.dropped = max(0, state.dropped + dropped_delta)
        state.spooled = max(0, state.spooled + spooled_delta)
        state.errors = max(0, state.errors + errors_delta)
        state.save()
