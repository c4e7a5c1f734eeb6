"""The Debian packaging files agree with the schema's defaults and the CLI.

The unit, the tmpfiles entry and the purge script name paths that are
defaults of options in pve_hooks/config/schema.py; these tests keep them in step.
They also keep the reference AccountDB (pve_hooks_devserver) out of the
production package: it ships in pve-hooks-dev-accountdb only.
"""

import configparser
import fnmatch
import os
import sys

import pytest

from pve_hooks import __version__
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


def _control_paragraphs():
    """Return debian/control as a list of {field: value} dicts (continuation lines joined)."""
    paragraphs = []
    for block in _read('control').split('\n\n'):
        fields, name = {}, None
        for line in block.splitlines():
            if line[:1] in (' ', '\t') and name:
                fields[name] += ' ' + line.strip()
            elif ':' in line:
                name, _, value = line.partition(':')
                fields[name] = value.strip()
        if fields:
            paragraphs.append(fields)
    return paragraphs


def _installed_by(package):
    """Return the source paths debian/<package>.install lists (its first word per line)."""
    return [line.split()[0] for line in _read(package + '.install').splitlines()
            if line.strip() and not line.startswith('#')]


def _matches(patterns, path):
    """Whether dh_install would pick ``path`` (or a file inside it) with one of ``patterns``."""
    parts = path.split('/')
    return any(fnmatch.fnmatchcase('/'.join(parts[:length]), pattern)
               for pattern in patterns for length in range(1, len(parts) + 1))


# Where pybuild installs (debian/tmp); dh_python3 later moves it to usr/lib/python3/.
DIST_PACKAGES = 'usr/lib/python3.{0}/dist-packages/'.format(sys.version_info.minor)


def test_the_reference_accountdb_is_its_own_package_depending_on_pve_hooks():
    packages = {fields['Package']: fields for fields in _control_paragraphs() if 'Package' in fields}
    assert sorted(packages) == ['pve-hooks', 'pve-hooks-dev-accountdb']
    dev = packages['pve-hooks-dev-accountdb']
    assert dev['Architecture'] == 'all'
    assert 'pve-hooks (= ${binary:Version})' in [item.strip() for item in dev['Depends'].split(',')]


def test_production_package_ships_pve_hooks_but_not_the_reference_accountdb():
    production, dev = _installed_by('pve-hooks'), _installed_by('pve-hooks-dev-accountdb')
    for module in ('pve_hooks/__init__.py', 'pve_hooks/cli/dev_accountdb.py', 'pve_hooks-{0}.dist-info/RECORD'.format(__version__)):
        assert _matches(production, DIST_PACKAGES + module) and not _matches(dev, DIST_PACKAGES + module)
    assert _matches(production, 'usr/bin/pve-hooks')
    for module in ('pve_hooks_devserver/__init__.py', 'pve_hooks_devserver/command.py'):
        assert _matches(dev, DIST_PACKAGES + module) and not _matches(production, DIST_PACKAGES + module)



def _recipe(target):
    """Return the recipe of ``target`` in debian/rules (its tab-indented lines, joined), '' if there is none."""
    lines, inside = [], False
    for line in _read('rules').splitlines():
        if inside and line.startswith('\t'):
            lines.append(line)
        else:
            inside = line.startswith(target + ':')
    return '\n'.join(lines)


def test_the_hookscript_is_installed_after_dh_python3_which_would_rewrite_its_first_line():
    # dh-python 6 (Debian 13) rewrites every python3 #! line to '#! /usr/bin/python3', dropping -IS;
    # make deb-check compares the installed first line with the source's on Debian 12 and 13.
    assert 'hookscripts/' in _recipe('execute_after_dh_python3')
    for target in ('execute_after_dh_install', 'override_dh_install', 'execute_before_dh_python3'):
        assert 'hookscripts/' not in _recipe(target)


def test_the_unit_goes_to_usr_lib_systemd_system_on_every_release():
    # One _all.deb for Debian 12 and 13: Debian 13's lintian rejects /lib/systemd/system (aliased-location),
    # and debhelper 13.11 (Debian 12) installs there: debian/rules moves it.
    recipe = _recipe('execute_after_dh_installsystemd')
    assert 'debian/pve-hooks/usr/lib/systemd/system' in recipe and 'debian/pve-hooks/lib/systemd/system' in recipe
