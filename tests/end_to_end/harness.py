"""Scenario harness for the end-to-end suite: simulated Proxmox nodes, real processes.

A :class:`Node` is one simulated Proxmox node on this machine: its own spool and
state directories, configuration file and node name. It runs the REAL
hookscript (``python -I -S hookscripts/accountdb-hook <vmid> <phase>``, the
flags of its ``#!/usr/bin/python3 -IS`` line, with this interpreter; with
``PVE_HOOKS_CONFIG`` and, for a migration target, ``PVE_MIGRATED_FROM``) and the
REAL daemon (``pve-hooks reconcile``) as subprocesses, and stops or SIGKILLs it.

The checks read what the reference AccountDB stored straight from its SQLite
file (opened read-only; the server uses WAL, so reading while it runs is safe):

- :func:`assert_delivered_exactly_once` — every fired event_id is stored once,
  and nothing else was stored;
- :func:`assert_per_guest_order` — each guest's events were received in the
  order they were spooled (their ``seq``);
- :func:`outbox_files` — what is left in an outbox directory.

Waits are bounded by :func:`wait_for`, which fails with a message saying what
was awaited and what was seen last. No timing is asserted anywhere.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOKSCRIPT = os.path.join(REPO, 'hookscripts', 'accountdb-hook')
SUPPORT_BIN = os.path.join(REPO, 'tests', 'support', 'bin')
PVESH_SHIM = os.path.join(SUPPORT_BIN, 'pvesh')
PYTHON = sys.executable
# Run the hookscript file from this tree (see Node.hook_command); argv[0] is the file, as when Proxmox runs it.
HOOK_BOOT = ('import sys; sys.path.insert(0, {0!r}); sys.argv[0] = {1!r}; '
             "exec(compile(open({1!r}).read(), {1!r}, 'exec'))").format(REPO, HOOKSCRIPT)

# Options every scenario node uses: short intervals so scenarios finish in
# seconds, logs on stderr (captured in the node's log file), no real paths.
FAST_SETTINGS = {
    'retry.base_delay': 0.05,
    'retry.max_delay': 0.5,
    'retry.max_retry_after': 2,
    'breaker.failure_threshold': 3,
    'breaker.reset_timeout': 0.5,
    'accountdb.timeout.connect': 1,
    'accountdb.timeout.read': 3,
    'delivery.poll_interval': 0.05,
    'delivery.batch_size': 50,
    'reconcile.interval': 1,
    'reconcile.heartbeat_interval': 1,
    'reconcile.shutdown_timeout': 2,
    'whitelist.refresh_interval': 1,
    'health.pvesh_interval': 1,
    'health.pvesh_timeout': 3,
    'proxmox.pvesh_timeout': 3,
    'hook.chain_timeout': 2,
    'logging.target': 'stderr',
    'logging.level': 'info',
}


def soak():
    """Return True when the full-size (``make soak``) run was asked for (PVE_HOOKS_SOAK=1)."""
    return os.environ.get('PVE_HOOKS_SOAK') == '1'


def size(default, full):
    """Return ``full`` in a soak run, else ``default`` (scenario sizes)."""
    return full if soak() else default


def wait_for(predicate, timeout, what, interval=0.05, seen=None):
    """Call ``predicate()`` until it returns a true value; return that value.

    Fail the test (AssertionError) after ``timeout`` seconds with a message
    naming ``what`` was awaited and, when ``seen`` is given, ``seen()`` — the
    last observed state — so a failure explains itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            last = ''
            if seen is not None:
                try:
                    last = '; last seen: {0}'.format(seen())
                except Exception as error:  # a failing probe must not hide the real failure
                    last = '; last seen: <{0}>'.format(error)
            raise AssertionError('timed out after {0:g} s waiting for {1}{2}'.format(timeout, what, last))
        time.sleep(interval)


def _yaml_scalar(value):
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return '[' + ', '.join(_yaml_scalar(item) for item in value) + ']'
    return json.dumps(str(value))  # a double-quoted YAML string


def write_config(path, values):
    """Write ``values`` ({dotted key: value}) to ``path`` as nested block YAML; return ``path``."""
    tree = {}
    for key, value in sorted(values.items()):
        parts = key.split('.')
        branch = tree
        for part in parts[:-1]:
            branch = branch.setdefault(part, {})
        branch[parts[-1]] = value
    lines = []

    def emit(mapping, indent):
        for key, value in mapping.items():
            if isinstance(value, dict):
                lines.append('{0}{1}:'.format('  ' * indent, key))
                emit(value, indent + 1)
            else:
                lines.append('{0}{1}: {2}'.format('  ' * indent, key, _yaml_scalar(value)))

    emit(tree, 0)
    with open(path, 'w') as stream:
        stream.write('\n'.join(lines) + '\n')
    return path


def write_token(path, token):
    """Write ``token`` to ``path`` mode 0600 (owner: the current user, root in CI); return ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as stream:
        stream.write(token + '\n')
    os.chmod(path, 0o600)
    return path


class CountingPvesh:
    """A pvesh wrapper that logs each call's arguments to a file, then runs the real (shim) pvesh.

    ``path`` is the program to configure as ``proxmox.pvesh``; :meth:`calls`
    returns the argument lines logged so far.
    """

    def __init__(self, directory, real):
        self.path = os.path.join(str(directory), 'pvesh-counting')
        self.log = os.path.join(str(directory), 'pvesh-calls.log')
        with open(self.path, 'w') as stream:
            stream.write('#!/bin/sh\necho "$*" >> {0}\nexec {1} "$@"\n'.format(
                _sh_quote(self.log), _sh_quote(real)))
        os.chmod(self.path, 0o755)

    def calls(self):
        """Return the logged calls (one 'get /path --output-format json' string each)."""
        try:
            with open(self.log) as stream:
                return stream.read().splitlines()
        except FileNotFoundError:
            return []


def _sh_quote(text):
    return "'" + str(text).replace("'", "'\\''") + "'"


class HookJournal:
    """A datagram socket standing in for journald's, bound for one node's hookscripts.

    The hookscript sends one native-protocol record per run to
    ``hook.journal_socket``; the record of a spooled event carries its
    ``EVENT_ID``. A background thread collects them, so :meth:`event_ids`
    returns the ids of every event the hookscript recorded, in the order the
    records arrived — the scenario's ground truth, independent of the daemon.
    The socket lives in a short temporary directory (AF_UNIX paths are
    limited to 108 bytes), made under ``directory`` (default: the system's
    temporary directory).
    """

    def __init__(self, directory=None):
        self.directory = tempfile.mkdtemp(prefix='e2e-j', dir=directory)
        self.path = os.path.join(self.directory, 'journal.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.records = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._collect, name='hook-journal', daemon=True)
        self.thread.start()

    def _collect(self):
        while self.running:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            record = {}
            for line in data.split(b'\n'):
                key, sep, value = line.partition(b'=')
                if sep:
                    record[key.decode('ascii', 'replace')] = value.decode('utf-8', 'replace')
            with self.lock:
                self.records.append(record)

    def snapshot(self):
        """Return a copy of the records received so far."""
        with self.lock:
            return list(self.records)

    def event_ids(self):
        """Return the EVENT_IDs of the 'recorded ...' records (events spooled), in arrival order."""
        return [record['EVENT_ID'] for record in self.snapshot()
                if record.get('EVENT_ID') and record.get('MESSAGE', '').startswith('recorded ')]

    def close(self):
        """Stop collecting and remove the socket."""
        self.running = False
        self.thread.join(2)
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Node:
    """One simulated Proxmox node: directories, configuration, hookscript runner, daemon.

    ``root`` is a directory of its own (e.g. ``tmp_path / 'pve1'``); ``name``
    the node name; ``prefix`` an argv prefix for every process of the node
    (e.g. ``nsenter -t PID -m --`` to run inside a mount namespace) and
    ``view`` the prefix under which this process sees the node's files
    (``/proc/PID/root`` for that namespace, else ''); ``accountdb`` an object with ``.url`` and ``.token_file``
    (the fixture from tests/support/accountdb.py) or None; ``settings``
    extra {dotted key: value} written into the config file; ``env`` extra
    environment for every process (e.g. the pvesh shim's FAKEPVE_SHIM_CONFIG);
    ``journal_dir`` where the hookscripts' journal socket is made.
    """

    def __init__(self, root, name, accountdb=None, settings=None, env=None, pve_root=None, prefix=(), view='',
                 journal_dir=None):
        self.prefix = list(prefix)
        self.view = view
        self.root = str(root)
        self.name = name
        os.makedirs(self.root, exist_ok=True)
        self.spool_dir = os.path.join(self.root, 'spool')
        self.state_dir = os.path.join(self.root, 'state')
        self.chain_dir = os.path.join(self.root, 'hooks.d')
        os.makedirs(self.chain_dir, exist_ok=True)
        self.pve_root = str(pve_root) if pve_root else os.path.join(self.root, 'pve')
        os.makedirs(self.pve_root, exist_ok=True)
        self.config_file = os.path.join(self.root, 'config.yaml')
        self.log_file = os.path.join(self.root, 'daemon.log')
        self.metrics_file = os.path.join(self.root, 'pve-hooks.prom')
        self.extra_env = dict(env or {})
        self.values = dict(FAST_SETTINGS)
        self.values.update({
            'node': name,
            'paths.spool_dir': self.spool_dir,
            'paths.state_dir': self.state_dir,
            'hook.chain_dir': self.chain_dir,
            'proxmox.pvesh': PVESH_SHIM,
            'proxmox.pve_root': self.pve_root,
            'metrics.textfile': self.metrics_file,
        })
        self.token_file = os.path.join(self.root, 'token')
        if accountdb is not None:
            self.values['accountdb.url'] = accountdb.url
            self.values['accountdb.token_file'] = self.token_file
            write_token(self.token_file, accountdb.token)
        self.journal = HookJournal(journal_dir)
        self.values['hook.journal_socket'] = self.journal.path
        self.values.update(settings or {})
        self.daemon = None
        self._daemon_log = None
        self.write_config()

    # -- configuration -------------------------------------------------
    def write_config(self, changes=None):
        """Rewrite the config file with ``changes`` ({dotted key: value}) applied."""
        self.values.update(changes or {})
        write_config(self.config_file, self.values)

    def set_token(self, token):
        """Replace this node's token file (an operator's rotation: write a new file, rename over)."""
        tmp = self.token_file + '.new'
        write_token(tmp, token)
        os.replace(tmp, self.token_file)

    def env(self, extra=None):
        """Return the environment for a process of this node (no PVE_HOOKS_* leaking in)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith('PVE_HOOKS_')}
        env['PATH'] = SUPPORT_BIN + os.pathsep + os.path.dirname(PYTHON) + os.pathsep + \
            env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')
        env['PVE_HOOKS_CONFIG'] = self.config_file
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    # -- hookscript ----------------------------------------------------
    def hook_command(self, vmid, phase):
        """Return the argv Proxmox would run: the real hookscript with its shebang's flags (-IS).

        Run as ``python -I -S -c HOOK_BOOT <vmid> <phase>``: the prologue only puts this tree first on
        sys.path, so the hookscript loads THIS checkout's pve_hooks (with -I the interpreter's site would
        find whichever copy is installed, e.g. another checkout's editable install), then runs the file.
        """
        return self.prefix + [PYTHON, '-I', '-S', '-c', HOOK_BOOT, str(vmid), str(phase)]

    def hook_env(self, migrated_from=None, extra=None):
        """Return the hookscript's environment as Proxmox sets it (LC_ALL=C, PVE's PATH)."""
        env = {'PATH': '/sbin:/bin:/usr/sbin:/usr/bin', 'LC_ALL': 'C', 'PVE_HOOKS_CONFIG': self.config_file}
        if migrated_from:
            env['PVE_MIGRATED_FROM'] = migrated_from
        env.update(extra or {})
        return env

    def hook(self, vmid, phase, migrated_from=None, extra_env=None, timeout=30):
        """Run the hookscript once like Proxmox does (stdin closed); return the CompletedProcess."""
        return subprocess.run(self.hook_command(vmid, phase), env=self.hook_env(migrated_from, extra_env),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def hook_popen(self, vmid, phase, migrated_from=None, extra_env=None):
        """Start the hookscript without waiting; return the Popen (stdout/stderr piped)."""
        return subprocess.Popen(self.hook_command(vmid, phase), env=self.hook_env(migrated_from, extra_env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def fired_ids(self):
        """Return the event_ids the hookscript reported as recorded so far (see :class:`HookJournal`)."""
        return self.journal.event_ids()

    def fire(self, events, check=True):
        """Run the hookscript for each (vmid, phase[, migrated_from]) in order; return the results.

        With ``check``, fail if any run exited non-zero or wrote a traceback.
        """
        results = []
        for item in events:
            vmid, phase = item[0], item[1]
            result = self.hook(vmid, phase, migrated_from=item[2] if len(item) > 2 else None)
            if check:
                assert result.returncode == 0, 'hookscript {0} {1} exited {2}: {3}'.format(
                    vmid, phase, result.returncode, result.stderr.strip())
                assert 'Traceback' not in result.stderr, result.stderr
            results.append(result)
        return results

    # -- CLI -----------------------------------------------------------
    def cli(self, *args, timeout=60, env=None, input=None):
        """Run ``pve-hooks --config <node config> ARGS``; return the CompletedProcess (text)."""
        command = self.prefix + [PYTHON, '-m', 'pve_hooks', '--config', self.config_file] + [
            str(arg) for arg in args]
        return subprocess.run(command, env=self.env(env), capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def status(self):
        """Return ``pve-hooks status --json`` as a dict (fail with its stderr if it does not parse)."""
        result = self.cli('status', '--json')
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise AssertionError('pve-hooks status --json exited {0}, stdout {1!r}, stderr {2!r}'.format(
                result.returncode, result.stdout[-500:], result.stderr[-500:]))

    # -- daemon --------------------------------------------------------
    def start_daemon(self, *args):
        """Start ``pve-hooks reconcile`` (extra ``args``, e.g. --set ...) in the background; return the Popen.

        Its stdout and stderr are appended to ``self.log_file``.
        """
        assert self.daemon is None or self.daemon.poll() is not None, 'daemon already running'
        self._daemon_log = open(self.log_file, 'ab')
        command = self.prefix + [PYTHON, '-m', 'pve_hooks', '--config', self.config_file] + list(args) + [
            'reconcile']
        self.daemon = subprocess.Popen(command, env=self.env(), stdin=subprocess.DEVNULL,
                                       stdout=self._daemon_log, stderr=subprocess.STDOUT)
        return self.daemon

    def daemon_alive(self):
        """Return True while the daemon process runs."""
        return self.daemon is not None and self.daemon.poll() is None

    def stop_daemon(self, timeout=15):
        """SIGTERM the daemon and wait; return its exit code (None if it was not started).

        Fail if it does not exit within ``timeout`` seconds (it is then killed).
        """
        if self.daemon is None:
            return None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_daemon()
                raise AssertionError('daemon did not exit within {0} s of SIGTERM; log:\n{1}'.format(
                    timeout, self.log_tail()))
        return self._reap()

    def kill_daemon(self):
        """SIGKILL the daemon (a crash); return its exit code."""
        if self.daemon is None:
            return None
        if self.daemon.poll() is None:
            self.daemon.kill()
        self.daemon.wait(30)
        return self._reap()

    def _reap(self):
        code = self.daemon.returncode
        if self._daemon_log is not None:
            self._daemon_log.close()
            self._daemon_log = None
        return code

    def log_tail(self, lines=40):
        """Return the last ``lines`` lines of the daemon's log."""
        try:
            with open(self.log_file, errors='replace') as stream:
                return ''.join(stream.readlines()[-lines:])
        except OSError:
            return '<no daemon log>'

    def log_text(self):
        """Return the daemon's whole log ('' when there is none)."""
        try:
            with open(self.log_file, errors='replace') as stream:
                return stream.read()
        except OSError:
            return ''

    # -- outbox --------------------------------------------------------
    def outbox_dir(self, sub):
        """Return the path of outbox subdirectory ``sub`` (ready, claimed, dead, quarantine, tmp)."""
        return self.view + os.path.join(self.spool_dir, 'outbox', sub)

    def outbox_files(self, sub, suffix='.json'):
        """Return the sorted file names in outbox subdirectory ``sub`` ending in ``suffix``."""
        try:
            return sorted(name for name in os.listdir(self.outbox_dir(sub)) if name.endswith(suffix))
        except FileNotFoundError:
            return []

    def quarantined(self):
        """Return the names of the files in quarantine/ (without their ``.reason`` companions).

        Like ``Outbox.stats``, a ``.<name>.tmp`` reason still being written is not a quarantined file.
        """
        try:
            return sorted(name for name in os.listdir(self.outbox_dir('quarantine'))
                          if not name.endswith('.reason') and not name.startswith('.'))
        except FileNotFoundError:
            return []

    def pending(self):
        """Return the number of events still to deliver (in ready/ or claimed/).

        A retrying daemon moves files between claimed/ and ready/ while we list; listing
        claimed/, then ready/, then claimed/ again and counting distinct names catches a file
        that moved in either direction in between.
        """
        names = set(self.outbox_files('claimed'))
        names.update(self.outbox_files('ready'))
        names.update(self.outbox_files('claimed'))
        return len(names)

    def spooled_events(self):
        """Return the events currently in ready/ (parsed JSON), in outbox order."""
        events = []
        for name in self.outbox_files('ready'):
            with open(os.path.join(self.outbox_dir('ready'), name)) as stream:
                events.append(json.load(stream))
        return events

    def close(self):
        """Kill the daemon if it still runs (test teardown)."""
        if self.daemon_alive():
            self.kill_daemon()
        elif self._daemon_log is not None:
            self._reap()
        self.journal.close()


def _query(db, sql, args=()):
    """Run a read-only query on the reference AccountDB's SQLite file ``db``; return the rows."""
    connection = sqlite3.connect('file:{0}?mode=ro'.format(db), uri=True, timeout=30)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def stored_events(db):
    """Return the events AccountDB stored, in the order it received them.

    Each is a dict with ``event_id``, ``node``, ``vmid``, ``seq``, ``phase`` and
    ``body`` (the event as sent).
    """
    rows = _query(db, 'SELECT event_id, node, vmid, seq, phase, body FROM events ORDER BY rowid')
    return [{'event_id': r[0], 'node': r[1], 'vmid': r[2], 'seq': r[3], 'phase': r[4], 'body': json.loads(r[5])}
            for r in rows]


def stored_inventories(db):
    """Return {node: {'inventory': <inventory body as stored>, 'puts': n}} from AccountDB's DB."""
    rows = _query(db, 'SELECT node, body, puts FROM inventories')
    return {r[0]: {'inventory': json.loads(r[1]), 'puts': r[2]} for r in rows}


def assert_delivered_exactly_once(db, event_ids):
    """Fail unless AccountDB stored each of ``event_ids`` exactly once, and no other event.

    ``event_ids`` is an iterable of event_id strings. Return the stored events.
    """
    expected = list(event_ids)
    assert len(set(expected)) == len(expected), 'the scenario fired duplicate event_ids: bug in the hookscript'
    events = stored_events(db)
    counts = {}
    for event in events:
        counts[event['event_id']] = counts.get(event['event_id'], 0) + 1
    missing = [event_id for event_id in expected if event_id not in counts]
    doubled = {event_id: n for event_id, n in counts.items() if n > 1}
    unexpected = sorted(set(counts) - set(expected))
    assert not missing, '{0} of {1} events never reached AccountDB, e.g. {2}'.format(
        len(missing), len(expected), missing[:3])
    assert not doubled, 'events stored more than once: {0}'.format(dict(list(doubled.items())[:3]))
    assert not unexpected, '{0} events stored that the scenario did not fire, e.g. {1}'.format(
        len(unexpected), unexpected[:3])
    return events


def assert_per_guest_order(db):
    """Fail unless, for each (node, guest), AccountDB received its events in ``seq`` order.

    Return {(node, vmid): [phase, ...]} in received order.
    """
    by_guest = {}
    for event in stored_events(db):
        by_guest.setdefault((event['node'], event['vmid']), []).append(event)
    for guest, events in by_guest.items():
        seqs = [event['seq'] for event in events]
        assert seqs == sorted(seqs), 'guest {0}: events received out of order, seq {1}'.format(guest, seqs)
    return {guest: [event['phase'] for event in events] for guest, events in by_guest.items()}


def spooled_ids(node):
    """Return the event_ids of the events in ``node``'s ready/ (from file names, then contents)."""
    return [event['event_id'] for event in node.spooled_events()]


PHASES = ('pre-start', 'post-start', 'pre-stop', 'post-stop')


def lifecycle(vmids, cycles, rng=None):
    """Return [(vmid, phase), ...]: ``cycles`` start/stop cycles of every guest, interleaved.

    With ``rng`` (a random.Random) the guests' cycles are shuffled together
    (each guest's own phases stay in order); without it, round-robin.
    """
    queues = {vmid: [phase for _ in range(cycles) for phase in PHASES] for vmid in vmids}
    out = []
    while queues:
        live = sorted(queues)
        vmid = rng.choice(live) if rng else live[len(out) % len(live)]
        out.append((vmid, queues[vmid].pop(0)))
        if not queues[vmid]:
            del queues[vmid]
    return out


def assert_guest_histories(db, fired):
    """Fail unless AccountDB holds, per (node, vmid), exactly the phases fired, in firing order.

    ``fired`` is [(node, vmid, phase), ...] in the order the hookscript ran
    (sequentially per guest). Return the stored events.
    """
    expected = {}
    for node, vmid, phase in fired:
        expected.setdefault((node, vmid), []).append(phase)
    events = stored_events(db)
    actual = {}
    for event in events:
        actual.setdefault((event['node'], event['vmid']), []).append(event['phase'])
    assert len(events) == len(fired), 'AccountDB holds {0} events, {1} were fired'.format(len(events), len(fired))
    for guest, phases in expected.items():
        assert actual.get(guest) == phases, 'guest {0}: AccountDB holds {1}, fired {2}'.format(
            guest, actual.get(guest), phases)
    return events


def wait_drained(node, db, total, timeout=60):
    """Wait until ``node``'s outbox is empty and AccountDB holds ``total`` events; fail with the daemon log."""
    def done():
        return node.pending() == 0 and len(stored_events(db)) >= total

    def seen():
        return 'outbox {0} pending, AccountDB {1}/{2} events; daemon alive {3}; log tail:\n{4}'.format(
            node.pending(), len(stored_events(db)), total, node.daemon_alive(), node.log_tail(15))
    return wait_for(done, timeout, 'the outbox to drain into AccountDB', interval=0.1, seen=seen)


def assert_outbox_clean(node, ready=0, dead=0, quarantine=0):
    """Fail unless ``node``'s outbox holds exactly these counts (claimed/ and tmp/ must be empty)."""
    counts = {sub: len(node.outbox_files(sub)) for sub in ('ready', 'claimed', 'dead')}
    counts['quarantine'] = len(node.quarantined())
    counts['tmp'] = len(node.outbox_files('tmp', suffix=''))
    expected = {'ready': ready, 'claimed': 0, 'dead': dead, 'quarantine': quarantine, 'tmp': 0}
    assert counts == expected, 'outbox of {0}: {1}, expected {2}'.format(node.name, counts, expected)


def assert_all_delivered(node, db, fired, timeout=60, quarantine=0, dead=0):
    """Wait for ``node`` to drain, then run every end-of-scenario check.

    ``fired`` is [(vmid, phase), ...] as fired on ``node`` (sequentially per
    guest). Checks: every event_id the hookscript recorded stored exactly once
    and nothing else, per-guest order, each guest's history, outbox empty,
    daemon still running.
    """
    wait_drained(node, db, len(fired), timeout)
    assert_delivered_exactly_once(db, node.fired_ids())
    assert_per_guest_order(db)
    assert_guest_histories(db, [(node.name, vmid, phase) for vmid, phase in fired])
    assert_outbox_clean(node, quarantine=quarantine, dead=dead)
    assert node.daemon_alive(), 'the daemon died; log:\n' + node.log_tail()
