"""``pve-hooks attach|detach|attached|snippets`` as real processes against a fake node."""

import json
import os
import pty
import subprocess
import sys

import pytest

from tests.support.guests import FakeNode

VOL = 'local:snippets/accountdb-hook'


def run(node, *args, stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, '-m', 'pve_hooks'] + node.cli_args() + list(args),
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60,
                          env=dict(os.environ, PVE_HOOKS_CONFIG=''))


@pytest.fixture
def node(tmp_path):
    return FakeNode(tmp_path)


def test_install_attach_twice_detach(node):
    node.guest(100)
    node.guest(101, hookscript='local:snippets/gpu.sh')
    node.guest(102, template=True)
    node.guest(200, kind='lxc')

    done = run(node, 'snippets', 'install')
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('installed ')
    assert run(node, 'snippets', 'status').returncode == 0

    done = run(node, 'attach', '--all')
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ('attached 2, unchanged 0, skipped 2 (foreign hookscript: 101 local:snippets/gpu.sh; '
                        'template: 102), failed 0')
    assert '/etc/pve-hooks/hooks.d/' in lines[1] and '--force' in lines[1]

    again = run(node, 'attach', '--all')
    assert again.stdout.splitlines()[0].startswith('attached 0, unchanged 2, skipped 2')

    listed = json.loads(run(node, 'attached', '--json').stdout)
    assert {row['vmid']: row['state'] for row in listed} == {100: 'ours', 101: 'foreign', 102: 'none', 200: 'ours'}
    table = run(node, 'attached').stdout
    assert 'guest102 (template)' in table

    done = run(node, 'detach', '--all')
    assert done.stdout.startswith('detached 2, unchanged 1, skipped 1 (foreign hookscript: 101')
    assert node.hookscript(101) == 'local:snippets/gpu.sh'

    done = run(node, 'snippets', 'remove')
    assert done.returncode == 0 and done.stdout.startswith('removed ')
    assert run(node, 'snippets', 'status').returncode == 1


def test_failure_exits_1_and_names_the_guest(node):
    run(node, 'snippets', 'install')
    for vmid in (100, 101, 102):
        node.guest(vmid)
    node.fail(101)
    done = run(node, 'attach', '100', '101', '102')
    assert done.returncode == 1
    assert done.stdout.startswith("attached 2, unchanged 0, skipped 0, failed 1 (101: qm set exited 2: can't lock")


def test_attach_installs_a_missing_snippet_first(node):
    node.guest(100)
    done = run(node, 'attach', '100')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith('installed ')
    assert done.stdout.splitlines()[1].startswith('attached 1,')
    assert os.path.isfile(os.path.join(node.snippets, 'accountdb-hook'))


def test_missing_snippets_directory_is_one_line_error(node):
    os.rmdir(node.snippets)
    node.guest(100)
    done = run(node, 'attach', '100')
    assert done.returncode == 1
    assert done.stderr.startswith('Error: ') and 'pvesm set local' in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and 'Traceback' not in done.stderr
    assert node.calls() == []
    done = run(node, 'snippets', 'remove')
    assert done.returncode == 0


@pytest.mark.parametrize('args', [('attach',), ('attach', '--all', '100'), ('detach',)])
def test_usage_errors_exit_2(node, args):
    done = run(node, *args)
    assert done.returncode == 2 and 'VMIDs' in done.stderr


def test_snippets_install_refuses_a_foreign_file(node):
    with open(os.path.join(node.snippets, 'accountdb-hook'), 'w') as stream:
        stream.write('mine\n')
    done = run(node, 'snippets', 'install')
    assert done.returncode == 1 and 'not installed by pve-hooks; left alone' in done.stderr
    status = run(node, 'snippets', 'status', '--json')
    assert json.loads(status.stdout)['state'] == 'foreign' and status.returncode == 1


def test_progress_bar_only_on_a_terminal(node):
    run(node, 'snippets', 'install')
    for vmid in (100, 101):
        node.guest(vmid)
    plain = run(node, 'attach', '--all', '--dry-run')
    assert 'attaching' not in plain.stdout
    node.guest(102)
    master, slave = pty.openpty()
    try:
        done = run(node, 'attach', '--all', stdout=slave)
        os.close(slave)
        output = b''
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
    assert done.returncode == 0
    text = output.decode()
    assert 'attaching' in text and 'attached 3, unchanged 0' in text


def test_a_hookscript_set_while_attaching_is_left_alone_and_reported(node):
    run(node, 'snippets', 'install')
    node.guest(100)
    node.guest(101)
    node.race(101, 'local:snippets/gpu.sh')
    done = run(node, 'attach', '--all')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ('attached 1, unchanged 0, skipped 1 (foreign hookscript: 101 '
                                           'local:snippets/gpu.sh), failed 0')
    assert node.hookscript(101) == 'local:snippets/gpu.sh'
    assert all('--digest' in call for call in node.calls(digests=True))
    assert 'Traceback' not in done.stderr
