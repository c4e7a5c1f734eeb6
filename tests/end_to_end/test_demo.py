"""``make demo`` cannot rot: run demo/run.py (quietly, in a temporary scratch directory)."""

import os
import subprocess
import sys

from tests.end_to_end.harness import REPO


def _processes_mentioning(text):
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/{0}/cmdline'.format(pid), 'rb') as stream:
                cmdline = stream.read().replace(b'\0', b' ').decode('utf-8', 'replace')
        except OSError:
            continue
        if text in cmdline:
            found.append((int(pid), cmdline))
    return found


def test_demo_runs_and_leaves_nothing_running(tmp_path):
    scratch = str(tmp_path / 'demo-scratch')
    result = subprocess.run([sys.executable, os.path.join(REPO, 'demo', 'run.py'), '--scratch', scratch],
                            capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stdout + result.stderr
    for step in ('== 1.', '== 2.', '== 3.', '== 4.', '== 5.', '== 6.', '== What AccountDB holds'):
        assert step in result.stdout
    assert 'delivered exactly once' in result.stdout
    assert not _processes_mentioning(scratch), 'the demo left processes running'
    assert os.path.isdir(os.path.join(scratch, 'accountdb')), 'the demo did not use the scratch directory given'
