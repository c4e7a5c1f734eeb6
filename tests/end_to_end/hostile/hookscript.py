"""Hostile-input rows: the hookscript and its configuration (issue #16).

Each row runs the real hookscript (tests/end_to_end/harness.py: this tree's
code, ``python -I -S``), most of them under a parent that reads its stdout
and stderr to EOF as Proxmox does, and checks the one line it writes, its
exit code, how long it took and that the event is in ready/.
"""

import json
import os
import signal
import subprocess
import time

from tests.end_to_end.harness import HOOKSCRIPT, PYTHON, REPO, wait_for
from tests.support.hook import copy_package
from tests.support.hostile import case


def proxmox_run(node, vmid='100', phase='pre-start', extra_env=None, command=None):
    """Run the hookscript as Proxmox does (pipes read to EOF); return (CompletedProcess, seconds)."""
    started = time.monotonic()
    process = subprocess.Popen(command or node.hook_command(vmid, phase), env=node.hook_env(extra=extra_env),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), time.monotonic() - started


def lines(text):
    """Return the non-empty lines of ``text``; fail on a traceback."""
    assert 'Traceback' not in text, text
    return [line for line in text.splitlines() if line.strip()]


def one_line(text, *needles):
    """Fail unless ``text`` is exactly one line holding every needle; return it."""
    found = lines(text)
    assert len(found) == 1, found
    for needle in needles:
        assert needle in found[0], '{0!r} not in {1!r}'.format(needle, found[0])
    return found[0]


def recorded(node, before, vmid=100, phase='pre-start'):
    """Fail unless exactly one new event (``vmid``, ``phase``) is in ready/ since ``before`` (names)."""
    new = [name for name in node.outbox_files('ready') if name not in before]
    assert len(new) == 1, 'expected one new event in ready/, found {0}'.format(new)
    with open(os.path.join(node.outbox_dir('ready'), new[0])) as stream:
        event = json.load(stream)
    assert (event['vmid'], event['phase']) == (vmid, phase), event
    return event


def chained(node, name, body):
    path = os.path.join(node.chain_dir, name)
    with open(path, 'w') as stream:
        stream.write('#!/bin/sh\n' + body + '\n')
    os.chmod(path, 0o755)
    return path


def processes_with(marker):
    """Return the pids of processes whose command line holds ``marker`` (a unique argument)."""
    pids = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/{0}/cmdline'.format(entry), 'rb') as stream:
                    if marker.encode() in stream.read().split(b'\0'):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _marker(name):
    """Return a sleep time unique to this test run and chained hook ``name``, to find its processes by."""
    return '30.{0}{1}'.format(len(name), os.getpid())


def _chain_with_child(fixtures, name, body):
    """Run a node whose one chained hook ``name`` runs ``body`` (``{0}``: a unique sleep time, the marker).

    Chain timeout 2 s, deadline 3 s; fail unless the run exits 0 within the deadline + 1 s. Return
    (node, marker, CompletedProcess).
    """
    node = fixtures('make_node')('pve1', settings={'hook.chain_timeout': 2, 'hook.chain_deadline': 3})
    marker = _marker(name)
    chained(node, name, body.format(marker))
    result, seconds = proxmox_run(node)
    assert seconds < 3 + 1 and result.returncode == 0, (seconds, result)
    return node, marker, result


@case('hook-chain-background-child', 'hookscript',
      'a chained hook leaves `sleep 30 &` behind and exits 0 (chain_timeout 2, chain_deadline 3), the parent reads '
      'stdout/stderr to EOF as Proxmox does',
      'returns at once (within hook.chain_deadline + 1 s), exit 0, the hook\'s output relayed, its leftover killed '
      'with one warning; the event is in ready/')
def _(fixtures):
    node, marker, result = _chain_with_child(fixtures, '10-background', 'echo from-the-hook\nsleep {0} &\nexit 0')
    assert 'from-the-hook' in result.stdout
    one_line(result.stderr, '10-background left processes behind', 'killed')
    recorded(node, [])
    assert processes_with(marker) == []


@case('hook-chain-escaped-child', 'hookscript',
      'a chained hook starts `setsid sleep 30 &` (a child outside its process group, holding its output) and '
      'exits 0',
      'returns within hook.chain_deadline + 1 s, exit 0: the child holds the hook\'s own pipe, not Proxmox\'s; the '
      'event is in ready/')
def _(fixtures):
    try:
        node, _, result = _chain_with_child(fixtures, '10-escape', 'setsid sleep {0} &\nexit 0')
        assert lines(result.stderr) == [] or all('left processes behind' in line for line in lines(result.stderr))
        recorded(node, [])
    finally:
        for pid in processes_with(_marker('10-escape')):  # the escaped sleep this row started
            os.kill(pid, signal.SIGKILL)


@case('hook-chain-deadline', 'hookscript',
      'three chained hooks of `sleep 5` each (chain_timeout 2, chain_deadline 3)',
      'returns within hook.chain_deadline + 1 s: the first killed after 2 s, the second after the 1 s left, the '
      'third not run, one line each naming the option; the event is in ready/')
def _(fixtures):
    node = fixtures('make_node')('pve1', settings={'hook.chain_timeout': 2, 'hook.chain_deadline': 3})
    for name in ('10-a', '20-b', '30-c'):
        chained(node, name, 'sleep 5')
    result, seconds = proxmox_run(node, phase='post-start')
    assert seconds < 3 + 1 and result.returncode == 0, (seconds, result)
    found = lines(result.stderr)
    assert len(found) == 3, found
    assert '10-a was killed after 2 s (hook.chain_timeout)' in found[0]
    assert '20-b was killed after 1 s (what was left of hook.chain_deadline)' in found[1]
    assert '30-c not run' in found[2] and 'hook.chain_deadline' in found[2]
    recorded(node, [], phase='post-start')


@case('hook-lock-held-by-stopped-process', 'hookscript',
      'a process holding the outbox lock (flock) is stopped with SIGSTOP',
      'returns within 3 s (hook.lock_timeout 2 s), exit 0, one warning naming the lock; the event is in ready/ '
      '(counters recounted by the daemon\'s recovery)')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    node.fire([(101, 'pre-start')])  # creates the outbox
    before = node.outbox_files('ready')
    holder = subprocess.Popen([PYTHON, '-c', 'import fcntl, os, sys, time\n'
                               'fd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n'
                               'print("locked", flush=True)\ntime.sleep(600)\n',
                               os.path.join(node.spool_dir, 'outbox', 'lock')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        holder.send_signal(signal.SIGSTOP)
        result, seconds = proxmox_run(node)
        assert seconds < 3 and result.returncode == 0, (seconds, result)
        one_line(result.stderr, 'outbox lock', 'hook.lock_timeout', 'still recorded')
        recorded(node, before)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@case('hook-state-symlink', 'hookscript',
      'outbox/state is a symbolic link to a file elsewhere',
      'the link is not followed (the target is untouched), one line says to remove it, exit 0; the event is in '
      'ready/')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    node.fire([(101, 'pre-start')])
    before = node.outbox_files('ready')
    target = os.path.join(node.root, 'elsewhere')
    with open(target, 'w') as stream:
        stream.write('precious\n')
    state = os.path.join(node.spool_dir, 'outbox', 'state')
    os.unlink(state)
    os.symlink(target, state)
    result, _ = proxmox_run(node)
    assert result.returncode == 0
    one_line(result.stderr, state, 'symbolic link', 'remove it', 'still recorded')
    recorded(node, before)
    with open(target) as stream:
        assert stream.read() == 'precious\n'


@case('hook-lock-fifo', 'hookscript',
      'outbox/lock is a FIFO',
      'not opened for reading (no hang), one line says it is not a regular file, exit 0; the event is in ready/')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    node.fire([(101, 'pre-start')])
    before = node.outbox_files('ready')
    lock = os.path.join(node.spool_dir, 'outbox', 'lock')
    os.unlink(lock)
    os.mkfifo(lock)
    result, seconds = proxmox_run(node)
    assert result.returncode == 0 and seconds < 5, (seconds, result)
    one_line(result.stderr, lock, 'not a regular file', 'still recorded')
    recorded(node, before)


def _buggy_package(tmp_path):
    """Return a directory holding a copy of this tree's pve_hooks whose event ids raise (a bug in main)."""
    directory = str(tmp_path / 'buggy')
    os.makedirs(directory)
    copy_package(directory)
    with open(os.path.join(directory, 'pve_hooks', 'hook', 'event.py'), 'a') as stream:
        stream.write('\n\ndef new_event_id(random_bytes):\n    raise RuntimeError("injected bug")\n')
    return directory


@case('hook-unexpected-error-abort', 'hookscript',
      'the hookscript hits an unexpected exception (an injected bug) with hook.on_error: abort',
      'pre-start exits 1 with one line (the start is aborted: no start goes unrecorded), post-start exits 0; '
      'never a traceback')
def _(fixtures):
    node = fixtures('make_node')('pve1', settings={'hook.on_error': 'abort'})
    package = _buggy_package(fixtures('tmp_path'))
    boot = ('import sys; sys.path.insert(0, {0!r}); sys.argv[0] = {1!r}; '
            "exec(compile(open({1!r}).read(), {1!r}, 'exec'))").format(package, HOOKSCRIPT)
    for phase, code in (('pre-start', 1), ('post-start', 0)):
        result, _ = proxmox_run(node, command=[PYTHON, '-I', '-S', '-c', boot, '100', phase])
        assert result.returncode == code, (phase, result)
        one_line(result.stderr, 'unexpected RuntimeError (injected bug)')
        assert ('the start is aborted (hook.on_error: abort)' in result.stderr) == (code == 1)
    assert node.outbox_files('ready') == []


def _config_with(node, text):
    """Write the node's configuration followed by ``text`` (a construct the hookscript's reader refuses)."""
    node.write_config()
    with open(node.config_file, 'a') as stream:
        stream.write(text)


def _refused_everywhere(node, needle):
    """config check and the daemon's start both fail with one line naming the file; return the check's line."""
    check = node.cli('config', 'check', timeout=30)
    assert check.returncode == 1, check
    problem = [line for line in lines(check.stderr) if node.config_file in line]
    assert len(problem) == 1 and needle in problem[0], check.stderr
    start = node.cli('reconcile', timeout=30)
    assert start.returncode == 1, start
    one_line(start.stderr, 'refusing to start', needle)
    return problem[0]


@case('hook-config-block-list', 'hookscript',
      'config.yaml holds a block list (`command:` then `- /usr/bin/notify`), which PyYAML reads and the '
      'hookscript\'s reader does not',
      'the hookscript keeps the file\'s simple lines (the event lands in the configured paths.spool_dir) with one '
      'line naming file:line; `config check` and the daemon\'s start fail naming the line')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    _config_with(node, 'alerts:\n  command:\n    - /usr/bin/notify\n')
    line = len(open(node.config_file).read().splitlines())
    result, _ = proxmox_run(node)
    assert result.returncode == 0
    one_line(result.stderr, '{0}:{1}: block lists'.format(node.config_file, line), 'paths.spool_dir',
             'spooling to ' + node.spool_dir)
    recorded(node, [])
    _refused_everywhere(node, '{0}:{1}: block lists'.format(node.config_file, line))


@case('hook-config-reload-unreadable', 'hookscript',
      'the running daemon gets SIGHUP after config.yaml gained a block list',
      'the reload is refused and the running configuration kept: one CRITICAL line and the alert '
      '`config_unreadable_by_hookscript`; the daemon keeps running')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    node.start_daemon()
    wait_for(lambda: 'reconciler started' in node.log_text(), 30, 'the daemon to start', seen=node.log_tail)
    _config_with(node, 'alerts:\n  command:\n    - /usr/bin/notify\n')
    node.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: 'ALERT config_unreadable_by_hookscript' in node.log_text(), 30, 'the alert',
             seen=node.log_tail)
    rejected = [line for line in node.log_text().splitlines() if 'configuration reload rejected' in line]
    assert len(rejected) == 1 and 'block lists' in rejected[0] and 'Traceback' not in node.log_text()
    assert node.daemon_alive()
    assert node.stop_daemon() == 0


@case('hook-config-deep-nesting', 'hookscript',
      'config.yaml nests 1200 levels deep (before its `paths:` section)',
      'the hookscript records the event in the configured spool with one line ("nested deeper than 20 levels"); '
      '`config check` fails with one line, no traceback')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    deep = ''.join(' ' * depth + 'k{0}:\n'.format(depth) for depth in range(1200))
    with open(node.config_file) as stream:
        text = stream.read()
    with open(node.config_file, 'w') as stream:
        stream.write(deep + text)
    result, _ = proxmox_run(node)
    assert result.returncode == 0
    one_line(result.stderr, 'nested deeper than 20 levels', 'spooling to ' + node.spool_dir)
    recorded(node, [])
    check = node.cli('config', 'check', timeout=30)
    assert check.returncode == 1 and 'nested deeper than 20 levels' in check.stderr
    assert 'Traceback' not in check.stderr and len(lines(check.stderr)) == 2  # the headline and one problem


@case('hook-config-alias-bomb', 'hookscript',
      'config.yaml ends in a YAML alias bomb (nine levels, each ten aliases of the one before: ~600 bytes)',
      '`config check` refuses it at once (under 5 s) naming the file, line and "anchors and aliases"; the hookscript '
      'records the event in the configured spool with one line')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    bomb = ['bomb0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        bomb.append('bomb{0}: &a{0} [{1}]'.format(level, ', '.join(['*a{0}'.format(level - 1)] * 10)))
    _config_with(node, '\n'.join(bomb) + '\n')
    started = time.monotonic()
    check = node.cli('config', 'check', timeout=60)
    assert time.monotonic() - started < 5 and check.returncode == 1, check
    assert 'anchors and aliases' in check.stderr and node.config_file in check.stderr
    assert 'Traceback' not in check.stderr
    result, _ = proxmox_run(node)
    assert result.returncode == 0
    one_line(result.stderr, 'anchors and aliases', 'spooling to ' + node.spool_dir)
    recorded(node, [])


@case('hook-config-fifo', 'hookscript',
      'PVE_HOOKS_CONFIG names a FIFO nobody writes to (spool from PVE_HOOKS_PATHS__SPOOL_DIR)',
      'no hang: one line says it is not a regular file, exit 0; the event is in ready/; `config check` fails with '
      'one line')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    fifo = os.path.join(node.root, 'config.fifo')
    os.mkfifo(fifo)
    result, seconds = proxmox_run(node, extra_env={'PVE_HOOKS_CONFIG': fifo,
                                                   'PVE_HOOKS_PATHS__SPOOL_DIR': node.spool_dir,
                                                   'PVE_HOOKS_HOOK__JOURNAL_SOCKET': node.journal.path})
    assert result.returncode == 0 and seconds < 5, (seconds, result)
    one_line(result.stderr, fifo, 'not a regular file')
    recorded(node, [])
    check = subprocess.run([PYTHON, '-m', 'pve_hooks', '--config', fifo, 'config', 'check'],
                           env=dict(node.env(), PYTHONPATH=REPO), capture_output=True, text=True, timeout=30)
    assert check.returncode == 1 and 'not a regular file' in check.stderr and 'Traceback' not in check.stderr


@case('hook-config-chain-deadline-below-timeout', 'hookscript',
      'hook.chain_deadline (5) is below hook.chain_timeout (10)',
      '`config check` fails with one line naming both options; the hookscript still runs, each chained hook bounded '
      'by the smaller, and records the event')
def _(fixtures):
    node = fixtures('make_node')('pve1', settings={'hook.chain_timeout': 10, 'hook.chain_deadline': 5})
    check = node.cli('config', 'check', timeout=30)
    assert check.returncode == 1
    assert 'hook.chain_timeout: 10.0 is above hook.chain_deadline (5.0)' in check.stderr
    result, _ = proxmox_run(node)
    assert result.returncode == 0 and lines(result.stderr) == []
    recorded(node, [])


@case('hook-config-show-webhook', 'hookscript',
      'alerts.webhook is https://hooks.example.com/services/T0/B0/SECRET',
      '`config show` (text and --json) prints https://hooks.example.com/*** and never the path')
def _(fixtures):
    node = fixtures('make_node')('pve1', settings={'alerts.webhook': 'https://hooks.example.com/services/T0/B0/SECRET'})
    for args in (('config', 'show'), ('config', 'show', '--json')):
        shown = node.cli(*args, timeout=30)
        assert shown.returncode == 0, shown
        assert 'https://hooks.example.com/***' in shown.stdout and 'SECRET' not in shown.stdout + shown.stderr


@case('hook-argv-non-ascii-digits', 'hookscript',
      'argv is `١٠٠ pre-start` (Arabic-Indic digits, which str.isdigit accepts)',
      'one line "invalid arguments ... vmid", exit 0, nothing recorded and nothing else touched')
def _(fixtures):
    node = fixtures('make_node')('pve1')
    result, _ = proxmox_run(node, vmid='\u0661\u0660\u0660')
    assert result.returncode == 0
    one_line(result.stderr, 'invalid arguments', 'vmid', 'nothing was recorded')
    assert node.outbox_files('ready') == []
