"""Unit tests for pve_hooks.observe.logs: formatting, fields, redaction, targets, repeat summaries."""

import io
import logging
import os

import pytest

from pve_hooks.config import loader as config
from pve_hooks.observe import logs as logsetup
from tests.support.logstate import restored_logging


@pytest.fixture
def settings(tmp_path):
    def make(**overrides):
        pairs = ['{0}={1}'.format(key.replace('__', '.'), value) for key, value in overrides.items()]
        return config.load(config_file=None, env={}, overrides=pairs, require_file=False)
    return make


@pytest.fixture(autouse=True)
def clean_logging():
    """Leave the root logger and the secret registry as they were."""
    with restored_logging():
        yield
    logsetup.clear_secrets()


def configured(settings, **overrides):
    stream = io.StringIO()
    logsetup.configure(settings(**overrides), stream=stream, socket_path='/nonexistent/socket')
    return stream


def test_stderr_line_has_level_message_and_fields(settings):
    stream = configured(settings, logging__target='stderr')
    logging.getLogger('pve_hooks.test').warning('AccountDB unreachable (%s); %d events kept', 'refused', 3,
                                                extra={'VMID': 100, 'PHASE': 'pre-start', 'lower': 'x'})
    assert stream.getvalue() == 'WARNING AccountDB unreachable (refused); 3 events kept phase=pre-start vmid=100\n'


def test_default_stream_is_the_current_stderr(settings, monkeypatch):
    logsetup.configure(settings(logging__target='stderr'), socket_path='/nonexistent/socket')
    later = io.StringIO()
    monkeypatch.setattr('sys.stderr', later)
    logging.getLogger('x').warning('to the stderr of now')
    assert later.getvalue() == 'WARNING to the stderr of now\n'


def test_level_is_applied(settings):
    stream = configured(settings, logging__target='stderr', logging__level='warning')
    log = logging.getLogger('pve_hooks.test')
    log.info('hidden')
    log.error('shown')
    assert stream.getvalue() == 'ERROR shown\n'


def test_auto_without_journal_socket_is_stderr(settings):
    assert logsetup.resolve_target(settings(), socket_path='/nonexistent/socket') == 'stderr'


def test_auto_with_journal_socket_is_journal_when_systemd_imports(settings, tmp_path):
    pytest.importorskip('systemd.journal')
    socket_path = tmp_path / 'socket'
    socket_path.write_text('')
    assert logsetup.resolve_target(settings(), socket_path=str(socket_path)) == 'journal'


def test_journal_target_without_journald_falls_back_to_stderr(settings):
    stream = configured(settings, logging__target='journal')
    logging.getLogger('x').warning('still seen')
    assert stream.getvalue().splitlines() == [
        'ERROR logging.target is journal but journald is not running here (/nonexistent/socket does not exist); '
        'logging to stderr instead',
        'WARNING still seen']


def test_reconfigure_replaces_own_handler_only(settings):
    root = logging.getLogger()
    before = len(root.handlers)
    first = configured(settings, logging__target='stderr')
    second = configured(settings, logging__target='stderr')
    assert len(root.handlers) == before + 1
    logging.getLogger('x').warning('once')
    assert first.getvalue() == ''
    assert second.getvalue() == 'WARNING once\n'


def test_multiline_message_becomes_one_line(settings):
    stream = configured(settings, logging__target='stderr')
    logging.getLogger('x').error('first\nsecond\r\nthird')
    assert stream.getvalue() == 'ERROR first second third\n'


def test_field_values_with_spaces_are_quoted(settings):
    stream = configured(settings, logging__target='stderr')
    logging.getLogger('x').warning('m', extra={'NODE': 'a b', 'EVENT_ID': '', 'VMID': None})
    assert stream.getvalue() == 'WARNING m event_id="" node="a b"\n'


def test_registered_secret_is_redacted_everywhere(settings):
    stream = configured(settings, logging__target='stderr')
    logsetup.register_secret('s3cr3t-t0ken')
    log = logging.getLogger('x')
    log.warning('header Bearer %s', 's3cr3t-t0ken', extra={'NODE': 'x-s3cr3t-t0ken'})
    try:
        raise ValueError('bad token s3cr3t-t0ken')
    except ValueError:
        log.exception('request failed with s3cr3t-t0ken')
    text = stream.getvalue()
    assert 's3cr3t-t0ken' not in text
    assert text.count('<redacted>') == 5  # message, field, traceback source line and text
    assert 'ValueError: bad token <redacted>' in text


def test_redaction_freezes_message_and_drops_args():
    logsetup.register_secret('abc123')
    record = logging.LogRecord('x', logging.INFO, __file__, 1, 'token %s and %d', ('abc123', 5), None)
    assert logsetup.RedactFilter().filter(record) is True
    assert record.msg == 'token <redacted> and 5'
    assert record.args == ()


def test_bad_format_string_keeps_the_record():
    record = logging.LogRecord('x', logging.INFO, __file__, 1, 'needs %d', ('text',), None)
    logsetup.RedactFilter().filter(record)
    assert 'bad log format' in record.msg and 'needs %d' in record.msg


def test_secret_schema_options_are_registered(settings, monkeypatch):
    from pve_hooks.config import schema
    option = schema.Option('test.password', schema.String(), None, 'A secret for this test.', secret=True)
    monkeypatch.setitem(schema.BY_KEY, option.key, option)
    values = settings()
    values[option.key] = 'value-from-settings'
    stream = io.StringIO()
    logsetup.configure(values, stream=stream, socket_path='/nonexistent')
    logging.getLogger('x').warning('leak value-from-settings')
    assert stream.getvalue() == 'WARNING leak <redacted>\n'


def test_file_target_rotates_by_size(settings, tmp_path):
    path = tmp_path / 'pve-hooks.log'
    configured(settings, logging__target='file', logging__file=str(path), logging__max_bytes=1024,
               logging__backup_count=2)
    log = logging.getLogger('x')
    for number in range(100):
        log.warning('line %03d %s', number, 'x' * 40)
    names = sorted(os.listdir(tmp_path))
    assert names == ['pve-hooks.log', 'pve-hooks.log.1', 'pve-hooks.log.2']
    last = path.read_text().splitlines()[-1]
    assert ' pve-hooks[{0}]: WARNING line 099 '.format(os.getpid()) in last
    assert all(os.path.getsize(tmp_path / name) <= 1024 for name in names)


def test_file_target_with_no_backups_never_rotates(settings, tmp_path):
    path = tmp_path / 'pve-hooks.log'
    configured(settings, logging__target='file', logging__file=str(path), logging__max_bytes=1024,
               logging__backup_count=0)
    for number in range(100):
        logging.getLogger('x').warning('line %03d %s', number, 'x' * 40)
    assert os.listdir(tmp_path) == ['pve-hooks.log']
    assert path.stat().st_size > 1024


def test_unopenable_log_file_falls_back_to_stderr_with_one_error(settings, tmp_path):
    missing = tmp_path / 'missing' / 'pve-hooks.log'
    stream = configured(settings, logging__target='file', logging__file=str(missing))
    logging.getLogger('x').warning('still logged')
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith('ERROR cannot open log file {0} (No such file or directory)'.format(missing))
    assert lines[1] == 'WARNING still logged'


def test_journal_handler_sends_fields_priority_and_identifier():
    sent = []
    handler = logsetup.JournalHandler('pve-hooks-test', send=lambda message, **fields: sent.append(
        (message, fields)))
    handler.addFilter(logsetup.RedactFilter())
    logger = logging.getLogger('pve_hooks.journal_test')
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.critical('dropped %d events', 3, extra={'VMID': 100, 'BATCH_SIZE': 3, 'DRY': True,
                                                      'PRIORITY': 'ignored', 'lower': 1})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    message, fields = sent[0]
    assert message == 'dropped 3 events'
    assert fields['PRIORITY'] == '2'
    assert fields['SYSLOG_IDENTIFIER'] == 'pve-hooks-test'
    assert fields['VMID'] == '100' and fields['BATCH_SIZE'] == '3' and fields['DRY'] == 'true'
    assert fields['LOGGER'] == 'pve_hooks.journal_test'
    assert 'lower' not in fields and 'CODE_ARGS' not in fields and 'msg' not in fields


@pytest.mark.parametrize('level, expected', [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4),
                                             (logging.ERROR, 3), (logging.CRITICAL, 2), (5, 7), (35, 4)])
def test_priority(level, expected):
    assert logsetup.priority(level) == expected


@pytest.mark.parametrize('name, ok', [('VMID', True), ('EVENT_ID', True), ('A1', True), ('vmid', False),
                                      ('_PID', False), ('1A', False), ('A-B', False), ('', False),
                                      ('A' * 65, False)])
def test_is_field_name(name, ok):
    assert logsetup.is_field_name(name) is ok


@pytest.mark.parametrize('seconds, text', [(0, '0 s'), (0.25, '250 ms'), (40, '40 s'), (300, '5 min'),
                                           (7200, '2 h'), (3 * 86400, '3 d')])
def test_format_duration(seconds, text):
    assert logsetup.format_duration(seconds) == text


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_repeat_summariser_logs_once_then_a_summary_per_window():
    clock = Clock()
    repeats = logsetup.RepeatSummariser(window=300, clock=clock)
    first = repeats.failed('accountdb', 'connection refused')
    assert first and first.suffix == ''
    decisions = []
    for _ in range(37):
        clock.now += 5
        decisions.append(repeats.failed('accountdb', 'connection refused'))
    assert not any(decisions)
    clock.now = 1000.0 + 300
    summary = repeats.failed('accountdb', 'connection refused')
    assert summary.log and summary.suppressed == 37
    assert summary.suffix == '; same failure 37 more times in the last 5 min'
    clock.now += 1
    assert not repeats.failed('accountdb', 'connection refused')
    assert repeats.succeeded('accountdb') == 40
    assert repeats.succeeded('accountdb') == 0
    assert repeats.failed('accountdb', 'connection refused').log


def test_repeat_summariser_logs_a_different_failure_at_once():
    clock = Clock()
    repeats = logsetup.RepeatSummariser(window=300, clock=clock)
    repeats.failed('accountdb', 'connection refused')
    repeats.failed('accountdb', 'connection refused')
    changed = repeats.failed('accountdb', 'HTTP 503')
    assert changed.log and changed.suppressed == 1 and changed.changed
    assert changed.suffix == '; the previous failure happened 1 more time in the last 0 s'


def test_repeat_summariser_keys_are_independent():
    repeats = logsetup.RepeatSummariser(window=300, clock=Clock())
    assert repeats.failed('accountdb')
    assert repeats.failed('pvesh')
    assert not repeats.failed('accountdb')
    assert repeats.failing() == ['accountdb', 'pvesh']


def test_non_string_field_values_are_redacted_too():
    class Header:
        def __str__(self):
            return 'Bearer abc123secret'

    logsetup.register_secret('abc123secret')
    record = logging.LogRecord('x', logging.INFO, __file__, 1, 'm', (), None)
    record.AUTH_HEADER = Header()
    logsetup.RedactFilter().filter(record)
    assert logsetup.record_fields(record) == {'AUTH_HEADER': 'Bearer <redacted>'}
