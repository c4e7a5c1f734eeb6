"""The state directory (``paths.state_dir``): its file names, readers and the one atomic writer.

Every file pve-hooks keeps in the state directory is named here and nowhere
else; the module that owns a file asks :func:`path` for it::

    DAEMON      daemon.json     the reconciler's status snapshot (observe.status)
    LOCK        reconcile.lock  one reconciler per state directory (daemon.lock)
    BREAKER     breaker.json    circuit breaker towards AccountDB (accountdb.breaker)
    WHITELIST   whitelist.json  AccountDB's VMID whitelist, cached (whitelist.cache)
    INVENTORY   inventory.json  hash of the last inventory AccountDB acknowledged (daemon.inventory_sync)
    SNIPPET     snippet.json    where the hookscript copy went and its sha256 (proxmox.snippets)

A state file is replaced as a whole by :func:`atomic_write`: the new content
goes to a temporary file in the same directory, which is fsync'ed and
renamed over the old one, then the directory is fsync'ed. A reader therefore
sees the old or the new content, never a mix, even after a crash. A missing,
unreadable or corrupt state file reads as the caller's default: state is a
cache of what the daemon learnt, and losing it only costs a resend (never an
event). :func:`atomic_write` is also the writer for the metrics text file
and the hookscript's copy in the snippets storage; the hookscript's own
spool writer (hook.spool) stays separate because of its start-up budget.
"""

import errno
import json
import logging
import os
import stat

log = logging.getLogger(__name__)

DAEMON = 'daemon.json'
LOCK = 'reconcile.lock'
BREAKER = 'breaker.json'
WHITELIST = 'whitelist.json'
INVENTORY = 'inventory.json'
SNIPPET = 'snippet.json'


def path(settings, name):
    """Given Settings and one of the names above, return its path in ``paths.state_dir``."""
    return os.path.join(settings['paths.state_dir'], name)


def ensure_dir(directory, mode=0o700):
    """Create ``directory`` (and parents) with ``mode`` if missing; return it. Raise OSError."""
    os.makedirs(directory, mode=mode, exist_ok=True)
    return directory


class UnsafeDirectory(OSError):
    """A spool or state directory the daemon must not use: owned by someone else (``strerror`` says the fix)."""


def secure_dir(directory, geteuid=os.geteuid):
    """Check that ``directory`` belongs to this process's user and is not writable by group or other.

    A directory we own that is group- or other-writable is fixed (chmod
    without those bits, logged at WARNING with the old and new mode); one
    owned by another user, or not a directory, raises UnsafeDirectory
    naming the directory and the command that fixes it. A missing directory
    is fine (it is created 0700 when needed). Return the new mode when it
    was changed, else None. Raise OSError when it cannot be checked or fixed.
    """
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(errno.ENOTDIR, 'not a directory; move it away so a directory can be created',
                              directory)
    me = geteuid()
    if info.st_uid != me:
        owner = 'root' if me == 0 else 'uid {0}'.format(me)
        raise UnsafeDirectory(errno.EPERM, 'owned by uid {0}, not {1}; fix: chown {2} {3} && chmod 0700 {3}'.format(
            info.st_uid, owner, 'root:root' if me == 0 else me, directory), directory)
    old = stat.S_IMODE(info.st_mode)
    if not old & 0o022:
        return None
    new = old & ~0o022
    os.chmod(directory, new)
    log.warning('%s was writable by group or other (mode %04o); changed to %04o', directory, old, new)
    return new


def check_dir(state_dir):
    """Given ``paths.state_dir``, check it at daemon start (:func:`secure_dir`); raise UnsafeDirectory/OSError."""
    secure_dir(state_dir)


def read_json(file_path, default=None):
    """Return the JSON object stored in ``file_path``, or ``default``.

    ``default`` is returned when the file is missing; when it is unreadable
    (a symlink, FIFO or anything but a regular file counts as unreadable: it
    is never followed or blocked on) or not a JSON object, a warning naming the file is logged and ``default``
    is returned too (the file is left in place for inspection and is
    replaced by the next write).
    """
    try:
        data = json.loads(_read_regular(file_path).decode('utf-8'))
    except FileNotFoundError:
        return default
    except PermissionError:
        log.warning('%s: permission denied; run as root (or see docs/health.md for NRPE/sudo)', file_path)
        return default
    except (OSError, ValueError, RecursionError) as error:
        log.warning('%s: state file unreadable (%s); starting from empty state, it will be rewritten',
                    file_path, getattr(error, 'strerror', None) or error)
        return default
    if not isinstance(data, dict):
        log.warning('%s: state file does not hold a JSON object; starting from empty state, '
                    'it will be rewritten', file_path)
        return default
    return data


def _read_regular(file_path):
    """Return the bytes of ``file_path``; refuse (OSError) a symlink, FIFO, directory or device."""
    try:
        fd = os.open(file_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, 'a symbolic link, not followed', file_path)
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, 'not a regular file', file_path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b''.join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def clamp_future(data, now):
    """Given a state record (dict) and the epoch ``now``, return it with every time in the future set to ``now``.

    Times are the numeric values of keys ending in ``_at`` or ``_since``
    (nested records too). A time ahead of the clock was written before the
    clock stepped back; trusted as is, it would make a breaker stay open, a
    refresh wait, or a daemon look alive for as long as the step.
    """
    if not isinstance(data, dict):
        return data
    for key, value in data.items():
        if isinstance(value, dict):
            clamp_future(value, now)
        elif (key.endswith('_at') or key.endswith('_since')) and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and value > now:
            data[key] = now
    return data


def write_json(file_path, data, mode=0o600):
    """Atomically replace ``file_path`` with ``data`` as JSON (see :func:`atomic_write`).

    Raise OSError, or TypeError/ValueError for data that is not JSON.
    """
    payload = json.dumps(data, sort_keys=True, separators=(',', ':')).encode('utf-8') + b'\n'
    atomic_write(file_path, payload, mode)


def atomic_write(file_path, data, mode=0o600):
    """Atomically replace ``file_path`` with the bytes ``data``, leaving it with permissions ``mode``.

    Write a temporary file next to it (created with O_EXCL, mode set with
    fchmod so the process umask cannot narrow it), fsync it, rename it over
    ``file_path`` and fsync the directory. Create the directory (mode 0700)
    if it is missing. Raise OSError; the temporary file is then removed.
    """
    directory = os.path.dirname(os.path.abspath(file_path))
    ensure_dir(directory)
    tmp = '{0}.tmp.{1}'.format(file_path, os.getpid())
    _unlink_quietly(tmp)  # a leftover of a crashed writer with the same pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, file_path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _unlink_quietly(file_path):
    try:
        os.unlink(file_path)
    except OSError:
        pass
