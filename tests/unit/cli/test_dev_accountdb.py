"""pve_hooks.cli.dev_accountdb: the command with and without the pve-hooks-dev-accountdb package."""

import os
import subprocess
import sys

import click
import pytest

from pve_hooks.cli import dev_accountdb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Runs `pve-hooks ARGS...` in a fresh interpreter in which pve_hooks_devserver
# cannot be found, as on a node that installed only the pve-hooks package.
WITHOUT_DEVSERVER = '''
import sys


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] == 'pve_hooks_devserver':
            raise ModuleNotFoundError('No module named {0!r}'.format(name), name=name)


sys.meta_path.insert(0, NotInstalled())
sys.argv = ['pve-hooks'] + sys.argv[1:]
from pve_hooks.cli import run
run()
'''


def run_without_devserver(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, '-c', WITHOUT_DEVSERVER] + list(args), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_installed_package_provides_the_real_command():
    command, = dev_accountdb.COMMANDS
    assert command is not dev_accountdb.not_installed
    assert isinstance(command, click.Group) and command.name == 'dev-accountdb'
    assert command.callback.__module__ == 'pve_hooks_devserver.command'
    assert 'dump' in command.commands


@pytest.mark.parametrize('args', [[], ['--help'], ['--listen', '127.0.0.1:0', '--db', 'x'], ['dump', '--db', 'x']])
def test_without_the_package_one_line_says_what_to_install(args):
    done = run_without_devserver('dev-accountdb', *args)
    assert done.returncode == 2
    assert done.stdout == ''
    assert done.stderr == dev_accountdb.NOT_INSTALLED + '\n'
    assert 'apt install pve-hooks-dev-accountdb' in done.stderr


def test_without_the_package_help_still_lists_the_command_and_other_commands_work():
    done = run_without_devserver('--help')
    assert done.returncode == 0, done.stderr
    assert 'dev-accountdb  Reference AccountDB: in package pve-hooks-dev-accountdb.' in done.stdout
    done = run_without_devserver('config', 'sample')
    assert done.returncode == 0 and done.stderr == ''
