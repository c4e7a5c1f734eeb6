"""The reconciler as systemd runs it: SIGTERM, SIGHUP, sd_notify, inotify wake-up, --once, status.

Real processes throughout: ``python -m pve_hooks reconcile`` with a config
file, the real hookscript, the reference AccountDB and fakepve behind the
pvesh shim. Waits are bounded; nothing asserts a duration.
"""

import os
import signal
import socket

import pytest

from tests.end_to_end.harness import assert_delivered_exactly_once, stored_events, stored_inventories, wait_for


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def _drain(sock, into):
    while True:
        try:
            into.append(sock.recv(4096).decode())
        except BlockingIOError:
            return into


def _catches_sigterm(pid):
    """True when process ``pid`` has a handler for SIGTERM (SigCgt in /proc/PID/status)."""
    with open('/proc/{0}/status'.format(pid)) as stream:
        for line in stream:
            if line.startswith('SigCgt:'):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _started(node):
    return os.path.exists(os.path.join(node.state_dir, 'daemon.json'))


def test_sigterm_returns_the_in_flight_batch_and_exits_0(accountdb, pve_node, fake_node):
    fake_node.create_guest(101)
    node = pve_node('pve1', settings={'reconcile.shutdown_timeout': 1, 'accountdb.timeout.read': 60})
    node.fire([(101, 'pre-start'), (101, 'post-start'), (101, 'pre-stop')])
    accountdb.set_faults([{'mode': 'slow', 'delay': 30, 'path': '/api/v1/events'}])
    node.start_daemon()
    wait_for(lambda: node.outbox_files('claimed'), 30, 'a batch in flight', seen=node.log_tail)
    node.daemon.send_signal(signal.SIGTERM)
    # The batch's request would take 30 s; the daemon gives it 1 s, then returns it and exits 0.
    assert node.stop_daemon(timeout=20) == 0
    assert node.outbox_files('claimed') == []
    assert len(node.outbox_files('ready')) == 3
    log = node.log_text()
    assert 'shutdown timeout (reconcile.shutdown_timeout 1.0 s) reached' in log
    assert 'returned 3 in-flight events to the outbox' in log
    assert 'Traceback' not in log
    accountdb.set_faults([])
    node.start_daemon()
    wait_for(lambda: node.pending() == 0 and len(stored_events(accountdb.db)) >= 3, 30, 'redelivery',
             seen=node.log_tail)
    assert_delivered_exactly_once(accountdb.db, node.fired_ids())
    assert node.stop_daemon() == 0


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid(accountdb, pve_node, fake_node):
    fake_node.create_guest(101)
    node = pve_node('pve1')
    node.start_daemon()
    wait_for(lambda: _started(node), 30, 'the daemon to start', seen=node.log_tail)
    node.write_config({'delivery.batch_size': 7})
    node.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: 'configuration reloaded (1 option changed: delivery.batch_size)' in node.log_text(), 30,
             'the reload', seen=node.log_tail)
    node.write_config({'delivery.batch_size': 0})
    node.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: 'configuration reload rejected, keeping the running configuration' in node.log_text(), 30,
             'the rejected reload', seen=node.log_tail)
    assert 'delivery.batch_size' in node.log_text().split('configuration reload rejected')[1].splitlines()[0]
    node.fire([(101, 'pre-start'), (101, 'post-start')])   # still delivering with the old configuration
    wait_for(lambda: len(stored_events(accountdb.db)) == 2, 30, 'delivery after the rejected reload',
             seen=node.log_tail)
    assert node.daemon_alive()
    assert node.stop_daemon() == 0


def test_systemd_notifications(accountdb, pve_node, fake_node, notify_socket):
    path, sock = notify_socket
    # accountdb.timeout.total must stay below the watchdog timeout, or the daemon refuses to start.
    node = pve_node('pve1', settings={'accountdb.timeout.total': 3},
                    env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '4000000'})
    node.start_daemon()
    messages = []
    wait_for(lambda: len([m for m in _drain(sock, messages) if m == 'WATCHDOG=1']) >= 2, 30,
             'READY=1 and two watchdog pings', seen=lambda: messages)
    ready = [m for m in messages if m.startswith('READY=1')]
    assert ready and 'MAINPID={0}'.format(node.daemon.pid) in ready[0]
    assert messages.index(ready[0]) < messages.index('WATCHDOG=1')
    status = [line for m in messages for line in m.split('\n') if line.startswith('STATUS=')]
    assert status and status[0].startswith('STATUS=outbox 0 events; AccountDB ')
    node.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: 'RELOADING=1' in _drain(sock, messages), 30, 'RELOADING=1', seen=lambda: messages)
    assert node.stop_daemon() == 0
    assert 'STOPPING=1' in _drain(sock, messages)


def test_inotify_wakes_the_daemon_for_each_spooled_event(accountdb, pve_node, fake_node):
    fake_node.create_guest(101)
    # No polling and no periodic look at the outbox for an hour: only inotify can trigger delivery.
    node = pve_node('pve1', settings={'delivery.poll_interval': 3600, 'reconcile.heartbeat_interval': 3600,
                                      'reconcile.interval': 3600, 'whitelist.refresh_interval': 3600})
    node.start_daemon()
    wait_for(lambda: stored_inventories(accountdb.db), 30, 'the start-up pass', seen=node.log_tail)
    for count, phase in enumerate(('pre-start', 'post-start', 'pre-stop'), 1):
        node.fire([(101, phase)])
        wait_for(lambda: len(stored_events(accountdb.db)) == count, 20, 'event {0} delivered'.format(count),
                 seen=node.log_tail)
    assert 'polling the outbox' not in node.log_text()
    assert node.stop_daemon() == 0


def test_reconcile_once_and_status(accountdb, pve_node, fake_node):
    fake_node.create_guest(101, status='running')
    node = pve_node('pve1')
    node.fire([(101, 'pre-start'), (101, 'post-start')])
    result = node.cli('reconcile', '--once')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'delivered 2 events; 0 kept in the outbox; inventory sent'
    assert_delivered_exactly_once(accountdb.db, node.fired_ids())
    assert [g['vmid'] for g in stored_inventories(accountdb.db)['pve1']['inventory']['guests']] == [101]
    status = node.status()
    assert status['daemon']['running'] is False and status['outbox']['depth'] == 0
    assert status['last_delivery_at'] and status['last_inventory_sync_at'] and status['last_heartbeat_sent_at']

    node.fire([(101, 'pre-stop')])
    accountdb.stop()
    result = node.cli('reconcile', '--once')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == ('Error: AccountDB unreachable (connection to AccountDB '
                                                      'refused); 1 event kept in the outbox')
    assert 'Traceback' not in result.stderr
    node.start_daemon()
    wait_for(lambda: node.status()['daemon']['running'], 30, 'status to see the daemon', seen=node.log_tail)
    human = node.cli('status')
    assert human.returncode == 0 and 'reconciler:      running (pid {0})'.format(node.daemon.pid) in human.stdout
    assert 'outbox:          1 event waiting' in human.stdout
    assert node.stop_daemon() == 0


def test_sigterm_during_a_slow_start_up_probe_exits_0(accountdb, pve_node, fake_node):
    node = pve_node('pve1', settings={'reconcile.shutdown_timeout': 1, 'accountdb.timeout.read': 60})
    accountdb.set_faults([{'mode': 'slow', 'delay': 30, 'path': '/api/v1/health'}])
    node.start_daemon()
    wait_for(lambda: _catches_sigterm(node.daemon.pid), 30, 'the SIGTERM handler (installed before the probe)',
             seen=node.log_tail)
    node.daemon.send_signal(signal.SIGTERM)
    assert node.stop_daemon(timeout=20) == 0   # the probe would take 30 s
    assert 'stopped during the start-up check of AccountDB' in node.log_text()
    assert 'Traceback' not in node.log_text()


def test_a_total_deadline_above_the_watchdog_is_refused_in_one_line(accountdb, pve_node, fake_node):
    node = pve_node('pve1', settings={'accountdb.timeout.total': 45}, env={'WATCHDOG_USEC': '20000000'})
    node.start_daemon()
    assert node.daemon.wait(30) != 0
    text = node.log_text()
    assert 'Traceback' not in text
    assert text.count('\n') == 1, text   # one line
    for part in ('accountdb.timeout.total is 45 s', 'WATCHDOG_USEC) is 20 s', 'systemctl edit'):
        assert part in text, text
