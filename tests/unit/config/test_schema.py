import pytest

from pve_hooks.config import schema


def test_every_option_has_type_default_and_one_line_description():
    for option in schema.OPTIONS:
        assert option.description and '\n' not in option.description, option.key
        default = option.default_value()
        if default is not None:
            assert option.type.convert(default) == default, option.key


def test_keys_are_unique_and_fixed_names_exist():
    keys = [option.key for option in schema.OPTIONS]
    assert len(keys) == len(set(keys))
    for key in ('node', 'accountdb.url', 'accountdb.token_file', 'accountdb.verify_tls', 'accountdb.ca_bundle',
                'paths.spool_dir', 'paths.state_dir', 'proxmox.pvesh', 'proxmox.pve_root', 'logging.level'):
        assert key in schema.BY_KEY


@pytest.mark.parametrize('key, default', [
    ('accountdb.token_file', '/etc/pve-hooks/token'),
    ('accountdb.verify_tls', True),
    ('paths.spool_dir', '/var/spool/pve-hooks'),
    ('paths.state_dir', '/var/lib/pve-hooks'),
    ('proxmox.pvesh', 'pvesh'),
    ('proxmox.pve_root', '/etc/pve'),
    ('metrics.listen', None),
])
def test_documented_defaults(key, default):
    assert schema.BY_KEY[key].default_value() == default


def test_node_default_is_short_hostname(monkeypatch):
    assert '.' not in schema.defaults()['node']
    assert schema.short_hostname() == schema.defaults()['node']


@pytest.mark.parametrize('type_, raw, expected', [
    (schema.Integer(1), '42', 42),
    (schema.Integer(1), 7, 7),
    (schema.Number(0), '1.5', 1.5),
    (schema.Number(0), 2, 2.0),
    (schema.Boolean(), 'yes', True),
    (schema.Boolean(), 'False', False),
    (schema.Boolean(), True, True),
    (schema.Choice('a', 'b'), 'b', 'b'),
    (schema.StringList(), 'a, b,,c', ['a', 'b', 'c']),
    (schema.StringList(), ['a', 1], ['a', '1']),
    (schema.Optional(schema.Path()), '', None),
    (schema.Optional(schema.Path()), 'null', None),
    (schema.Url(), 'https://db.example.com/', 'https://db.example.com'),
    (schema.Listen(), '127.0.0.1:9959', '127.0.0.1:9959'),
])
def test_conversions(type_, raw, expected):
    assert type_.convert(raw) == expected


@pytest.mark.parametrize('type_, raw', [
    (schema.Integer(1), '0'),
    (schema.Integer(1), 'ten'),
    (schema.Integer(), True),
    (schema.Integer(), 1.5),
    (schema.Number(0, 1), '2'),
    (schema.Number(), 'nan'),
    (schema.Number(), 'fast'),
    (schema.Boolean(), 'maybe'),
    (schema.Boolean(), 1),
    (schema.Choice('a', 'b'), 'c'),
    (schema.Path(), 'relative/path'),
    (schema.Url(), 'ftp://x.example'),
    (schema.Listen(), '127.0.0.1'),
    (schema.Listen(), 'host:99999'),
    (schema.String(), {'a': 1}),
    (schema.EndpointPath(), 'api/v1'),
])
def test_rejections_say_expected_and_got(type_, raw):
    with pytest.raises(ValueError) as info:
        type_.convert(raw)
    assert str(info.value).startswith('expected ') and ', got ' in str(info.value)


def test_env_name():
    assert schema.BY_KEY['accountdb.url'].env_name == 'PVE_HOOKS_ACCOUNTDB__URL'
    assert schema.BY_KEY['accountdb.timeout.connect'].env_name == 'PVE_HOOKS_ACCOUNTDB__TIMEOUT__CONNECT'
