import json
import os

import yaml
from click.testing import CliRunner

from pve_hooks.config import loader as config
from pve_hooks.config import schema
from pve_hooks.cli import main
from pve_hooks.cli.config_cmd import redact_userinfo


def invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_check_valid_exits_0(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('node: pve1\n')
    result = invoke('--config', str(path), 'config', 'check')
    assert result.exit_code == 0, result.output
    assert 'configuration OK' in result.output


def test_check_lists_every_error_exits_1(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('delivery:\n  batch_size: lots\nlogging:\n  levle: debug\n')
    result = invoke('--config', str(path), '--set', 'retry.max_delay=x', 'config', 'check')
    assert result.exit_code == 1
    assert 'delivery.batch_size: expected an integer' in result.output
    assert "logging.levle: unknown option" in result.output and "did you mean 'logging.level'" in result.output
    assert 'retry.max_delay: expected a number' in result.output
    assert 'Traceback' not in result.output


def test_other_commands_report_bad_config_without_traceback(tmp_path):
    result = invoke('--set', 'outbox.max_events=-1', 'config', 'show')
    assert result.exit_code == 1
    assert 'outbox.max_events' in result.output and 'Traceback' not in result.output


def test_show_json_has_value_and_source(tmp_path):
    result = invoke('--set', 'node=pve9', 'config', 'show', '--json',
                    env={'PVE_HOOKS_DELIVERY__BATCH_SIZE': '7', 'PVE_HOOKS_CONFIG': ''})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data['node'] == {'value': 'pve9', 'source': 'cli --set'}
    assert data['delivery.batch_size'] == {'value': 7, 'source': 'env PVE_HOOKS_DELIVERY__BATCH_SIZE'}
    assert data['paths.state_dir']['source'] == 'default'
    assert set(data) == set(schema.BY_KEY)


def test_show_never_prints_the_token_or_url_password(tmp_path):
    token = tmp_path / 'token'
    token.write_text('TOPSECRET-123\n')
    os.chmod(token, 0o600)
    result = invoke('--set', 'accountdb.token_file={0}'.format(token),
                    '--set', 'accountdb.url=https://agent:hunter2@db.example.com', 'config', 'show')
    # Credentials in the URL are refused (the token file is the only credential), without echoing them.
    assert result.exit_code != 0
    assert 'credentials in the URL are not allowed' in result.output
    assert 'TOPSECRET' not in result.output and 'hunter2' not in result.output
    result = invoke('--set', 'accountdb.token_file={0}'.format(token),
                    '--set', 'accountdb.url=https://db.example.com', 'config', 'show')
    assert result.exit_code == 0
    assert 'TOPSECRET' not in result.output
    assert str(token) in result.output


def test_redact_userinfo():
    assert redact_userinfo('https://u:p@h/x') == 'https://u:<secret>@h/x'
    assert redact_userinfo('https://h/x@y') == 'https://h/x@y'
    assert redact_userinfo('/etc/pve') == '/etc/pve'


def test_sample_is_valid_yaml_and_every_option_round_trips(tmp_path):
    result = invoke('config', 'sample')
    assert result.exit_code == 0
    assert yaml.safe_load(result.output) is None  # everything commented out
    uncommented = '\n'.join(line[2:] if line.startswith('# ') else line[1:]
                            for line in result.output.splitlines()
                            if line.startswith('#') and not line.lstrip('# ').startswith('#')
                            and not line.startswith('# #') and ':' in line and not line.startswith('# pve-hooks')
                            and 'PVE_HOOKS' not in line and 'token never' not in line)
    path = tmp_path / 'c.yaml'
    path.write_text(uncommented)
    settings = config.load(config_file=str(path), env={})
    for option in schema.OPTIONS:
        assert settings.sources[option.key] == str(path), option.key
        if not isinstance(option.default, schema.Computed):
            assert settings[option.key] == option.default_value(), option.key


def test_every_command_has_help():
    import click

    def walk(command, path):
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, path + [name])

    for path, command in walk(main, []):
        result = CliRunner().invoke(main, path + ['--help'])
        assert result.exit_code == 0, path
        assert command.help and command.help.strip(), 'no help for ' + ' '.join(path)
