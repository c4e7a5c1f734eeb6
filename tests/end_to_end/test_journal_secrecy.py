"""Issue 7's requirement, end to end: the token never appears anywhere in the journal.

A private systemd-journald (tests/support/journald.py) receives everything a
whole run logs — hookscripts, the daemon through a token rejection, a token
rotation, deliveries, and the CLI commands an operator would run — and the
WHOLE journal (every field of every record) is searched for both the wrong
and the right token. The daemon's stderr and the commands' output are
searched too.
"""

import pytest

from tests.end_to_end.harness import lifecycle, stored_events, wait_for
from tests.support.journald import PrivateJournal, unavailable_reason

JOURNAL_SOCKET = '/run/systemd/journal/socket'


@pytest.mark.privileged
def test_no_token_anywhere_in_the_journal(accountdb, make_node, fake_node, tmp_path):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    wrong = 'tok-WRONG-' + 'q' * 30
    (tmp_path / 'journal-work').mkdir()
    with PrivateJournal(workdir=str(tmp_path / 'journal-work')) as journal:
        node = make_node('pve1', accountdb, prefix=journal.command([]),
                         settings={'logging.target': 'journal', 'hook.journal_socket': JOURNAL_SOCKET,
                                   'proxmox.pvesh': fake_node.fake.pvesh, 'proxmox.pve_root': fake_node.pve_root})
        fake_node.create_guest(101)
        node.set_token(wrong)
        node.start_daemon()
        events = lifecycle([101], cycles=2)
        node.fire(events[:4])
        wait_for(lambda: node.status()['daemon'].get('last_error'), 20, 'the token to be rejected',
                 seen=lambda: node.status()['daemon'])
        node.set_token(accountdb.token)
        node.fire(events[4:])
        wait_for(lambda: len(stored_events(accountdb.db)) == len(events) and node.pending() == 0, 30,
                 'delivery after the token was fixed', seen=node.log_tail)
        outputs = [node.cli(*argv) for argv in (['status'], ['status', '--json'], ['health', '--offline'],
                                                 ['config', 'show'], ['outbox', 'status'],
                                                 ['reconcile', '--once'])]
        assert node.stop_daemon() == 0
        text = journal.text()
        records = journal.records()
    assert any(r.get('SYSLOG_IDENTIFIER') == 'pve-hooks-hook' for r in records), 'no hookscript records captured'
    assert any(r.get('SYSLOG_IDENTIFIER') == 'pve-hooks' for r in records), 'no daemon records captured'
    assert len(records) > 10, 'suspiciously few journal records: {0}'.format(len(records))
    delivered = [event['event_id'] for event in stored_events(accountdb.db)]
    assert all(event_id in text for event_id in delivered), 'the journal misses hookscript records'
    everything = text + node.log_text() + ''.join(o.stdout + o.stderr for o in outputs)
    for token in (wrong, accountdb.token):
        assert token not in everything, 'the token was written to the journal or a command output'
        assert token[4:20] not in everything, 'part of the token was written out'
