"""The Debian packaging files agree with the schema's defaults and the CLI.

The unit, the tmpfiles entry and the purge script name paths that are
defaults of options in pve_hooks/config/schema.py; these tests keep them in step.
"""

import configparser
import os

import pytest

from pve_hooks.config import schema

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBIAN = os.path.join(ROOT, 'debian')
SPOOL = schema.BY_KEY['paths.spool_dir'].default
STATE = schema.BY_KEY['paths.state_dir'].default
TEXTFILE_DIR = os.path.dirname(schema.BY_KEY['metrics.textfile'].default)

pytestmark = pytest.mark.skipif(not os.path.isdir(DEBIAN), reason='no debian/ directory in this tree')


def _read(name):
    with open(os.path.join(DEBIAN, name), encoding='utf-8') as stream:
        return stream.read()


def _unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=('=',))
    parser.optionxform = str
    parser.read_string(_read('pve-hooks.pve-hooks-reconciler.service'))
    return parser


def test_tmpfiles_creates_the_default_spool_and_state_dirs_0700_root():
    entries = [line.split() for line in _read('pve-hooks.tmpfiles').splitlines()
               if line.strip() and not line.startswith('#')]
    assert sorted(entries) == sorted([['d', SPOOL, '0700', 'root', 'root', '-'],
                                      ['d', STATE, '0700', 'root', 'root', '-']])


def test_unit_writes_exactly_spool_state_and_textfile_dir():
    service = _unit()['Service']
    assert service['ReadWritePaths'].split() == [SPOOL, STATE, '-' + TEXTFILE_DIR]
    assert service['ProtectSystem'] == 'strict'


def test_unit_runs_the_reconcile_command_as_a_notify_service_with_a_watchdog():
    from pve_hooks.cli import main

    service = _unit()['Service']
    assert service['Type'] == 'notify'
    assert service['ExecStart'] == '/usr/bin/pve-hooks reconcile'
    assert service['WatchdogSec'] and service['Restart'] == 'on-failure'
    assert 'reconcile' in main.commands


def test_purge_removes_the_default_state_and_checks_the_default_spool():
    postrm = _read('pve-hooks.postrm')
    assert 'rm -rf /etc/pve-hooks {0}'.format(STATE) in postrm
    assert 'spool={0}\n'.format(SPOOL) in postrm


def test_unit_documentation_points_at_shipped_docs():
    for url in _unit()['Unit']['Documentation'].split():
        if url.startswith('file:///usr/share/doc/pve-hooks/'):
            assert os.path.isfile(os.path.join(ROOT, 'docs', os.path.basename(url)))
