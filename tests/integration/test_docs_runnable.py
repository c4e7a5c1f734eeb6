"""Every shell block marked runnable in README.md and docs/operations.md is executed here.

A block is runnable when its fence's info string is ``sh runnable``, optionally
followed by ``situation=NAME``: the situation (AccountDB down, a dead event,
a quarantined file, ...) is set up before the block runs, so the runbook's
commands are run in the situation they are written for.

The sandbox: a simulated node (harness Node: own config, token file, spool,
state), the reference AccountDB over loopback, fakepve behind the pvesh shim,
a fake systemctl, and the real daemon running. Paths the docs name are mapped
into the sandbox: ``/etc/pve-hooks/`` -> the node's directory (config.yaml,
token), ``/var/spool/pve-hooks`` -> its spool, ``/var/lib/pve-hooks`` -> its
state. Each block runs with ``bash -euo pipefail``; a block fails the test
when any command in it fails (blocks show expected non-zero exits with
``|| echo ...``).
"""

import os
import re
import stat
import subprocess

import pytest

from tests.end_to_end.harness import REPO, Node, lifecycle, wait_for
from tests.support.accountdb import dev_accountdb  # noqa: F401 (fixture)
from tests.support.fakepve import fake_node, fake_pve, fake_pve_pki, pve_root  # noqa: F401 (fixtures)
from tests.support.systemctl import make_systemctl

DOCS = ('README.md', os.path.join('docs', 'operations.md'))
FENCE = re.compile(r'^```sh runnable(?P<options>[^\n]*)\n(?P<body>.*?)^```\s*$', re.M | re.S)
BAD_NAME = '00000000000000000001-101-0b6a1e7e-0000-4000-8000-00000000dead.json'


def runnable_blocks(path):
    """Return [(line number, situation or None, body)] for the runnable blocks of file ``path``."""
    with open(path) as stream:
        text = stream.read()
    blocks = []
    for match in FENCE.finditer(text):
        options = dict(item.split('=', 1) for item in match.group('options').split() if '=' in item)
        blocks.append((text.count('\n', 0, match.start()) + 1, options.get('situation'), match.group('body')))
    return blocks


def test_the_runbook_has_runnable_blocks():
    blocks = runnable_blocks(os.path.join(REPO, 'docs', 'operations.md'))
    assert len(blocks) >= 8
    known = set(Sandbox.SITUATIONS)
    for line, situation, _body in blocks:
        assert situation is None or situation in known, 'operations.md:{0}: unknown situation {1}'.format(
            line, situation)


class Sandbox:
    """A node, its daemon and AccountDB, and the situations the runbook's sections describe."""

    SITUATIONS = ('accountdb-down', 'accountdb-back', 'dead-event', 'dead-event-fixed', 'quarantined',
                  'outbox-full', 'token-rejected')

    def __init__(self, tmp_path, accountdb, fake_node):
        self.accountdb = accountdb
        for vmid in (101, 102):
            fake_node.create_guest(vmid)
        self.node = Node(tmp_path / 'node', 'pve1', accountdb=accountdb, pve_root=fake_node.pve_root,
                         settings={'proxmox.pvesh': fake_node.fake.pvesh,
                                   'health.systemctl': make_systemctl(tmp_path, {})})
        self.node.start_daemon()
        self.node.fire(lifecycle([101], cycles=1))
        self.wait_healthy()

    def close(self):
        self.node.close()

    def map_paths(self, body):
        """Return ``body`` with the production paths replaced by the sandbox's."""
        return (body.replace('/etc/pve-hooks/', self.node.root + '/')
                .replace('/var/spool/pve-hooks', self.node.spool_dir)
                .replace('/var/lib/pve-hooks', self.node.state_dir))

    def run(self, body, stdin=''):
        """Run a block with bash; return the CompletedProcess."""
        return subprocess.run(['bash', '-euo', 'pipefail', '-c', self.map_paths(body)], env=self.node.env(),
                              cwd=self.node.root, input=stdin, capture_output=True, text=True, timeout=120)

    # -- situations ------------------------------------------------------------------------------
    def status(self):
        return self.node.status()

    def wait_healthy(self):
        if not self.accountdb.running:
            self.accountdb.restart()
        wait_for(lambda: self.node.pending() == 0 and self.status()['daemon'].get('connection') == 'up', 30,
                 'the sandbox to be healthy', seen=lambda: (self.node.pending(), self.status()['daemon'],
                                                             self.node.log_tail(5)))

    def before(self, situation):
        """Set up ``situation``; return the text to feed the block on stdin."""
        node, accountdb = self.node, self.accountdb
        if situation is None:
            return ''
        if situation == 'accountdb-down':
            accountdb.stop()
            node.fire([(102, 'pre-start')])
            wait_for(lambda: self.status()['breaker']['state'] == 'open', 30, 'the breaker to open',
                     seen=lambda: self.status()['breaker'])
        elif situation == 'accountdb-back':
            self.wait_healthy()
        elif situation == 'dead-event':
            # Hold delivery (503) until the event's id is known, then have AccountDB reject it.
            accountdb.set_faults([{'mode': 'status', 'status': 503, 'path': '/api/v1/events'}])
            node.fire([(102, 'post-start')])
            accountdb.set_faults([{'mode': 'reject', 'event_ids': node.fired_ids()[-1:]}])
            wait_for(lambda: node.outbox_files('dead'), 30, 'a dead event', seen=node.log_tail)
        elif situation == 'dead-event-fixed':
            accountdb.set_faults([])
        elif situation == 'quarantined':
            if not node.quarantined():
                with open(os.path.join(node.outbox_dir('ready'), BAD_NAME), 'w') as stream:
                    stream.write('{"schema": 1, "event_id": "trunc')
                wait_for(lambda: node.quarantined(), 30, 'the corrupt file to be quarantined', seen=node.log_tail)
        elif situation == 'outbox-full':
            accountdb.stop()
            node.write_config({'outbox.max_events': 2})
            node.fire([(101, 'pre-stop'), (101, 'post-stop'), (102, 'pre-stop'), (102, 'post-stop')])
        elif situation == 'token-rejected':
            node.set_token('tok-rotated-away-' + 'z' * 20)
            node.fire([(102, 'post-stop')])
            wait_for(lambda: 'token' in str(self.status()['daemon'].get('last_error')).lower()
                     or self.status()['breaker']['state'] == 'open', 30, 'the token to be refused',
                     seen=lambda: self.status()['daemon'])
            return accountdb.token + '\n'
        else:
            raise AssertionError('unknown situation ' + situation)
        return ''

    def after(self, situation, result):
        """Check what the block should have achieved; restore a healthy sandbox."""
        node = self.node
        if situation == 'accountdb-down':
            assert 'down' in result.stdout or 'open' in result.stdout, result.stdout
            self.accountdb.restart()
        elif situation == 'dead-event':
            assert node.fired_ids()[-1] in result.stdout, 'the dead event was not shown'
        elif situation == 'dead-event-fixed':
            wait_for(lambda: not node.outbox_files('dead') and node.pending() == 0, 30,
                     'the retried dead event to be delivered', seen=node.log_tail)
        elif situation == 'quarantined' and 'rm -f' in result.args[-1]:
            assert not node.quarantined()
        elif situation == 'outbox-full':
            assert re.search(r'dropped:\s+[1-9]', result.stdout), result.stdout
            node.write_config({'outbox.max_events': 100000})
            self.wait_healthy()
        elif situation == 'token-rejected':
            with open(node.token_file) as stream:
                assert stream.read().strip() == self.accountdb.token
            assert stat.S_IMODE(os.stat(node.token_file).st_mode) == 0o600
            assert self.accountdb.token not in result.stdout + result.stderr, 'the token was printed'
            self.wait_healthy()


@pytest.fixture
def sandbox(tmp_path, dev_accountdb, fake_node):  # noqa: F811 (fixtures imported above)
    box = Sandbox(tmp_path, dev_accountdb, fake_node)
    yield box
    box.close()


@pytest.mark.parametrize('document', DOCS)
def test_runnable_blocks(sandbox, document):
    blocks = runnable_blocks(os.path.join(REPO, document))
    for line, situation, body in blocks:
        stdin = sandbox.before(situation)
        result = sandbox.run(body, stdin)
        where = '{0}:{1} (situation {2})'.format(document, line, situation)
        assert result.returncode == 0, '{0} exited {1}:\n{2}\n--- stdout\n{3}\n--- stderr\n{4}'.format(
            where, result.returncode, body, result.stdout[-2000:], result.stderr[-2000:])
        assert 'Traceback' not in result.stdout + result.stderr, where
        sandbox.after(situation, result)
    assert sandbox.node.daemon_alive(), sandbox.node.log_tail()
