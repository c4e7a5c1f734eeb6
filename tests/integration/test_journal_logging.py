"""pve-hooks logging into a real (private) systemd-journald, read back with journalctl -o json.

The process under test runs inside the private journal's mount namespace, so
``logging.target: auto`` finds /run/systemd/journal/socket and uses the
journal exactly as on a Proxmox node. Run in .venv and .venv-debian: the
handler must behave the same on python3-systemd 235 from Debian and on
systemd-python from PyPI.
"""

import os
import sys
import textwrap

import pytest

from tests.support.journald import PrivateJournal, journal_or_skip, run_with_journal

pytestmark = pytest.mark.privileged

TOKEN = 'tok-3f9a1c77e2b54d0c'

CHILD = textwrap.dedent('''
    import logging, os, sys
    from pve_hooks.observe import alerts
    from pve_hooks.config import loader as config
    from pve_hooks.observe import logs as logsetup
    TOKEN = os.environ['TEST_TOKEN']  # not on the command line: journald records _CMDLINE
    settings = config.load(env={}, require_file=False, overrides=['node=pve1'] + sys.argv[1:])
    logsetup.configure(settings, identifier='pve-hooks')
    logsetup.register_secret(TOKEN)
    log = logging.getLogger('pve_hooks.child')
    log.debug('debug detail not shown at info', extra={'VMID': 100})
    log.info('event spooled', extra={'VMID': 100, 'PHASE': 'pre-start', 'EVENT_ID': 'e-1', 'NODE': 'pve1'})
    log.warning('AccountDB unreachable (%s); %d events kept in outbox, next try in 40 s', 'connection refused', 3,
                extra={'BATCH_SIZE': 3, 'BREAKER_STATE': 'open', 'DURATION_MS': 12, 'HTTP_STATUS': None})
    log.error('AccountDB answered %d with token %s', 503, TOKEN, extra={'VMID': 101, 'HTTP_STATUS': 503})
    try:
        raise RuntimeError('unexpected ' + TOKEN)
    except RuntimeError:
        log.exception('delivery pass failed; next pass in 1 s')
    alerts.Alerter(settings).dead_letters(2)
    print('done')
''')
ENV = dict(os.environ, TEST_TOKEN=TOKEN)


@pytest.fixture(scope='module')
def journal_run():
    journal_or_skip()
    with PrivateJournal() as journal:
        completed = journal.run([sys.executable, '-c', CHILD], env=ENV, capture_output=True)
        assert completed.returncode == 0, completed.stderr.decode()
        records = journal.records(identifier='pve-hooks')
        vmid_100 = journal.records('VMID=100', identifier='pve-hooks')
        alert = journal.records('ALERT=dead_letters', '-p', 'crit', identifier='pve-hooks')
        everything = journal.text()
    return completed, records, vmid_100, alert, everything


def test_auto_target_logs_to_the_journal_not_stderr(journal_run):
    completed, records, *_ = journal_run
    assert completed.stdout == b'done\n'
    assert completed.stderr == b''
    assert [record['MESSAGE'] for record in records] == [
        'event spooled',
        'AccountDB unreachable (connection refused); 3 events kept in outbox, next try in 40 s',
        'AccountDB answered 503 with token <redacted>',
        'delivery pass failed; next pass in 1 s',
        'ALERT dead_letters: 2 events rejected by AccountDB are in the dead directory; see pve-hooks outbox '
        'list --dead',
    ]


def test_records_carry_identifier_priority_and_code_location(journal_run):
    records = journal_run[1]
    assert {record['SYSLOG_IDENTIFIER'] for record in records} == {'pve-hooks'}
    assert [record['PRIORITY'] for record in records] == ['6', '4', '3', '3', '2']
    assert records[0]['LOGGER'] == 'pve_hooks.child'
    assert records[-1]['LOGGER'] == 'pve_hooks.observe.alerts'
    assert records[-1]['CODE_FILE'].endswith('pve_hooks/observe/alerts.py')
    assert records[0]['CODE_FUNC'] == '<module>'


def test_structured_fields_are_journal_fields(journal_run):
    spooled, unreachable, answered, _, alert = journal_run[1]
    assert (spooled['VMID'], spooled['PHASE'], spooled['EVENT_ID'], spooled['NODE']) == (
        '100', 'pre-start', 'e-1', 'pve1')
    assert (unreachable['BATCH_SIZE'], unreachable['BREAKER_STATE'], unreachable['DURATION_MS']) == ('3', 'open', '12')
    assert 'HTTP_STATUS' not in unreachable  # None values are left out
    assert answered['HTTP_STATUS'] == '503'
    assert (alert['ALERT'], alert['ALERT_STATUS']) == ('dead_letters', 'firing')
    for record in journal_run[1]:
        assert 'CODE_ARGS' not in record
        assert not [name for name in record if name.islower()]


def test_journalctl_matches_on_fields(journal_run):
    vmid_100, alert = journal_run[2], journal_run[3]
    assert [record['MESSAGE'] for record in vmid_100] == ['event spooled']
    assert len(alert) == 1 and alert[0]['PRIORITY'] == '2'


def test_traceback_goes_to_exception_text_redacted(journal_run):
    failed = journal_run[1][3]
    assert failed['EXCEPTION_TEXT'].startswith('Traceback (most recent call last):')
    assert 'RuntimeError: unexpected <redacted>' in failed['EXCEPTION_TEXT']


def test_token_is_nowhere_in_the_journal(journal_run):
    everything = journal_run[4]
    assert '<redacted>' in everything
    assert TOKEN not in everything


def test_explicit_stderr_target_keeps_the_journal_empty():
    journal_or_skip()
    completed, records = run_with_journal([sys.executable, '-c', CHILD, 'logging.target=stderr'],
                                          env=ENV, identifier='pve-hooks')
    assert completed.returncode == 0
    assert records == []
    lines = completed.stderr.decode().splitlines()
    assert lines[0] == 'INFO event spooled event_id=e-1 node=pve1 phase=pre-start vmid=100'
    assert TOKEN not in completed.stderr.decode()


def test_private_journal_returns_every_record_of_a_burst():
    journal_or_skip()
    code = textwrap.dedent('''
        from systemd import journal
        for number in range(500):
            journal.send('burst %d' % number, SYSLOG_IDENTIFIER='burst-test', VMID=str(100 + number % 2))
    ''')
    with PrivateJournal() as journal:
        assert journal.run([sys.executable, '-c', code]).returncode == 0
        burst = journal.records(identifier='burst-test')
        odd = journal.records('VMID=101', identifier='burst-test')
    assert [record['MESSAGE'] for record in burst] == ['burst %d' % number for number in range(500)]
    assert len(odd) == 250


def listing(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


def test_private_journal_leaves_the_host_alone():
    journal_or_skip()
    before = {path: listing(path) for path in ('/run', '/run/systemd', '/run/log', '/var/log/journal')}
    with PrivateJournal() as journal:
        inside = journal.run(['sh', '-c', 'test -S /run/systemd/journal/socket && logger -u /run/systemd/journal/dev-log -t leak-test hello; '
                              'echo ok'], capture_output=True)
        assert inside.stdout == b'ok\n'
        assert [record['MESSAGE'] for record in journal.records(identifier='leak-test')] == ['hello']
    assert {path: listing(path) for path in before} == before
