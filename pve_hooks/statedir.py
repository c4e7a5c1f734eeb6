"""Small JSON state files in ``paths.state_dir``, written atomically.

A state file is replaced as a whole: the new content goes to a temporary file
in the same directory, which is fsync'ed and renamed over the old one, then
the directory is fsync'ed. A reader therefore sees the old or the new
content, never a mix, even after a crash. A missing, unreadable or corrupt
state file reads as the caller's default: state is a cache of what the
daemon learnt, and losing it only costs a resend (never an event).
"""

import json
import logging
import os

log = logging.getLogger(__name__)


def ensure_dir(path, mode=0o700):
    """Create directory ``path`` (and parents) with ``mode`` if missing; return ``path``.

    Raise OSError if it cannot be created.
    """
    os.makedirs(path, mode=mode, exist_ok=True)
    return path


def read_json(path, default=None):
    """Return the JSON object stored in ``path``, or ``default``.

    ``default`` is returned when the file is missing; when it is unreadable
    or not a JSON object, a warning naming the file is logged and ``default``
    is returned too (the file is left in place for inspection and is
    replaced by the next write).
    """
    try:
        with open(path, 'rb') as stream:
            data = json.loads(stream.read().decode('utf-8'))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as error:
        log.warning('%s: state file unreadable (%s); starting from empty state, it will be rewritten',
                    path, getattr(error, 'strerror', None) or error)
        return default
    if not isinstance(data, dict):
        log.warning('%s: state file does not hold a JSON object; starting from empty state, '
                    'it will be rewritten', path)
        return default
    return data


def write_json(path, data, mode=0o600):
    """Atomically replace ``path`` with ``data`` serialised as JSON.

    Write a temporary file next to it (created with O_EXCL and ``mode``),
    fsync it, rename it over ``path`` and fsync the directory. Create the
    directory (mode 0700) if it is missing. Raise OSError (the temporary
    file is removed) or TypeError/ValueError for data that is not JSON.
    """
    directory = os.path.dirname(os.path.abspath(path))
    ensure_dir(directory)
    payload = json.dumps(data, sort_keys=True, separators=(',', ':')).encode('utf-8') + b'\n'
    tmp = '{0}.tmp.{1}'.format(path, os.getpid())
    try:
        os.unlink(tmp)  # a leftover of a crashed writer with the same pid
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def update_json(path, changes, default=None):
    """Read ``path``, apply the dict ``changes`` on top, write it back; return the new dict.

    For single-writer files only (the daemon's own state). Raise OSError.
    """
    data = dict(read_json(path, default or {}))
    data.update(changes)
    write_json(path, data)
    return data


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
