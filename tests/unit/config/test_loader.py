import os

import pytest

from pve_hooks.config import loader as config


def write(path, text):
    path.write_text(text)
    return str(path)


def test_defaults_without_file(tmp_path):
    settings = config.load(env={}, require_file=False, config_file=str(tmp_path / 'absent.yaml'))
    assert settings['paths.spool_dir'] == '/var/spool/pve-hooks'
    assert settings.sources['paths.spool_dir'] == 'default'
    assert settings.file is None


def test_missing_default_file_is_fine(monkeypatch, tmp_path):
    monkeypatch.setattr(config, 'DEFAULT_FILE', str(tmp_path / 'config.yaml'))
    settings = config.load(env={})
    assert settings['accountdb.url'] is None


def test_missing_named_file_is_an_error(tmp_path):
    missing = str(tmp_path / 'nope.yaml')
    with pytest.raises(config.ConfigError) as info:
        config.load(config_file=missing, env={})
    assert missing in info.value.errors[0] and 'not found' in info.value.errors[0]
    with pytest.raises(config.ConfigError):
        config.load(env={'PVE_HOOKS_CONFIG': missing})


def test_precedence_file_env_cli(tmp_path):
    path = write(tmp_path / 'c.yaml', 'accountdb:\n  timeout:\n    connect: 2\n    read: 9\n'
                                      'delivery:\n  batch_size: 10\n')
    env = {'PVE_HOOKS_ACCOUNTDB__TIMEOUT__CONNECT': '3', 'PVE_HOOKS_DELIVERY__BATCH_SIZE': '20'}
    settings = config.load(config_file=path, env=env, overrides=['delivery.batch_size=30'])
    assert settings['accountdb.timeout.read'] == 9.0
    assert settings.sources['accountdb.timeout.read'] == path
    assert settings['accountdb.timeout.connect'] == 3.0
    assert settings.sources['accountdb.timeout.connect'] == 'env PVE_HOOKS_ACCOUNTDB__TIMEOUT__CONNECT'
    assert settings['delivery.batch_size'] == 30
    assert settings.sources['delivery.batch_size'] == 'cli --set'


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path / 'c.yaml', 'node: pve7\n')
    assert config.load(env={'PVE_HOOKS_CONFIG': path})['node'] == 'pve7'


def test_types_are_converted_from_env_and_cli(tmp_path):
    settings = config.load(config_file=write(tmp_path / 'c.yaml', ''), env={
        'PVE_HOOKS_ACCOUNTDB__VERIFY_TLS': 'no', 'PVE_HOOKS_HEALTH__SERVICES': 'a,b'},
        overrides=['metrics.listen=127.0.0.1:9959', 'alerts.command=/bin/logger,-t,x'])
    assert settings['accountdb.verify_tls'] is False
    assert settings['health.services'] == ['a', 'b']
    assert settings['metrics.listen'] == '127.0.0.1:9959'
    assert settings['alerts.command'] == ['/bin/logger', '-t', 'x']


def test_every_error_is_collected_with_key_and_source(tmp_path):
    path = write(tmp_path / 'c.yaml', 'accountdb:\n  timeout:\n    connect: fast\n  verify_tls: maybe\n'
                                      'paths:\n  spool_dir: relative\n')
    with pytest.raises(config.ConfigError) as info:
        config.load(config_file=path, env={'PVE_HOOKS_DELIVERY__BATCH_SIZE': '0'},
                    overrides=['logging.level=loud', 'nonsense'])
    errors = info.value.errors
    assert "accountdb.timeout.connect: expected a number from 0.1 to 300, got 'fast' (from {0})".format(
        path) in errors
    assert any(e.startswith('accountdb.verify_tls: expected true or false') for e in errors)
    assert any(e.startswith('paths.spool_dir: expected an absolute path') for e in errors)
    assert any(e.startswith('delivery.batch_size:') and 'env PVE_HOOKS_DELIVERY__BATCH_SIZE' in e for e in errors)
    assert any(e.startswith('logging.level:') and 'cli --set' in e for e in errors)
    assert any("--set 'nonsense'" in e for e in errors)
    assert len(errors) == 6


@pytest.mark.parametrize('text, key, hint', [
    ('acountdb:\n  url: https://x.example\n', 'acountdb.url', 'accountdb.url'),
    ('paths:\n  spool: /x\n', 'paths.spool', 'paths.spool_dir'),
    ('delivery:\n  batchsize: 5\n', 'delivery.batchsize', 'delivery.batch_size'),
])
def test_unknown_keys_get_did_you_mean(tmp_path, text, key, hint):
    with pytest.raises(config.ConfigError) as info:
        config.load(config_file=write(tmp_path / 'c.yaml', text), env={})
    (error,) = info.value.errors
    assert error.startswith(key + ': unknown option') and "did you mean '{0}'".format(hint) in error


def test_unknown_env_variable_is_an_error():
    with pytest.raises(config.ConfigError) as info:
        config.load(env={'PVE_HOOKS_ACCOUNTDB__URLL': 'https://x.example'}, require_file=False)
    assert 'env PVE_HOOKS_ACCOUNTDB__URLL' in info.value.errors[0]
    assert "did you mean 'accountdb.url'" in info.value.errors[0]


def test_malformed_yaml_reports_file_line_and_column(tmp_path):
    path = write(tmp_path / 'c.yaml', 'accountdb:\n  url: [unclosed\nnode: x\n')
    with pytest.raises(config.ConfigError) as info:
        config.load(config_file=path, env={})
    (error,) = info.value.errors
    assert error.startswith(path + ', line ') and ', column ' in error and 'malformed YAML' in error


@pytest.mark.parametrize('text', ['- a\n- b\n', 'just a string\n'])
def test_top_level_must_be_a_mapping(tmp_path, text):
    with pytest.raises(config.ConfigError) as info:
        config.load(config_file=write(tmp_path / 'c.yaml', text), env={})
    assert 'must be a mapping' in info.value.errors[0]


def test_section_given_a_scalar_value_is_unknown_key_not_crash(tmp_path):
    with pytest.raises(config.ConfigError) as info:
        config.load(config_file=write(tmp_path / 'c.yaml', 'accountdb: 5\n'), env={})
    assert info.value.errors[0].startswith('accountdb: unknown option')


def test_mapping_given_for_scalar_option(tmp_path):
    with pytest.raises(config.ConfigError) as info:
        config.load(config_file=write(tmp_path / 'c.yaml', 'node:\n  name: x\n'), env={})
    assert info.value.errors[0].startswith('node: expected a string')


def test_empty_file_gives_defaults(tmp_path):
    assert config.load(config_file=write(tmp_path / 'c.yaml', '# nothing\n'), env={})['hook.on_error'] == 'continue'


def test_cross_checks(tmp_path):
    with pytest.raises(config.ConfigError) as info:
        config.load(env={}, require_file=False, overrides=['health.rootfs_warning=0.99', 'logging.target=file'])
    text = '\n'.join(info.value.errors)
    assert 'health.rootfs_warning: 0.99 is above health.rootfs_critical' in text
    assert 'logging.file: must be set when logging.target is file' in text


def test_endpoint_substitutes_node():
    settings = config.load(env={}, require_file=False, overrides=['node=pve3'])
    assert settings.endpoint('inventory') == '/api/v1/nodes/pve3/inventory'
    assert settings.endpoint('events') == '/api/v1/events'


class TestToken:
    def make(self, tmp_path, text='s3cr3t-token\n', mode=0o600):
        path = tmp_path / 'token'
        path.write_text(text)
        os.chmod(path, mode)
        return str(path)

    def test_reads_and_strips(self, tmp_path):
        assert config.read_token(self.make(tmp_path)) == 's3cr3t-token'

    @pytest.mark.parametrize('mode', [0o640, 0o604, 0o660, 0o644])
    def test_refuses_group_or_other_access_with_chmod_fix(self, tmp_path, mode):
        path = self.make(tmp_path, mode=mode)
        with pytest.raises(config.TokenError) as info:
            config.read_token(path)
        assert 'chmod 600 ' + path in str(info.value)
        assert 's3cr3t' not in str(info.value)

    def test_refuses_non_root_owner(self, tmp_path):
        path = self.make(tmp_path)
        os.chown(path, 1000, 1000)
        with pytest.raises(config.TokenError) as info:
            config.read_token(path)
        assert 'owned by root' in str(info.value) and 'chown root:root' in str(info.value)

    def test_missing_empty_and_multiword(self, tmp_path):
        with pytest.raises(config.TokenError, match='token file not found'):
            config.read_token(str(tmp_path / 'none'))
        with pytest.raises(config.TokenError, match='empty'):
            config.read_token(self.make(tmp_path, text='\n'))
        with pytest.raises(config.TokenError, match='one token') as info:
            config.read_token(self.make(tmp_path, text='two words\n'))
        assert 'two' not in str(info.value)

    def test_directory_is_refused(self, tmp_path):
        with pytest.raises(config.TokenError, match='not a regular file'):
            config.read_token(str(tmp_path))
