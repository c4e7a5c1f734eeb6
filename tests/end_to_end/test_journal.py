"""Scenario: a node whose hookscript and daemon log into a real journald, as on Proxmox.

A private systemd-journald (tests/support/journald.py) runs in a mount
namespace; the node's hookscript and daemon run inside it with the default
journal socket and ``logging.target: auto``. The checks read the journal back
with journalctl: the fields operators query by (``journalctl -t
pve-hooks-hook VMID=100``), the priority of an alert, and the token, which
must appear nowhere in anything journald received.
"""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.end_to_end.harness import wait_drained, wait_for
from tests.support.journald import PrivateJournal, journal_or_skip

pytestmark = pytest.mark.privileged

JOURNAL_SETTINGS = {'logging.target': 'auto', 'hook.journal_socket': '/run/systemd/journal/socket'}


@pytest.fixture
def journal():
    journal_or_skip()
    with PrivateJournal() as journal:
        yield journal


def test_hookscript_and_daemon_records_carry_fields_and_never_the_token(journal, accountdb, pve_node, fake_node):
    for vmid, kind in ((100, 'qemu'), (101, 'lxc')):
        fake_node.create_guest(vmid, kind)
    node = pve_node('pve1', settings=JOURNAL_SETTINGS, prefix=journal.command([]))
    node.start_daemon()
    fired = [(100, 'pre-start'), (100, 'post-start'), (101, 'pre-start')]
    node.fire(fired)
    wait_drained(node, accountdb.db, len(fired))
    assert node.stop_daemon() == 0

    hook_100 = journal.records('VMID=100', identifier='pve-hooks-hook')
    assert [record.get('PHASE') for record in hook_100 if record.get('EVENT_ID')] == ['pre-start', 'post-start']
    for record in hook_100:
        assert record['SYSLOG_IDENTIFIER'] == 'pve-hooks-hook'
        assert record['NODE'] == 'pve1'
        assert record['PRIORITY'] in ('2', '3', '4', '5', '6', '7')
    assert all(record['VMID'] == '101' for record in journal.records('VMID=101', identifier='pve-hooks-hook'))

    daemon = journal.records(identifier='pve-hooks')
    assert daemon, 'the daemon wrote nothing to the journal; its stderr:\n' + node.log_tail()
    assert {record['PRIORITY'] for record in daemon} <= {'2', '3', '4', '6', '7'}
    assert any(record.get('BATCH_SIZE') for record in daemon), 'no daemon record carries BATCH_SIZE'
    assert node.log_text().strip() == '', 'with journald present the daemon must not log to stderr'

    everything = journal.text()
    assert accountdb.token not in everything

    # The daemon wrote its metrics after the passes; the delivered events are counted.
    with open(node.metrics_file) as stream:
        families = {family.name: family for family in text_string_to_metric_families(stream.read())}
    assert families['pve_hooks_events_delivered'].samples[0].value == len(fired)


def test_refused_token_is_a_critical_alert_in_the_journal_without_the_token(journal, accountdb, pve_node,
                                                                             fake_node):
    fake_node.create_guest(100, 'qemu')
    node = pve_node('pve1', settings=JOURNAL_SETTINGS, prefix=journal.command([]))
    wrong = 'tok-wrong-' + 'f' * 24
    node.set_token(wrong)
    node.start_daemon()
    node.fire([(100, 'pre-start')])

    def alert():
        return journal.records('ALERT=accountdb_auth', '-p', 'crit', identifier='pve-hooks')

    records = wait_for(alert, 30, 'the accountdb_auth alert in the journal',
                       seen=lambda: [r['MESSAGE'] for r in journal.records(identifier='pve-hooks')][-5:])
    assert node.daemon_alive(), node.log_tail()
    assert node.stop_daemon() == 0
    assert records[0]['PRIORITY'] == '2'
    assert records[0]['ALERT_STATUS'] == 'firing'
    assert records[0]['MESSAGE'].startswith('ALERT accountdb_auth: AccountDB refuses the token')
    everything = journal.text()
    assert wrong not in everything
    assert accountdb.token not in everything
