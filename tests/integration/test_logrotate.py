"""The shipped logrotate snippet, run by the real logrotate on a file pve-hooks is writing."""

import logging
import shutil
import subprocess

import pytest

from pve_hooks.config import loader as config
from pve_hooks.observe import logs as logsetup
from tests.support.logstate import restored_logging

SNIPPET = 'debian/pve-hooks.logrotate'


@pytest.fixture
def logrotate():
    program = shutil.which('logrotate') or (shutil.which('logrotate', path='/usr/sbin:/sbin'))
    if program is None:
        pytest.skip('logrotate not installed (apt install logrotate; it is in APT_TEST_PACKAGES)')
    return program


def test_snippet_rotates_a_file_pve_hooks_keeps_writing(logrotate, tmp_path):
    log_dir = tmp_path / 'log'
    log_dir.mkdir(mode=0o755)
    path = log_dir / 'pve-hooks.log'
    with open(SNIPPET) as stream:
        snippet = stream.read()
    assert '/var/log/pve-hooks/*.log {' in snippet
    conf = tmp_path / 'pve-hooks.logrotate'
    conf.write_text(snippet.replace('/var/log/pve-hooks/', str(log_dir) + '/'))

    settings = config.load(env={}, require_file=False, overrides=[
        'logging.target=file', 'logging.file={0}'.format(path), 'logging.backup_count=0'])
    with restored_logging():
        logsetup.configure(settings)
        log = logging.getLogger('pve_hooks.rotate_test')
        log.warning('before rotation')
        completed = subprocess.run([logrotate, '--force', '--state', str(tmp_path / 'state'), str(conf)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert completed.returncode == 0, completed.stderr.decode()
        log.warning('after rotation')

    rotated = (log_dir / 'pve-hooks.log.1').read_text()
    assert rotated.endswith('WARNING before rotation\n')
    current = path.read_bytes()
    assert b'\0' not in current  # append mode: no hole where the old content was
    assert current.decode().splitlines()[0].endswith('WARNING after rotation')
    assert len(current.decode().splitlines()) == 1
