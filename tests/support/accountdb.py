"""The reference AccountDB as a real subprocess, for tests over loopback HTTP.

    from tests.support.accountdb import dev_accountdb   # pytest fixture

    def test_something(dev_accountdb, tmp_path):
        settings = dev_accountdb.settings()            # a config.Settings pointing at it
        dev_accountdb.set_faults([{"mode": "status", "status": 503, "retry_after": 1, "count": 2}])
        ...
        assert len(dev_accountdb.events()) == 3

Or without pytest: ``with run_dev_accountdb(tmp_path) as server: ...``.
The server runs ``python -m pve_hooks dev-accountdb`` with this interpreter;
its stderr goes to ``<dir>/dev-accountdb.log``.
"""

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request

import pytest

from pve_hooks.config import loader as config

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DevAccountDB:
    """A running reference AccountDB. Attributes: url, port, token, token_file, db, directory."""

    def __init__(self, directory, faults=None, port=0, tls=None):
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.db = os.path.join(self.directory, 'accountdb.sqlite')
        self.token_file = os.path.join(self.directory, 'server-token')
        self.log_file = os.path.join(self.directory, 'dev-accountdb.log')
        self.tls = tls
        self.token = 'tok-' + secrets.token_hex(16)
        self.write_token(self.token_file, self.token)
        self.port = port
        self.url = None
        self.process = None
        self._start(faults)

    @staticmethod
    def write_token(path, token):
        """Write ``token`` to ``path`` with mode 0600 (atomically, like an operator's rotation)."""
        tmp = path + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as stream:
            stream.write(token + '\n')
        os.replace(tmp, path)

    def _start(self, faults=None):
        argv = [sys.executable, '-m', 'pve_hooks', 'dev-accountdb', '--listen', '127.0.0.1:{0}'.format(self.port),
                '--db', self.db, '--token-file', self.token_file]
        if faults is not None:
            argv += ['--faults', json.dumps(faults)]
        if self.tls:
            argv += ['--tls-cert', self.tls[0], '--tls-key', self.tls[1]]
        env = dict(os.environ)
        env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
        with open(self.log_file, 'ab') as log:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                            env=env, cwd=self.directory)
        line = self._first_line()
        if not line.startswith('dev-accountdb listening on '):
            self.kill()
            raise RuntimeError('dev-accountdb did not start (first line {0!r}); log:\n{1}'.format(
                line, self.read_log()))
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(':', 1)[1])

    def _first_line(self):
        result = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not result:
            self.kill()
            raise RuntimeError('dev-accountdb printed nothing within {0} s; log:\n{1}'.format(
                START_TIMEOUT, self.read_log()))
        return result[0].decode('utf-8', 'replace').strip()

    def read_log(self):
        """Return the server's stderr so far."""
        try:
            with open(self.log_file, encoding='utf-8', errors='replace') as stream:
                return stream.read()
        except OSError:
            return ''

    # -- lifecycle ------------------------------------------------------------

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self):
        """SIGTERM the server and wait for it. Return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        return self.process.returncode

    def kill(self):
        """SIGKILL the server (no clean shutdown) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None:
            self.process.stdout.close()

    def restart(self, faults=None):
        """Stop the server if it runs and start it again on the same port and database."""
        if self.running:
            self.stop()
        self._start(faults)

    # -- admin ------------------------------------------------------------------

    def admin(self, method, path, body=None):
        """Send an admin request with the server's token; return the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode('utf-8')
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={'Authorization': 'Bearer ' + self.token,
                                                  'Content-Type': 'application/json'})
        context = None
        if self.tls:
            import ssl

            context = ssl.create_default_context(cafile=self.tls[0])
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return json.loads(response.read().decode('utf-8'))

    def set_faults(self, spec):
        """Replace the server's fault rules (a list of rules or a spec object); [] clears them."""
        return self.admin('POST', '/_admin/faults', spec if spec is not None else [])['faults']

    def stats(self):
        """Return the request statistics: {"endpoints": {"METHOD path": {...}}, "totals": {...}}."""
        return self.admin('GET', '/_admin/stats')

    def reset_stats(self):
        """Zero the request statistics."""
        self.admin('POST', '/_admin/stats/reset', {})

    def events(self, node=None):
        """Return the stored events (event_id, node, vmid, seq, phase, received_at, body) from the database."""
        db = sqlite3.connect(self.db, timeout=10)
        try:
            query = 'SELECT event_id, node, vmid, seq, phase, received_at, body FROM events'
            rows = db.execute(query + (' WHERE node = ?' if node else '') + ' ORDER BY rowid',
                              (node,) if node else ()).fetchall()
        finally:
            db.close()
        return [{'event_id': r[0], 'node': r[1], 'vmid': r[2], 'seq': r[3], 'phase': r[4],
                 'received_at': r[5], 'body': json.loads(r[6])} for r in rows]

    def dump(self):
        """Return the server's /_admin/dump (events per node, inventories, heartbeats, whitelist)."""
        return self.admin('GET', '/_admin/dump')

    # -- client side ------------------------------------------------------------

    def settings(self, *overrides, directory=None, token_file=None, node='pve1'):
        """Return a config.Settings for a client of this server.

        State, spool and metrics paths go under ``directory`` (default: a
        ``client`` directory next to the server's files); ``token_file``
        defaults to the server's own token file. ``overrides`` are extra
        ``key=value`` pairs (highest precedence).
        """
        directory = str(directory or os.path.join(self.directory, 'client'))
        os.makedirs(directory, exist_ok=True)
        empty = os.path.join(directory, 'config.yaml')
        if not os.path.exists(empty):
            with open(empty, 'w') as stream:
                stream.write('{}\n')
        base = ['node=' + node,
                'accountdb.url=' + self.url,
                'accountdb.token_file=' + (token_file or self.token_file),
                'paths.state_dir=' + os.path.join(directory, 'state'),
                'paths.spool_dir=' + os.path.join(directory, 'spool'),
                'metrics.textfile=',
                'logging.target=stderr']
        if self.tls:
            base.append('accountdb.ca_bundle=' + self.tls[0])
        return config.load(config_file=empty, env={}, overrides=base + list(overrides))


@contextlib.contextmanager
def run_dev_accountdb(directory, faults=None, port=0, tls=None):
    """Run a reference AccountDB with its files in ``directory``; yield a :class:`DevAccountDB`; stop it after."""
    server = DevAccountDB(directory, faults=faults, port=port, tls=tls)
    try:
        yield server
    finally:
        if server.running:
            server.stop()


@pytest.fixture
def dev_accountdb(tmp_path):
    """A fresh reference AccountDB for one test, files under tmp_path/accountdb."""
    with run_dev_accountdb(tmp_path / 'accountdb') as server:
        yield server


def make_self_signed(directory, host='127.0.0.1'):
    """Create a self-signed certificate for ``host`` with the openssl CLI. Return (cert, key) paths."""
    cert = os.path.join(str(directory), 'cert.pem')
    key = os.path.join(str(directory), 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                    '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=' + host,
                    '-addext', 'subjectAltName=IP:' + host],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return cert, key
