"""Unit tests for pve_hooks.hook.settings: the hookscript's never-fatal configuration reader."""

import os

import pytest

from pve_hooks.config import loader as config
from pve_hooks.hook import settings as hookconfig
from pve_hooks.config import schema


def _write(tmp_path, text):
    path = tmp_path / 'config.yaml'
    path.write_text(text)
    return str(path)


def test_constants_match_config_module():
    assert (hookconfig.DEFAULT_FILE, hookconfig.ENV_FILE) == (config.DEFAULT_FILE, config.ENV_FILE)
    assert all(key in schema.BY_KEY for key in hookconfig.HOOK_KEYS)


def test_defaults_come_from_the_schema_when_the_default_file_is_missing(tmp_path):
    values, problems, path = hookconfig.load({}, default_file=str(tmp_path / 'absent.yaml'))
    assert problems == [] and path is None
    assert values == {key: schema.BY_KEY[key].default_value() for key in hookconfig.HOOK_KEYS}


def test_file_values_are_typed_and_env_overrides_them(tmp_path):
    path = _write(tmp_path, 'node: pve7\npaths:\n  spool_dir: /srv/spool\nhook:\n  chain_timeout: 3\n'
                            'accountdb:\n  url: https://x.example\n')
    env = {'PVE_HOOKS_CONFIG': path, 'PVE_HOOKS_OUTBOX__MAX_EVENTS': '12', 'PVE_HOOKS_NODE': 'pve8'}
    values, problems, used = hookconfig.load(env)
    assert problems == [] and used == path
    assert values['paths.spool_dir'] == '/srv/spool'
    assert values['hook.chain_timeout'] == 3.0 and isinstance(values['hook.chain_timeout'], float)
    assert values['outbox.max_events'] == 12
    assert values['node'] == 'pve8'


def test_same_values_as_config_load_for_hook_keys(tmp_path):
    path = _write(tmp_path, 'node: pve7\npaths:\n  spool_dir: "/srv/spool"\nhook:\n  on_error: abort\n'
                            '  chain_on_error: abort\noutbox:\n  max_bytes: 10000\n')
    env = {'PVE_HOOKS_CONFIG': path, 'PVE_HOOKS_HOOK__CHAIN_TIMEOUT': '4.5'}
    full = config.load(env=env)
    values, problems, _ = hookconfig.load(env)
    assert problems == []
    assert values == {key: full[key] for key in hookconfig.HOOK_KEYS}


@pytest.mark.parametrize('text, key, words', [
    ('paths:\n  spool_dir: relative/dir\n', 'paths.spool_dir', 'paths.spool_dir: expected an absolute path'),
    ('node: a b\n', 'node', 'node: expected a node name'),
    ('hook:\n  on_error: explode\n', 'hook.on_error', 'hook.on_error: expected one of continue, abort'),
])
def test_an_invalid_value_keeps_its_default_and_the_valid_ones_apply(tmp_path, text, key, words):
    path = _write(tmp_path, 'outbox:\n  max_events: 5\n' + text)
    values, problems, _ = hookconfig.load({'PVE_HOOKS_CONFIG': path})
    assert len(problems) == 1 and words in problems[0] and path in problems[0]
    assert values['outbox.max_events'] == 5  # a valid option next to the invalid one is honoured
    assert values[key] == schema.BY_KEY[key].default_value()


@pytest.mark.parametrize('text, words, max_events', [
    ('outbox:\n  max_events: 5\nhook:\n  - x\n', 'config.yaml:4: block lists', 5),
    ('[1, 2]\n', 'config.yaml:1: ', schema.BY_KEY['outbox.max_events'].default),
])
def test_a_file_that_cannot_be_parsed_keeps_only_its_simple_lines(tmp_path, text, words, max_events):
    path = _write(tmp_path, text)
    values, problems, _ = hookconfig.load({'PVE_HOOKS_CONFIG': path})
    assert len(problems) == 1 and words in problems[0] and path in problems[0]
    assert values['outbox.max_events'] == max_events


@pytest.mark.parametrize('text', [
    'alerts:\n  command:\n    - /usr/bin/notify\npaths:\n  spool_dir: /srv/spool\n',
    'paths: &p\n  spool_dir: /srv/spool\n  state_dir: *x\n',
    ''.join(' ' * depth + 'k{0}:\n'.format(depth) for depth in range(1200)) + 'paths:\n  spool_dir: /srv/spool\n',
])
def test_the_spool_dir_is_found_where_the_full_parse_fails(tmp_path, text):
    path = _write(tmp_path, text)
    values, problems, used = hookconfig.load({'PVE_HOOKS_CONFIG': path})
    assert values['paths.spool_dir'] == '/srv/spool' and used == path
    assert len(problems) == 1 and 'paths.spool_dir' in problems[0]


def test_the_fallback_scan_ignores_deeper_and_repeated_keys(tmp_path):
    path = _write(tmp_path, 'paths:\n  x:\n    spool_dir: /wrong\n  y: [\nhook:\n  chain_timeout: 3\n'
                            '  chain_timeout: 4\n')
    assert hookconfig.scan_file(path) == {}


def test_named_file_missing_is_a_problem(tmp_path):
    values, problems, used = hookconfig.load({'PVE_HOOKS_CONFIG': str(tmp_path / 'nope.yaml')})
    assert used is None and 'configuration file not found' in problems[0]


def test_unreadable_file_is_a_problem(tmp_path):
    path = tmp_path / 'dir.yaml'
    path.mkdir()  # reading a directory fails even for root
    values, problems, _ = hookconfig.load({'PVE_HOOKS_CONFIG': str(path)})
    assert 'cannot read the configuration file' in problems[0]
    assert values['paths.spool_dir'] == schema.BY_KEY['paths.spool_dir'].default


def test_bad_env_value_keeps_the_default_for_that_key_only(tmp_path):
    path = _write(tmp_path, 'paths:\n  spool_dir: /srv/spool\n')
    values, problems, _ = hookconfig.load({'PVE_HOOKS_CONFIG': path, 'PVE_HOOKS_OUTBOX__MAX_EVENTS': 'lots',
                                           'PVE_HOOKS_NODE': ''})
    assert len(problems) == 2 and 'PVE_HOOKS_OUTBOX__MAX_EVENTS' in problems[0] + problems[1]
    assert values['paths.spool_dir'] == '/srv/spool'
    assert values['outbox.max_events'] == schema.BY_KEY['outbox.max_events'].default


def test_check_file_agrees_for_a_normal_file(tmp_path):
    path = _write(tmp_path, 'node: pve7\npaths:\n  spool_dir: "/srv/spool"\nhook:\n  chain_timeout: 2.5\n')
    assert hookconfig.check_file(path) == []


def test_check_file_reports_what_the_hook_cannot_read(tmp_path):
    path = _write(tmp_path, 'paths:\n  spool_dir: &dir /srv/spool\n')
    [problem] = hookconfig.check_file(path)
    assert 'config.yaml:2:' in problem and 'the hookscript cannot read this file' in problem


def test_check_file_reports_a_disagreement(tmp_path):
    path = _write(tmp_path, 'node: pve1\nhook:\n  chain_timeout: 3\n')
    problems = hookconfig.check_file(path, reference=lambda p: {'node': 1, 'hook': {'chain_timeout': 3.0}})
    assert len(problems) == 2
    assert "node: the hookscript reads 'pve1' but PyYAML reads 1" in problems[0]
    assert 'hook.chain_timeout: the hookscript reads 3 but PyYAML reads 3.0' in problems[1]
