"""The real ``pve-hooks`` console script with real files and environment."""

import os
import shutil
import subprocess
import sys

import pytest

PVE_HOOKS = [sys.executable, '-m', 'pve_hooks']


def run(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith('PVE_HOOKS_')}
    full_env.update(env or {})
    return subprocess.run(PVE_HOOKS + list(args), capture_output=True, text=True, env=full_env, timeout=60)


def test_console_script_installed():
    assert shutil.which('pve-hooks', path=os.path.dirname(sys.executable)), 'pve-hooks entry point missing'


@pytest.mark.parametrize('content, expected', [
    ('accountdb:\n  url: [\n', 'malformed YAML'),
    ('paths:\n  spool_dir: spool\n', 'paths.spool_dir: expected an absolute path'),
    ('proxmox:\n  pvesh_path: /usr/bin/pvesh\n', "did you mean 'proxmox.pvesh'"),
    ('\x00\x01', 'malformed YAML'),
])
def test_bad_config_one_clear_error_no_traceback(tmp_path, content, expected):
    path = tmp_path / 'config.yaml'
    path.write_text(content)
    result = run('--config', str(path), 'config', 'check')
    assert result.returncode == 1
    assert expected in result.stderr
    assert 'Traceback' not in result.stderr + result.stdout


def test_unreadable_named_file(tmp_path):
    result = run('config', 'check', env={'PVE_HOOKS_CONFIG': str(tmp_path)})
    assert result.returncode == 1
    assert 'cannot read the configuration file' in result.stderr


def test_env_precedence_over_file_in_real_process(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text('node: from-file\n')
    result = run('config', 'show', env={'PVE_HOOKS_CONFIG': str(path), 'PVE_HOOKS_NODE': 'from-env'})
    assert result.returncode == 0, result.stderr
    assert '"from-env"' in result.stdout and 'env PVE_HOOKS_NODE' in result.stdout


def test_usage_error_exits_2():
    result = run('config', 'show', '--bogus')
    assert result.returncode == 2
    assert 'No such option' in result.stderr
