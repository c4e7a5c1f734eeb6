"""Opening a file in the outbox safely: never through a symlink, never blocking on a FIFO.

Anything can appear in the spool (an operator's mistake, a restored backup,
a hostile local user with access to it): a symlink named like an event, a
FIFO, a directory, a device. :func:`open_regular` is how the daemon and the
operator's tools open event and reason files, so such a file is refused
with a reason (and quarantined by the caller) instead of being followed,
blocking the daemon, or read as something it is not.
"""

import errno
import os
import stat


def open_regular(path):
    """Open ``path`` read-only without following a symlink or blocking on a FIFO; return the descriptor.

    Raise ValueError (naming what it is) when ``path`` is not a regular
    file, OSError when it cannot be opened. ``O_NONBLOCK`` makes opening a
    FIFO return at once, and the fstat check refuses it before any read, so a
    FIFO named like an event never blocks the daemon.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError('a symbolic link, not a regular file (never followed)')
        raise
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError('a {0}, not a regular file'.format(file_kind(mode)))
    return fd


def file_kind(mode):
    """Given an st_mode, return what it is in words ('directory', 'FIFO', ...)."""
    for test, name in ((stat.S_ISDIR, 'directory'), (stat.S_ISFIFO, 'FIFO'), (stat.S_ISLNK, 'symbolic link'),
                       (stat.S_ISSOCK, 'socket'), (stat.S_ISCHR, 'character device'),
                       (stat.S_ISBLK, 'block device'), (stat.S_ISREG, 'regular file')):
        if test(mode):
            return name
    return 'special file'
