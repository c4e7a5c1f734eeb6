"""Unit tests for pve_hooks.cli.run: the console entry point never shows a traceback."""

import click
import pytest

from pve_hooks.cli import main, run


@pytest.fixture
def broken_command():
    @click.command('explode-for-test')
    def explode():
        raise RuntimeError('boom')

    main.add_command(explode)
    yield
    main.commands.pop('explode-for-test')


def test_a_bug_is_one_line_and_exit_70(broken_command, monkeypatch, capsys):
    monkeypatch.setattr('sys.argv', ['pve-hooks', 'explode-for-test'])
    with pytest.raises(SystemExit) as stopped:
        run()
    err = capsys.readouterr().err
    assert stopped.value.code == 70 and 'Traceback' not in err and err.count('\n') == 1
    assert err.startswith('pve-hooks: unexpected RuntimeError (boom); this is a bug')


def test_usage_errors_keep_clicks_exit_status(monkeypatch, capsys):
    monkeypatch.setattr('sys.argv', ['pve-hooks', 'no-such-command'])
    with pytest.raises(SystemExit) as stopped:
        run()
    assert stopped.value.code == 2 and 'No such command' in capsys.readouterr().err
