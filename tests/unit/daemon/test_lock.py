"""Unit tests for pve_hooks.daemon.lock: one reconciler per state directory."""

import os
import subprocess
import sys

import pytest

from pve_hooks.daemon import lock


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_the_unit(tmp_path):
    state_dir = str(tmp_path / 'state')
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from pve_hooks.daemon import lock; '
                               'lock.acquire(sys.argv[1]); print("held", flush=True); time.sleep(60)', state_dir],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'held\n'
        with pytest.raises(lock.AlreadyRunning) as refused:
            lock.acquire(state_dir)
        assert 'pid {0}'.format(holder.pid) in str(refused.value)
        assert 'systemctl stop pve-hooks-reconciler' in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    os.close(lock.acquire(state_dir))   # released with its holder


def test_the_lock_file_is_private_and_not_followed_through_a_symlink(tmp_path):
    state_dir = tmp_path / 'state'
    state_dir.mkdir()
    (state_dir / 'reconcile.lock').symlink_to(tmp_path / 'elsewhere')
    with pytest.raises(OSError):
        lock.acquire(str(state_dir))
    assert not (tmp_path / 'elsewhere').exists()
