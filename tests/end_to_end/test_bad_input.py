"""Scenario 10: bad input — each gets one clear line, its documented exit code, and nothing is lost.

Exit codes (docs/operations.md): the hookscript always exits 0 (unless
hook.on_error: abort, pre-start); ``pve-hooks`` commands exit 1 for a
configuration or token problem and 2 for a usage error; the daemon does NOT
exit for a token problem (it keeps the events and retries; alert + status).
"""

import os
import subprocess

import pytest

from tests.end_to_end.harness import PYTHON, lifecycle, wait_for

HOOK_ARGV = [
    ([], 'expected 2 arguments, got 0'),
    (['100'], 'expected 2 arguments, got 1'),
    (['abc', 'pre-start'], "vmid 'abc'"),
    (['99', 'pre-start'], "vmid '99'"),
    (['1000000000', 'pre-start'], "vmid '1000000000'"),
    (['100', 'bogus'], "phase 'bogus'"),
    (['100', 'pre-start', 'extra'], 'expected 2 arguments, got 3'),
    (['', ''], 'vmid'),
]


def _one_clear_line(text, *needles):
    lines = [line for line in text.splitlines() if line.strip()]
    assert 'Traceback' not in text, text
    assert lines, 'no message at all'
    joined = ' '.join(lines)
    for needle in needles:
        assert needle in joined, '{0!r} not in {1!r}'.format(needle, joined)


def test_hookscript_malformed_argv(make_node):
    node = make_node('pve1')
    node.fire(lifecycle([101], cycles=1))
    before = node.outbox_files('ready')
    for argv, needle in HOOK_ARGV:
        result = subprocess.run(node.hook_command('', '')[:-2] + argv, env=node.hook_env(), capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=30)
        assert result.returncode == 0, argv
        _one_clear_line(result.stderr, 'invalid arguments', needle, 'nothing was recorded')
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert node.outbox_files('ready') == before, 'a malformed call must not add or remove events'


def test_hookscript_malformed_argv_with_on_error_abort_fails_only_pre_start(make_node):
    node = make_node('pve1', settings={'hook.on_error': 'abort'})
    assert node.hook('abc', 'pre-start').returncode == 1
    assert node.hook('abc', 'post-start').returncode == 0


# (name, config file text or None to keep the good one, env, --set) -> text expected in the message
CONFIGS = [
    ('unknown key', 'bogus_section:\n  x: 1\n', {}, [], 'bogus_section.x: unknown option'),
    ('misspelt key', 'delivery:\n  batch_sise: 5\n', {}, [], "did you mean 'delivery.batch_size'"),
    ('wrong type', 'delivery:\n  batch_size: lots\n', {}, [], 'delivery.batch_size: expected an integer'),
    ('out of range', 'delivery:\n  batch_size: 0\n', {}, [], 'delivery.batch_size: expected an integer from 1'),
    ('malformed YAML', 'delivery: [\n', {}, [], 'malformed YAML'),
    ('not a mapping', '- a\n- b\n', {}, [], 'must be a mapping'),
    ('inconsistent thresholds', 'health:\n  rootfs_warning: 0.99\n  rootfs_critical: 0.5\n', {}, [],
     'health.rootfs_warning: 0.99 is above health.rootfs_critical'),
    ('bad environment value', None, {'PVE_HOOKS_RETRY__MAX_DELAY': 'soon'}, [],
     'retry.max_delay: expected a number'),
    ('bad --set value', None, {}, ['--set', 'accountdb.url=ftp://x'], 'accountdb.url: expected an http'),
    ('--set without =', None, {}, ['--set', 'accountdb.url'], "--set 'accountdb.url': expected section.key=value"),
]


@pytest.mark.parametrize('name,text,env,extra,needle', CONFIGS, ids=[c[0] for c in CONFIGS])
def test_invalid_configuration(make_node, name, text, env, extra, needle):
    node = make_node('pve1', settings={'accountdb.url': 'http://127.0.0.1:9'})
    node.fire(lifecycle([101], cycles=1))
    if text is not None:
        mode = 'w' if text.startswith('- ') else 'a'  # a list replaces the whole file
        with open(node.config_file, mode) as stream:
            stream.write(text)
    for command in (['status'], ['reconcile', '--once'], ['reconcile']):
        result = node.cli(*(extra + command), env=env, timeout=30)
        assert result.returncode == 1, (command, result.returncode, result.stderr)
        _one_clear_line(result.stderr, 'invalid configuration', needle)
    assert len(node.outbox_files('ready')) == 4, 'events must survive a bad configuration'


def test_named_configuration_file_missing(make_node):
    node = make_node('pve1')
    node.config_file = os.path.join(node.root, 'missing.yaml')
    result = node.cli('status')
    assert result.returncode == 1
    _one_clear_line(result.stderr, 'missing.yaml: configuration file not found', 'pve-hooks config sample')


def test_configuration_file_unreadable(make_node):
    node = make_node('pve1')
    os.unlink(node.config_file)
    os.mkdir(node.config_file)  # root can read any file; a directory cannot be read as one
    # Named with --config, click rejects it as a usage error (exit 2) ...
    result = node.cli('status')
    assert result.returncode == 2
    _one_clear_line(result.stderr, 'config.yaml', 'is a directory')
    # ... named by PVE_HOOKS_CONFIG, the loader does (exit 1).
    result = subprocess.run(node.prefix + [PYTHON, '-m', 'pve_hooks', 'status'], env=node.env(), text=True,
                            capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    assert result.returncode == 1
    _one_clear_line(result.stderr, 'config.yaml', 'cannot read the configuration file')


@pytest.mark.parametrize('name,text', [
    ('malformed YAML', 'paths: [\n'),
    ('bad value', 'outbox:\n  max_events: lots\n'),
    ('not a mapping', '- a\n'),
])
def test_hookscript_with_an_invalid_configuration_still_records_the_event(make_node, name, text):
    """The hookscript never fails a start for a bad config: it says so and spools anyway.

    (A file that cannot be parsed is ignored as a whole by the hookscript, so
    the spool directory here comes from the environment, as on a node where
    PVE_HOOKS_PATHS__SPOOL_DIR is set; an invalid value only costs that
    option, see test_an_invalid_option_does_not_move_the_spool.)
    """
    node = make_node('pve1')
    with open(node.config_file, 'w') as stream:
        stream.write(text)
    result = node.hook(101, 'pre-start', extra_env={'PVE_HOOKS_PATHS__SPOOL_DIR': node.spool_dir,
                                                    'PVE_HOOKS_HOOK__JOURNAL_SOCKET': node.journal.path})
    assert result.returncode == 0
    _one_clear_line(result.stderr, 'config.yaml', 'config check')
    assert len(node.outbox_files('ready')) == 1, 'the event must be spooled despite the bad configuration'


def test_an_invalid_option_does_not_move_the_spool(make_node):
    """A bad value next to a valid paths.spool_dir: the event still lands where the daemon reads."""
    node = make_node('pve1')
    node.write_config({'hook.chain_timeout': 'soon'})
    result = node.hook(101, 'pre-start', extra_env={'PVE_HOOKS_HOOK__JOURNAL_SOCKET': node.journal.path})
    assert result.returncode == 0
    _one_clear_line(result.stderr, 'hook.chain_timeout', 'config check')
    assert len(node.outbox_files('ready')) == 1, 'the event must be in the configured spool'


TOKENS = [
    ('missing', lambda path: os.unlink(path), 'token file not found'),
    ('readable by others', lambda path: os.chmod(path, 0o644), 'chmod 600'),
    ('not owned by root', lambda path: os.chown(path, 1000, 1000), 'chown root:root'),
    ('empty', lambda path: open(path, 'w').close(), 'token file is empty'),
    ('a directory', lambda path: (os.unlink(path), os.mkdir(path, 0o700)), 'not a regular file'),
]


@pytest.mark.parametrize('name,spoil,needle', TOKENS, ids=[t[0] for t in TOKENS])
def test_bad_token_file(accountdb, make_node, name, spoil, needle):
    if os.geteuid() != 0 and name == 'not owned by root':
        pytest.skip('needs root to chown')
    node = make_node('pve1', accountdb)
    events = lifecycle([101], cycles=1)
    node.fire(events)
    spoil(node.token_file)

    once = node.cli('reconcile', '--once')
    assert once.returncode == 1
    assert 'Traceback' not in once.stderr
    assert needle in once.stderr and node.token_file in once.stderr, once.stderr

    # The daemon stays up, keeps the events, says why in status, and delivers once fixed.
    node.start_daemon()
    wait_for(lambda: needle in str(node.status()['daemon'].get('last_error')), 20,
             'status to show the token problem', seen=lambda: node.status()['daemon'])
    assert node.daemon_alive(), node.log_tail()
    wait_for(lambda: node.pending() == len(events), 5, 'every event to wait', seen=node.pending)
    assert 'Traceback' not in node.log_text()
    if os.path.isdir(node.token_file):
        os.rmdir(node.token_file)
    node.set_token(accountdb.token)
    wait_for(lambda: node.pending() == 0, 30, 'delivery once the token file is fixed', seen=node.log_tail)
    assert node.stop_daemon() == 0


def test_usage_errors_exit_2(make_node):
    node = make_node('pve1')
    for argv in (['--bogus', 'status'], ['no-such-command'], ['status', '--nope'], ['reconcile', 'extra']):
        result = node.cli(*argv)
        assert result.returncode == 2, (argv, result.returncode, result.stderr)
        assert 'Traceback' not in result.stderr and 'Error:' in result.stderr
