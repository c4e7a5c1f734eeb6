"""pve_hooks.cli.manpage: roff rendering of a click group."""

import shutil
import subprocess

import click
import pytest

from pve_hooks.cli import manpage
from pve_hooks.cli import main as pve_hooks_group


@click.group()
@click.option('--config', metavar='FILE', help='Config file.')
def demo():
    """Demo tool - does things.

    Second paragraph with a \\backslash.
    """


@demo.command('run')
@click.argument('vmids', nargs=-1)
@click.option('--dry-run', is_flag=True, help='.Only show it.')
def run(vmids, dry_run):
    """Run it.

    \b
    keep   this
    layout
    \f
    Not shown.
    """


@demo.command('secret', hidden=True)
def secret():
    """Hidden."""


def test_render_escapes_and_walks_commands():
    page = manpage.render(demo, name='demo', version='1.0', date='2025-01-02')
    assert page.splitlines()[1] == '.TH DEMO 1 "2025-01-02" "demo 1.0" "User Commands"'
    assert 'demo \\- Demo tool \\- does things' in page
    assert 'Second paragraph with a \\ebackslash.' in page
    assert '.SS "demo run"' in page and '\\fBdemo run\\fR [OPTIONS] [VMIDS]...' in page
    assert '\\fB\\-\\-dry\\-run\\fR\n\\&.Only show it.' in page
    assert '.nf\nkeep   this\nlayout\n.fi' in page
    assert 'Not shown' not in page and 'secret' not in page


def test_date_comes_from_source_date_epoch(monkeypatch):
    monkeypatch.setenv('SOURCE_DATE_EPOCH', '1764000000')
    assert '"2025-11-24"' in manpage.render(demo, name='demo')


def test_real_page_lists_every_command():
    page = manpage.render(pve_hooks_group, version='0', date='2025-01-01')
    ctx = click.Context(pve_hooks_group, info_name='pve-hooks')
    for name in pve_hooks_group.list_commands(ctx):
        assert '.SS "pve\\-hooks {0}"'.format(name.replace('-', '\\-')) in page


@pytest.mark.skipif(not shutil.which('man'), reason='man-db is not installed')
def test_real_page_has_no_groff_warnings(tmp_path):
    path = tmp_path / 'pve-hooks.1'
    path.write_text(manpage.render(pve_hooks_group, version='0', date='2025-01-01'))
    done = subprocess.run(['man', '--warnings', '-E', 'UTF-8', '-l', '-Tutf8', '-Z', str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={'LC_ALL': 'C.UTF-8', 'PATH': '/usr/bin:/bin', 'MANWIDTH': '80'}, timeout=60)
    assert done.returncode == 0 and done.stderr == ''
