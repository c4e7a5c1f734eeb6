"""Scenario 4: AccountDB misbehaving — 429/503 with Retry-After, slow answers, dropped and
refused connections, garbage bodies — and a token rejected, then fixed by rotating the token file.

One daemon lives through every fault in turn; after each, the events fired
during it must all be in AccountDB (exactly once, in order) with no manual
step, and the daemon must still be running.
"""

from tests.end_to_end.harness import assert_all_delivered, lifecycle, stored_events, wait_for

EVENTS = '/api/v1/events'
FAULTS = [
    ('429 with Retry-After', [{'mode': 'status', 'status': 429, 'retry_after': 1, 'count': 3, 'path': EVENTS}]),
    ('503 with Retry-After', [{'mode': 'status', 'status': 503, 'retry_after': 1, 'count': 3, 'path': EVENTS}]),
    ('500 without Retry-After', [{'mode': 'status', 'status': 500, 'count': 3, 'path': EVENTS}]),
    # Longer than accountdb.timeout.read (3 s): the batch is stored but the answer never
    # arrives in time, so it is sent again and AccountDB answers 'duplicate'.
    ('slow answer past the read timeout', [{'mode': 'slow', 'delay': 4, 'count': 1, 'path': EVENTS}]),
    ('slow answer within the timeout', [{'mode': 'slow', 'delay': 1, 'count': 2, 'path': EVENTS}]),
    ('dropped connection', [{'mode': 'drop', 'count': 3, 'path': EVENTS}]),
    ('refused connection (RST)', [{'mode': 'refuse', 'count': 3, 'path': EVENTS}]),
    ('garbage HTML body', [{'mode': 'garbage', 'count': 2, 'path': EVENTS}]),
    ('body that is not JSON', [{'mode': 'bad_json', 'count': 2, 'path': EVENTS}]),
    ('JSON of the wrong shape', [{'mode': 'wrong_shape', 'count': 2, 'path': EVENTS}]),
    ('huge body', [{'mode': 'huge', 'size': 20 * 1024 * 1024, 'count': 1, 'path': EVENTS}]),
    ('everything at random', {'seed': 7, 'rules': [
        {'mode': 'status', 'status': 503, 'retry_after': 1, 'probability': 0.2, 'path': EVENTS},
        {'mode': 'drop', 'probability': 0.2, 'path': EVENTS},
        {'mode': 'bad_json', 'probability': 0.2, 'path': EVENTS}]}),
]


def test_accountdb_faults_one_after_another(accountdb, pve_node, fake_node):
    vmids = [101, 102, 103]
    for vmid in vmids:
        fake_node.create_guest(vmid)
    node = pve_node('pve1', settings={'delivery.batch_size': 4})
    node.start_daemon()
    fired = []
    for number, (name, spec) in enumerate(FAULTS):
        accountdb.set_faults(spec)
        events = lifecycle(vmids, cycles=1)
        node.fire(events)
        fired.extend(events)
        wait_for(lambda: len(stored_events(accountdb.db)) == len(fired) and node.pending() == 0, 60,
                 'events fired during fault {0!r} to reach AccountDB'.format(name),
                 seen=lambda: 'stored {0}/{1}, pending {2}, log:\n{3}'.format(
                     len(stored_events(accountdb.db)), len(fired), node.pending(), node.log_tail(10)))
        accountdb.set_faults([])
        assert node.daemon_alive(), 'daemon died during fault {0!r}:\n{1}'.format(name, node.log_tail())
    assert_all_delivered(node, accountdb.db, fired)
    assert node.stop_daemon() == 0


def test_token_rejected_then_fixed_by_rotating_the_token_file(accountdb, pve_node, fake_node):
    for vmid in (101, 102):
        fake_node.create_guest(vmid)
    node = pve_node('pve1')
    node.set_token('tok-wrong-' + 'x' * 24)
    node.start_daemon()
    events = lifecycle([101, 102], cycles=1)
    node.fire(events)
    status = wait_for(lambda: _rejected(node.status()), 20, 'status to show the token rejected',
                      seen=lambda: node.status()['daemon'])
    wait_for(lambda: node.pending() == len(events), 5, 'every event to wait while the token is rejected',
             seen=node.pending)
    assert node.daemon_alive(), node.log_tail()
    assert 'tok-wrong' not in node.log_text() + str(status), 'the token appeared in a log line or in status'

    node.set_token(accountdb.token)  # the operator fixes the file; no restart, no manual step
    more = lifecycle([101], cycles=1)
    node.fire(more)
    assert_all_delivered(node, accountdb.db, events + more)
    assert accountdb.token not in node.log_text()
    assert node.stop_daemon() == 0


def _rejected(status):
    text = ' '.join(str(status['daemon'].get(key) or '') for key in ('connection', 'last_error')).lower()
    return any(word in text for word in ('401', 'token', 'auth', 'unauthorized', 'rejected'))


def test_accountdb_answering_401_whatever_the_token(accountdb, pve_node, fake_node):
    """AccountDB itself refusing every token (its fault mode): events wait, then flow once it stops."""
    fake_node.create_guest(101)
    node = pve_node('pve1')
    accountdb.set_faults([{'mode': 'unauthorized', 'path': EVENTS}])
    node.start_daemon()
    events = lifecycle([101], cycles=1)
    node.fire(events)
    wait_for(lambda: _rejected(node.status()), 20, 'status to show the token rejected',
             seen=lambda: node.status()['daemon'])
    wait_for(lambda: node.pending() == len(events), 5, 'every event to wait', seen=node.pending)
    accountdb.set_faults([])
    assert_all_delivered(node, accountdb.db, events)
    assert node.stop_daemon() == 0
