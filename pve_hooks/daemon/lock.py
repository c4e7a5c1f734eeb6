"""One reconciler per state directory: an flock on ``<paths.state_dir>/reconcile.lock``.

``reconcile --once`` takes the same lock, so it cannot race a running
daemon for the same events.
"""

import fcntl
import os

from pve_hooks import UNIT, statedir

class AlreadyRunning(Exception):
    """Another reconciler holds the lock on this state directory; the message names its pid."""

def acquire(state_dir):
    """Take ``<state_dir>/reconcile.lock`` (flock, non-blocking); return its file descriptor.

    The holder's pid is written into the file for the next one's message.
    Raise AlreadyRunning naming the holder's pid, or OSError when the state
    directory cannot be created.
    """
    statedir.ensure_dir(state_dir)
    path = os.path.join(state_dir, statedir.LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode('ascii', 'replace').strip() or 'unknown'
        os.close(fd)
        raise AlreadyRunning('another pve-hooks reconciler (pid {0}) is running on {1}; stop it first '
                             '(systemctl stop {2}) or wait for it'.format(holder, state_dir, UNIT))
    os.ftruncate(fd, 0)
    os.pwrite(fd, '{0}\n'.format(os.getpid()).encode('ascii'), 0)
    return fd
