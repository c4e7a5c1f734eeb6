"""Rows of the hostile-input table: files in the outbox and state directory, the /metrics listener,
the reference AccountDB's connections, and attach racing another administrator.

Every row runs the real daemon (or the real CLI, or the real dev-accountdb
process) against inputs built for real: FIFOs with os.mkfifo, symlinks,
directories, real sockets. Where events flow, the row checks that every
event fired was delivered exactly once and the bad file was quarantined
with a reason.
"""

import json
import os
import socket
import stat
import subprocess
import threading
import time

import pytest

from tests.end_to_end.harness import PYTHON, assert_all_delivered, lifecycle, wait_for
from tests.support.guests import FakeNode as AttachNode
from tests.support.hostile import case

BAD = '00000000000000000001-101-0b6a1e7e-0000-4000-8000-00000000beef.json'   # sorts before every real event


# -- helpers -------------------------------------------------------------------------------------------------------

def _node(fixtures, settings=None, guests=(101, 102)):
    fake_node = fixtures('fake_node')
    for vmid in guests:
        fake_node.create_guest(vmid)
    return fixtures('pve_node')('pve1', settings=settings)


def _reason(node, name):
    with open(os.path.join(node.outbox_dir('quarantine'), name + '.reason')) as stream:
        return json.load(stream)['reason']


def _bad_outbox_file(fixtures, make, reason):
    """Fire, start the daemon, drop the bad file named like an event into ready/, fire more: all delivered."""
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    before = lifecycle([101, 102], cycles=1)
    node.fire(before)
    node.start_daemon()
    make(node, os.path.join(node.outbox_dir('ready'), BAD))
    after = lifecycle([101, 102], cycles=1)
    node.fire(after)
    wait_for(lambda: BAD in node.quarantined(), 30, 'the bad file to be quarantined',
             seen=lambda: 'quarantine {0}; log:\n{1}'.format(node.quarantined(), node.log_tail(10)))
    assert _reason(node, BAD) == reason
    assert_all_delivered(node, accountdb.db, before + after, quarantine=1)
    assert 'Traceback' not in node.log_text()
    assert node.stop_daemon() == 0
    return node


def _write(data, mode=0o600):
    def make(node, path):
        fd = os.open(path + '.part', os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, 'wb') as stream:
            stream.write(data)
        os.rename(path + '.part', path)
    return make


def _threads(pid):
    with open('/proc/{0}/status'.format(pid)) as stream:
        for line in stream:
            if line.startswith('Threads:'):
                return int(line.split()[1])
    raise AssertionError('no Threads: line for pid {0}'.format(pid))


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _get(port, path='/metrics', timeout=10):
    """Return the status line of GET ``path`` (b'' if the connection was closed without an answer)."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as sock:
        sock.sendall('GET {0} HTTP/1.0\r\n\r\n'.format(path).encode())
        data = b''
        while b'\r\n' not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b'\r\n', 1)[0]


def _metrics_node(fixtures, listen_host='127.0.0.1'):
    port = _free_port()
    node = _node(fixtures, settings={'metrics.listen': '{0}:{1}'.format(listen_host, port)})
    node.start_daemon()
    wait_for(lambda: _try_get(port).startswith(b'HTTP/1.0 200'), 30, '/metrics to answer',
             seen=lambda: node.log_tail(10))
    return node, port


def _try_get(port):
    try:
        return _get(port, timeout=2)
    except OSError:
        return b''


def _deliver_a_cycle(fixtures, node):
    """Fire one start/stop cycle of 101 and 102 on a running daemon; assert all of it was delivered."""
    fired = lifecycle([101, 102], cycles=1)
    node.fire(fired)
    assert_all_delivered(node, fixtures('accountdb').db, fired)
    assert node.stop_daemon() == 0


def _accountdb_address(accountdb):
    host, port = accountdb.url.rsplit('//', 1)[1].rsplit(':', 1)
    return host, int(port)


def _head(sock):
    data = b''
    while b'\r\n\r\n' not in data:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return data


# -- files -----------------------------------------------------------------------------------------------------

@case('outbox-fifo-named-like-an-event', 'files',
      'a FIFO named like an event appears in `ready/` while the daemon runs',
      'quarantined at once ("a FIFO, not a regular file"); never opened for a blocking read; the other '
      'events are delivered')
def _(fixtures):
    _bad_outbox_file(fixtures, lambda node, path: os.mkfifo(path, 0o600), 'a FIFO, not a regular file')


@case('outbox-symlink-named-like-an-event', 'files',
      'a symlink named like an event points at a file outside the outbox',
      'quarantined as the link itself ("a symbolic link, not a regular file (never followed)"); the target '
      'is neither read nor moved')
def _(fixtures):
    target = str(fixtures('tmp_path') / 'outside.json')
    with open(target, 'w') as stream:
        stream.write('{"secret": true}\n')
    node = _bad_outbox_file(fixtures, lambda node, path: os.symlink(target, path),
                            'a symbolic link, not a regular file (never followed)')
    assert os.path.islink(os.path.join(node.outbox_dir('quarantine'), BAD))
    with open(target) as stream:
        assert stream.read() == '{"secret": true}\n'


@case('outbox-directory-named-like-an-event', 'files',
      'a directory named like an event in `ready/`',
      'quarantined ("a directory, not a regular file"); the other events are delivered')
def _(fixtures):
    _bad_outbox_file(fixtures, lambda node, path: os.mkdir(path), 'a directory, not a regular file')


@case('outbox-deeply-nested-json', 'files',
      'a 60 KB event file of `[` (json recurses once per bracket)',
      'quarantined ("not valid JSON (nested too deeply)"), not left in `claimed/`; the other events are '
      'delivered')
def _(fixtures):
    _bad_outbox_file(fixtures, _write(b'[' * 60000), 'not valid JSON (nested too deeply)')


@case('outbox-zero-length-event', 'files',
      'an empty file named like an event',
      'quarantined ("not valid JSON (Expecting value: line 1 column 1 (char 0))"); the other events are '
      'delivered')
def _(fixtures):
    _bad_outbox_file(fixtures, _write(b''), 'not valid JSON (Expecting value: line 1 column 1 (char 0))')


@case('outbox-huge-event-file', 'files',
      'a 5 MB file named like an event',
      'quarantined after reading 64 KiB + 1 byte ("file is larger than 65536 bytes"); the other events '
      'are delivered')
def _(fixtures):
    _bad_outbox_file(fixtures, _write(b'{' + b' ' * (5 << 20) + b'}'), 'file is larger than 65536 bytes')


@case('outbox-unreadable-event-file', 'files',
      'an event file with mode 0000 holding garbage (root reads it anyway)',
      'quarantined for what it holds ("not valid JSON ..."); a read error would be a quarantine reason too; '
      'the other events are delivered')
def _(fixtures):
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    fired = lifecycle([101, 102], cycles=1)
    node.fire(fired)
    _write(b'\x00garbage', mode=0)(node, os.path.join(node.outbox_dir('ready'), BAD))
    node.start_daemon()
    wait_for(lambda: BAD in node.quarantined(), 30, 'the bad file to be quarantined', seen=node.log_tail)
    assert _reason(node, BAD).startswith(('not valid JSON', 'Permission denied', '[Errno 13]'))
    assert_all_delivered(node, accountdb.db, fired, quarantine=1)
    assert node.stop_daemon() == 0


@case('spool-dir-group-writable', 'files',
      'the spool directory and `outbox/ready` are mode 0777 when the daemon starts',
      'fixed to 0755 at start, one WARNING each naming the directory with the old and new mode; events '
      'delivered')
def _(fixtures):
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    fired = lifecycle([101, 102], cycles=1)
    node.fire(fired)
    ready = node.outbox_dir('ready')
    for directory in (node.spool_dir, ready):
        os.chmod(directory, 0o777)
    node.start_daemon()
    assert_all_delivered(node, accountdb.db, fired)
    for directory in (node.spool_dir, ready):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
        assert '{0} was writable by group or other (mode 0777); changed to 0755'.format(directory) in \
            node.log_text()
    assert node.stop_daemon() == 0


@case('state-dir-owned-by-another-user', 'files',
      'the state directory belongs to uid 65534 (nobody) when the daemon starts',
      'refused in one line naming the directory and the fix (`chown root:root DIR && chmod 0700 DIR`), '
      'exit 1, no traceback; the events wait in `ready/` and are delivered once it is fixed')
def _(fixtures):
    if os.geteuid() != 0:
        pytest.skip('giving the state directory to another user needs root (CI runs as root)')
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    fired = lifecycle([101, 102], cycles=1)
    node.fire(fired)
    os.makedirs(node.state_dir, mode=0o700, exist_ok=True)
    os.chown(node.state_dir, 65534, 65534)
    node.start_daemon()
    code = node.daemon.wait(30)
    node.stop_daemon()
    log = node.log_text()
    assert code == 1, log
    assert 'Traceback' not in log
    lines = [line for line in log.splitlines() if 'owned by uid 65534' in line]
    assert len(lines) == 1 and 'chown root:root {0} && chmod 0700 {0}'.format(node.state_dir) in lines[0], log
    assert len(node.outbox_files('ready')) == len(fired)
    os.chown(node.state_dir, 0, 0)
    node.start_daemon()
    assert_all_delivered(node, accountdb.db, fired)
    assert node.stop_daemon() == 0


@case('state-file-is-a-symlink', 'files',
      '`inventory.json` in the state directory is a symlink to a file elsewhere',
      'not followed (WARNING "a symbolic link, not followed"), read as empty state and replaced by a '
      'regular file; the link\'s target is untouched; events delivered')
def _(fixtures):
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    target = str(fixtures('tmp_path') / 'elsewhere.json')
    with open(target, 'w') as stream:
        stream.write('{"acked_hash": "planted"}\n')
    os.makedirs(node.state_dir, mode=0o700, exist_ok=True)
    link = os.path.join(node.state_dir, 'inventory.json')
    os.symlink(target, link)
    fired = lifecycle([101, 102], cycles=1)
    node.fire(fired)
    node.start_daemon()
    assert_all_delivered(node, accountdb.db, fired)
    wait_for(lambda: not os.path.islink(link) and os.path.isfile(link), 30, 'inventory.json to be rewritten',
             seen=node.log_tail)
    assert '{0}: state file unreadable (a symbolic link, not followed)'.format(link) in node.log_text()
    with open(target) as stream:
        assert stream.read() == '{"acked_hash": "planted"}\n'
    assert node.stop_daemon() == 0


# -- the /metrics listener -------------------------------------------------------------------------------------

@case('metrics-300-half-sent-requests', 'listener',
      '300 connections to `metrics.listen` each send half a request line and stall',
      'the daemon keeps its thread count (no thread per connection); /metrics answers meanwhile; the '
      'stalled sockets are closed at the 10 s deadline; events delivered')
def _(fixtures):
    node, port = _metrics_node(fixtures)
    before = _threads(node.daemon.pid)
    stalled = []
    for _ in range(300):
        sock = socket.create_connection(('127.0.0.1', port), timeout=5)
        sock.sendall(b'GET /metr')
        stalled.append(sock)
    time.sleep(1)
    assert _threads(node.daemon.pid) <= before + 4   # at most the listener's worker threads start
    wait_for(lambda: _try_get(port).startswith(b'HTTP/1.0 200'), 10, '/metrics to answer while 300 stall')
    closed = 0
    deadline = time.monotonic() + 20
    for sock in stalled:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            closed += sock.recv(10) == b''
        except ConnectionResetError:
            closed += 1
        except socket.timeout:
            pass
        sock.close()
    assert closed == 300
    _deliver_a_cycle(fixtures, node)


@case('metrics-client-never-reads-the-answer', 'listener',
      '20 clients send `GET /metrics` and never read the answer nor close',
      'each answer is written into the socket buffer or given up after 10 s; no thread is kept; the next '
      'client gets 200; events delivered')
def _(fixtures):
    node, port = _metrics_node(fixtures)
    before = _threads(node.daemon.pid)
    silent = []
    for _ in range(20):
        sock = socket.create_connection(('127.0.0.1', port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.sendall(b'GET /metrics HTTP/1.0\r\n\r\n')
        silent.append(sock)
    wait_for(lambda: _try_get(port).startswith(b'HTTP/1.0 200'), 15, '/metrics to answer the next client')
    assert _threads(node.daemon.pid) <= before + 4
    for sock in silent:
        sock.close()
    _deliver_a_cycle(fixtures, node)


@case('metrics-huge-header', 'listener',
      'a request to /metrics with a 1 MB header line',
      'the connection is closed once the head passes 16 KiB, without an answer or a thread; /metrics '
      'answers the next client; events delivered')
def _(fixtures):
    node, port = _metrics_node(fixtures)
    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
        try:
            sock.sendall(b'GET /metrics HTTP/1.0\r\nX-Big: ' + b'a' * (1 << 20) + b'\r\n\r\n')
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert not _head(sock).startswith(b'HTTP/1.0 200')
    assert _get(port).startswith(b'HTTP/1.0 200')
    _deliver_a_cycle(fixtures, node)


@case('metrics-listen-not-loopback', 'listener',
      '`metrics.listen: 0.0.0.0:PORT`',
      'served, with one WARNING that anyone reaching the node can read /metrics without authentication; '
      'events delivered')
def _(fixtures):
    node, port = _metrics_node(fixtures, listen_host='0.0.0.0')
    warnings = [line for line in node.log_text().splitlines() if 'is not a loopback address' in line]
    assert len(warnings) == 1 and 'without authentication' in warnings[0]
    _deliver_a_cycle(fixtures, node)


# -- the reference AccountDB -------------------------------------------------------------------------------------

@case('dev-accountdb-no-token-huge-body', 'dev-accountdb',
      'a POST without a token announcing a 60 MB body, none of it sent',
      'answered 401 at once, before any body is read, and the connection closed; the daemon\'s events are '
      'delivered')
def _(fixtures):
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    node.start_daemon()
    with socket.create_connection(_accountdb_address(accountdb), timeout=10) as sock:
        sock.sendall(b'POST /api/v1/nodes/pve1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                     b'Content-Length: 60000000\r\n\r\n')
        started = time.monotonic()
        answer = _head(sock)
        assert answer.startswith(b'HTTP/1.1 401 ') and b'Connection: close' in answer, answer
        assert time.monotonic() - started < 2
    _deliver_a_cycle(fixtures, node)


@case('dev-accountdb-connection-flood', 'dev-accountdb',
      '200 idle connections opened to dev-accountdb while a daemon delivers',
      'at most 64 are served (threads bounded), the rest answered 503 with Retry-After and closed; the '
      'daemon retries and every event is delivered once the flood is gone')
def _(fixtures):
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    node.start_daemon()
    flood = []
    busy = 0
    for _ in range(200):
        sock = socket.create_connection(_accountdb_address(accountdb), timeout=5)
        flood.append(sock)
    time.sleep(0.5)
    for sock in flood:
        sock.settimeout(0.05)
        try:
            busy += _head(sock).startswith(b'HTTP/1.1 503 ')
        except OSError:
            pass
    assert busy >= 200 - 64, busy
    assert _threads(accountdb.process.pid) <= 64 + 8
    fired = lifecycle([101, 102], cycles=1)
    node.fire(fired)
    time.sleep(1)
    for sock in flood:
        sock.close()
    assert_all_delivered(node, accountdb.db, fired)
    assert node.stop_daemon() == 0


@case('dev-accountdb-idle-connection', 'dev-accountdb',
      'a connection sends half a request line and goes silent; the daemon stays idle for 12 s between events',
      'the silent connection is closed after 10 s (was 300 s); the daemon\'s keep-alive session reconnects '
      'and every event is delivered')
def _(fixtures):
    accountdb = fixtures('accountdb')
    node = _node(fixtures)
    node.start_daemon()
    first = lifecycle([101], cycles=1)
    node.fire(first)
    wait_for(lambda: node.pending() == 0, 30, 'the first events to be delivered', seen=node.log_tail)
    with socket.create_connection(_accountdb_address(accountdb), timeout=15) as sock:
        sock.sendall(b'GET /api/v1/hea')
        started = time.monotonic()
        try:
            assert sock.recv(10) == b''
        except ConnectionResetError:
            pass
        assert 8 < time.monotonic() - started < 13
    time.sleep(2)   # the daemon's own keep-alive connection has been idle > 10 s now
    second = lifecycle([102], cycles=1)
    node.fire(second)
    assert_all_delivered(node, accountdb.db, first + second)
    assert 'Traceback' not in node.log_text()
    assert node.stop_daemon() == 0


# -- attach ----------------------------------------------------------------------------------------------------

@case('attach-hookscript-set-meanwhile', 'attach',
      'another administrator sets a hookscript on guest 101 between `pve-hooks attach --all` reading its '
      'config and its `qm set`',
      '`qm set --digest` is refused by (fake) Proxmox, the config is read again and 101 is skipped as '
      '"foreign hookscript"; the other hookscript is kept, 100 is attached, exit 0')
def _(fixtures):
    tmp_path = fixtures('tmp_path')
    fake = AttachNode(tmp_path / 'attach')
    fake.guest(100)
    fake.guest(101)
    env = dict(os.environ, PVE_HOOKS_CONFIG='')
    command = [PYTHON, '-m', 'pve_hooks'] + fake.cli_args()
    done = subprocess.run(command + ['snippets', 'install'], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    fake.race(101, 'local:snippets/gpu.sh')
    done = subprocess.run(command + ['attach', '--all'], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ('attached 1, unchanged 0, skipped 1 (foreign hookscript: 101 '
                                           'local:snippets/gpu.sh), failed 0')
    assert fake.hookscript(101) == 'local:snippets/gpu.sh' and fake.hookscript(100) == \
        'local:snippets/accountdb-hook'
    assert 'Traceback' not in done.stderr


@case('auto-attach-slow-qm-watchdog', 'attach',
      '`reconcile.auto_attach` with a `qm set` that takes 5 s, under `WatchdogSec=2s`',
      '`WATCHDOG=1` keeps arriving at least every second while qm runs (attach pings per guest and every '
      'second of a call); the guest is attached; events delivered')
def _(fixtures):
    tmp_path = fixtures('tmp_path')
    fake_node = fixtures('fake_node')
    slow = tmp_path / 'slow-qm'
    calls = tmp_path / 'qm-calls'
    slow.write_text('#!/bin/sh\necho "$*" >> {0}\nsleep 5\n'.format(calls))
    os.chmod(str(slow), 0o755)
    snippets = tmp_path / 'vz' / 'snippets'
    snippets.mkdir(parents=True)
    (snippets / 'accountdb-hook').write_text('#!/bin/sh\nexit 0\n')
    storage = tmp_path / 'storage.cfg'
    storage.write_text('dir: local\n\tpath {0}\n\tcontent snippets\n'.format(tmp_path / 'vz'))
    notify_path = str(tmp_path / 'notify.sock')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    pings = []
    running = [True]

    def collect():
        while running[0]:
            try:
                message = notify.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            if 'WATCHDOG=1' in message:
                pings.append(time.monotonic())

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    try:
        fake_node.create_guest(101)
        node = fixtures('pve_node')('pve1', settings={
            'reconcile.auto_attach': True, 'proxmox.qm': str(slow), 'proxmox.storage_cfg': str(storage),
            'accountdb.timeout.total': 1.5},   # below the 2 s watchdog, or the daemon refuses to start
            env={'NOTIFY_SOCKET': notify_path, 'WATCHDOG_USEC': '2000000'})
        node.start_daemon()
        wait_for(lambda: os.path.exists(os.path.join(node.state_dir, 'inventory.json')) and pings, 30,
                 'the baseline inventory pass', seen=node.log_tail)
        time.sleep(1.5)
        fake_node.create_guest(105)       # a new guest: auto-attached at the next pass
        wait_for(lambda: calls.exists(), 30, 'auto-attach to run qm', seen=node.log_tail)
        started = time.monotonic()
        wait_for(lambda: 'auto-attach of new guests 105' in node.log_text(), 30, 'auto-attach to finish',
                 seen=node.log_tail)
        during = [stamp for stamp in pings if stamp >= started - 1]
        gaps = [later - earlier for earlier, later in zip(during, during[1:])]
        assert len(during) >= 4 and max(gaps) < 2.0, gaps
        assert calls.read_text().split()[:4] == ['set', '105', '--hookscript', 'local:snippets/accountdb-hook']
        fired = lifecycle([101, 105], cycles=1)
        node.fire(fired)
        assert_all_delivered(node, fixtures('accountdb').db, fired)
        assert node.stop_daemon() == 0
    finally:
        running[0] = False
        notify.close()
        thread.join(2)

