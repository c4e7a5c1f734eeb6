"""Wake up when a file lands in a directory: Linux inotify through ctypes, no dependency.

The daemon waits with ``select`` on the inotify descriptor (plus its signal
wake-up pipe) and a timeout, so it sleeps until an event is spooled, a
signal arrives or the next scheduled job is due — never a busy loop. When
inotify is unavailable (not Linux, limits reached, the directory is
missing) :class:`DirWatch` reports ``available`` False and the daemon falls
back to polling every ``delivery.poll_interval`` seconds.
"""

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_IGNORED = 0x00008000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000

WATCH_MASK = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
_HEADER = struct.Struct('iIII')  # wd, mask, cookie, len


def _load_libc():
    name = ctypes.util.find_library('c') or 'libc.so.6'
    libc = ctypes.CDLL(name, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc


class DirWatch:
    """An inotify watch on one directory for files created or moved into it.

    ``path`` is the directory. ``libc_loader`` returns a ctypes libc (tests
    pass one that fails, to cover the polling fallback). Never raises: when
    inotify cannot be set up, ``available`` is False and ``reason`` says why.
    """

    def __init__(self, path, libc_loader=_load_libc):
        self.path = path
        self.fd = None
        self.reason = None
        self._wd = None
        try:
            self._libc = libc_loader()
        except (OSError, AttributeError) as error:
            self._libc = None
            self.reason = 'inotify unavailable ({0})'.format(error)
            return
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            self.reason = 'inotify_init1 failed ({0})'.format(os.strerror(ctypes.get_errno()))
            return
        self.fd = fd
        self._add_watch()

    @property
    def available(self):
        """True while the directory is watched (select on :meth:`fileno` works)."""
        return self.fd is not None and self._wd is not None

    def fileno(self):
        """The inotify descriptor (for select)."""
        return self.fd

    def _add_watch(self):
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(self.path), WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            self._wd = None
            self.reason = 'cannot watch {0} ({1})'.format(self.path, os.strerror(code))
            return False
        self._wd = wd
        self.reason = None
        return True

    def rewatch(self):
        """Try to watch the directory again (after it was removed and recreated); return available."""
        if self.fd is not None and self._wd is None:
            self._add_watch()
        return self.available

    def drain(self):
        """Read and discard pending notifications; return how many there were.

        Notices the watched directory going away (``available`` becomes False
        until :meth:`rewatch` succeeds).
        """
        if self.fd is None:
            return 0
        count = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                break
            if not data:
                break
            offset = 0
            while offset + _HEADER.size <= len(data):
                _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size + length
                count += 1
                if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                    self._wd = None
                    self.reason = '{0} was removed or moved'.format(self.path)
        return count

    def close(self):
        """Release the inotify descriptor."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self._wd = None


def wait(descriptors, timeout):
    """Block until one of ``descriptors`` (objects with fileno() or ints) is readable.

    ``timeout`` is in seconds (None blocks; negative counts as 0). Return the
    list of readable descriptors (empty on timeout). An interrupting signal
    returns early with an empty list.
    """
    fds = [d for d in descriptors if d is not None and (isinstance(d, int) or d.fileno() is not None)]
    if timeout is not None:
        timeout = max(0.0, timeout)
    try:
        readable, _w, _x = select.select(fds, [], [], timeout)
    except InterruptedError:
        return []
    return readable
