"""Unit tests for pve_hooks.statedir: atomic JSON state files."""

import json
import logging
import os
import stat

import pytest

from pve_hooks import statedir as state


def test_write_then_read_round_trip_with_private_mode(tmp_path):
    path = str(tmp_path / 'sub' / 'thing.json')
    state.write_json(path, {'a': 1, 'b': [1, 2], 'c': None})
    assert state.read_json(path) == {'a': 1, 'b': [1, 2], 'c': None}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(tmp_path / 'sub')).st_mode) == 0o700
    assert os.listdir(str(tmp_path / 'sub')) == ['thing.json']  # no temporary file left


def test_write_replaces_whole_file_and_honours_mode(tmp_path):
    path = str(tmp_path / 'thing.json')
    state.write_json(path, {'long': 'x' * 1000})
    state.write_json(path, {'short': 1}, mode=0o644)
    with open(path) as stream:
        assert json.load(stream) == {'short': 1}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_missing_file_reads_as_default(tmp_path):
    assert state.read_json(str(tmp_path / 'none.json')) is None
    assert state.read_json(str(tmp_path / 'none.json'), {'x': 1}) == {'x': 1}


@pytest.mark.parametrize('content', [b'{not json', b'[1, 2]', b'\xff\xfe', b''])
def test_corrupt_file_reads_as_default_with_one_warning(tmp_path, caplog, content):
    path = tmp_path / 'bad.json'
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger='pve_hooks.statedir'):
        assert state.read_json(str(path), {}) == {}
    warnings = [r.getMessage() for r in caplog.records if r.name == 'pve_hooks.statedir']
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert path.exists()  # left for inspection


def test_leftover_temporary_file_of_same_pid_is_replaced(tmp_path):
    path = str(tmp_path / 'thing.json')
    with open('{0}.tmp.{1}'.format(path, os.getpid()), 'w') as stream:
        stream.write('garbage')
    state.write_json(path, {'ok': True})
    assert state.read_json(path) == {'ok': True}
    assert sorted(os.listdir(str(tmp_path))) == ['thing.json']


def test_unserialisable_data_raises_and_keeps_old_content(tmp_path):
    path = str(tmp_path / 'thing.json')
    state.write_json(path, {'old': 1})
    with pytest.raises(TypeError):
        state.write_json(path, {'bad': object()})
    assert state.read_json(path) == {'old': 1}
    assert os.listdir(str(tmp_path)) == ['thing.json']


def test_atomic_write_sets_the_mode_whatever_the_umask(tmp_path):
    path = str(tmp_path / 'metrics.prom')
    old = os.umask(0o077)
    try:
        state.atomic_write(path, b'x 1\n', 0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    with open(path, 'rb') as stream:
        assert stream.read() == b'x 1\n'


def test_atomic_write_does_not_follow_a_planted_temporary_symlink(tmp_path):
    target = tmp_path / 'elsewhere'
    target.write_text('keep')
    path = tmp_path / 'thing.json'
    os.symlink(str(target), '{0}.tmp.{1}'.format(path, os.getpid()))
    state.write_json(str(path), {'a': 1})
    assert target.read_text() == 'keep' and state.read_json(str(path)) == {'a': 1}


def test_path_names_a_file_in_the_state_directory():
    assert state.path({'paths.state_dir': '/var/lib/pve-hooks'}, state.BREAKER) == '/var/lib/pve-hooks/breaker.json'


def test_read_json_does_not_follow_a_symlink(tmp_path, caplog):
    target = tmp_path / 'elsewhere.json'
    target.write_text('{"planted": true}')
    os.symlink(str(target), str(tmp_path / 'breaker.json'))
    assert state.read_json(str(tmp_path / 'breaker.json'), {'default': 1}) == {'default': 1}
    assert 'a symbolic link, not followed' in caplog.text


def test_read_json_of_a_fifo_returns_at_once(tmp_path, caplog):
    os.mkfifo(str(tmp_path / 'inventory.json'))
    assert state.read_json(str(tmp_path / 'inventory.json'), {}) == {}
    assert 'not a regular file' in caplog.text


def test_read_json_of_deeply_nested_content_is_the_default(tmp_path):
    (tmp_path / 'x.json').write_text('[' * 60000)
    assert state.read_json(str(tmp_path / 'x.json'), {}) == {}


def test_secure_dir_fixes_our_writable_directory_and_refuses_a_foreign_one(tmp_path, caplog):
    import stat

    directory = tmp_path / 'state'
    directory.mkdir(mode=0o700)
    os.chmod(str(directory), 0o777)
    assert state.secure_dir(str(directory)) == 0o755
    assert stat.S_IMODE(os.stat(str(directory)).st_mode) == 0o755
    assert '(mode 0777); changed to 0755' in caplog.text
    assert state.secure_dir(str(directory)) is None
    with pytest.raises(state.UnsafeDirectory, match='owned by uid .*, not uid 7; fix: chown 7 '):
        state.secure_dir(str(directory), geteuid=lambda: 7)
    (tmp_path / 'file').write_text('')
    with pytest.raises(state.UnsafeDirectory, match='not a directory'):
        state.secure_dir(str(tmp_path / 'file'))


def test_clamp_future_pulls_times_ahead_of_the_clock_back_to_now():
    record = {'heartbeat_at': 2000.0, 'fetched_at': 500, 'failing_since': 3000, 'count_at_x': True, 'name': 'x',
              'nested': {'read_at': 9999}, 'stopped_at': None}
    assert state.clamp_future(record, 1000.0) == {
        'heartbeat_at': 1000.0, 'fetched_at': 500, 'failing_since': 1000.0, 'count_at_x': True, 'name': 'x',
        'nested': {'read_at': 1000.0}, 'stopped_at': None}
