"""Unit tests for pve_hooks.daemon.loop driven in-process (no signals): one step at a time, real peers."""

import logging
import os
import socket
import time

import pytest

from pve_hooks.config import loader as config
from pve_hooks.daemon import lock
from pve_hooks.daemon import loop as daemon
from pve_hooks.observe import alerts, status
from pve_hooks.observe import metrics
from pve_hooks import statedir as state
from pve_hooks.daemon.systemd import Notifier
from pve_hooks.outbox.store import Outbox
from tests.support.accountdb import dev_accountdb  # noqa: F401 (fixture)
from tests.support.clock import Clock
from tests.support.fakepve import fake_node, fake_pve, fake_pve_pki, pve_root  # noqa: F401 (fixtures)


def _validate(document, schema_name):
    """Validate ``document`` against components/schemas/``schema_name`` of docs/accountdb-openapi.yaml."""
    import jsonschema
    import yaml

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                        'docs', 'accountdb-openapi.yaml')
    with open(path) as stream:
        spec = yaml.safe_load(stream)
    schema = dict(spec['components']['schemas'][schema_name], components=spec['components'])
    jsonschema.validate(document, schema)


def _event(vmid, phase='post-start'):
    return {'schema': 1, 'node': 'pve1', 'vmid': vmid, 'guest_type': 'qemu', 'phase': phase,
            'occurred_at': '2026-11-26T10:35:26.123456Z', 'source': 'hookscript'}


class Site:
    def __init__(self, server, node, tmp_path, *overrides):
        self.server = server
        self.tmp_path = tmp_path
        self.overrides = ['proxmox.pvesh=' + node.fake.pvesh, 'proxmox.pve_root=' + node.pve_root,
                          'metrics.textfile=' + str(tmp_path / 'pve-hooks.prom'), 'health.pvesh_timeout=10',
                          'proxmox.pvesh_timeout=10'] + list(overrides)
        self.settings = self.load()
        self.notify_path = str(tmp_path / 'notify.sock')
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.2)
        self.outbox = Outbox.from_settings(self.settings)

    def load(self, *extra):
        return self.server.settings(*(self.overrides + list(extra)), directory=str(self.tmp_path / 'client'))

    def daemon(self, reload_settings=None):
        return daemon.Daemon(self.settings, reload_settings=reload_settings, install_signals=False,
                             notifier=Notifier(env={'NOTIFY_SOCKET': self.notify_path}, use_systemd=False))

    def messages(self):
        received = []
        try:
            while True:
                received.append(self.notify.recv(4096).decode())
        except socket.timeout:
            return received

    def daemon_state(self):
        return state.read_json(state.path(self.settings, state.DAEMON))


@pytest.fixture
def site(dev_accountdb, fake_node, tmp_path):
    fake_node.create_guest(100, 'qemu', status='running')
    yield Site(dev_accountdb, fake_node, tmp_path)


def test_start_step_shutdown(site):
    runner = site.daemon()
    runner.start()
    ready = site.messages()
    assert ready and ready[0].startswith('READY=1') and 'STATUS=outbox 0 events' in ready[0]
    site.outbox.ensure()
    site.outbox.spool(_event(100))
    runner.step()
    assert len(site.server.events()) == 1
    stored = site.server.dump()
    assert stored['inventories']['pve1']['guests'] == 1
    assert stored['heartbeats']
    saved = site.daemon_state()
    assert saved['pid'] == os.getpid() and saved['heartbeat_at'] and saved['last_delivery_at']
    assert saved['last_inventory_sync_at'] and saved['last_heartbeat_sent_at'] and saved['connection'] == 'up'
    line = runner.status_line()
    assert line.startswith('outbox 0 events; AccountDB up; breaker closed; inventory synced')
    assert any(m.startswith('STATUS=') for m in site.messages())
    with open(site.settings['metrics.textfile']) as stream:
        text = stream.read()
    assert 'pve_hooks_events_delivered_total 1' in text
    assert 'pve_hooks_breaker_state{state="closed"} 1' in text
    with pytest.raises(daemon.AlreadyRunning) as running:
        lock.acquire(site.settings['paths.state_dir'])
    assert 'pid {0}'.format(os.getpid()) in str(running.value)
    runner.shutdown()
    assert 'STOPPING=1' in site.messages()
    assert site.daemon_state()['stopped_at']
    os.close(lock.acquire(site.settings['paths.state_dir']))   # released


def test_start_fixes_a_writable_spool_refuses_a_foreign_state_dir_and_feeds_attach_the_watchdog(site, caplog):
    import stat

    site.outbox.ensure()
    os.chmod(site.settings['paths.spool_dir'], 0o777)
    runner = site.daemon()
    runner.start()
    try:
        assert stat.S_IMODE(os.stat(site.settings['paths.spool_dir']).st_mode) == 0o755
        assert '(mode 0777); changed to 0755' in caplog.text
        assert runner.c.inventory.tick == runner.tools.watchdog.ping
    finally:
        runner.shutdown()
    if os.geteuid() != 0:
        return   # giving a directory away needs root
    os.chown(site.settings['paths.state_dir'], 65534, -1)
    try:
        with pytest.raises(state.UnsafeDirectory, match='owned by uid 65534, not root; fix: chown root:root '):
            site.daemon().start()
    finally:
        os.chown(site.settings['paths.state_dir'], 0, -1)


def test_heartbeat_carries_version_outbox_breaker_and_health(site):
    runner = site.daemon()
    runner.start()
    try:
        runner.step()
        beat = site.server.dump()['heartbeats']['pve1']['last']
        assert beat['agent_version'] and beat['node'] == 'pve1' and beat['sent_at'].endswith('Z')
        assert beat['outbox']['depth'] == 0 and beat['breaker'] == 'closed'
        assert beat['health']['status'] in ('OK', 'WARNING', 'CRITICAL', 'UNKNOWN')
        assert {check['name'] for check in beat['health']['checks']} >= {'outbox', 'pvesh_api', 'breaker'}
        assert 'reconciler' not in {check['name'] for check in beat['health']['checks']}
        _validate(beat, 'Heartbeat')   # the published contract (docs/accountdb-openapi.yaml)
        site.outbox.spool(_event(100))
        runner.c.board.refresh_outbox(force=True)
        body = status.heartbeat_body(runner.snapshot())
        assert body['outbox']['depth'] == 1 and body['outbox']['oldest_age'] >= 0
        assert 'health' not in status.heartbeat_body(dict(runner.snapshot(), health=None))  # omitted, not faked
    finally:
        runner.shutdown()


def test_reload_keeps_old_configuration_when_new_one_is_invalid(site, caplog):
    attempts = []

    def reload_settings():
        attempts.append(1)
        if len(attempts) == 1:
            raise config.ConfigError(['delivery.batch_size: expected an integer from 1 to 10000, got 0 (from x)'])
        return site.load('delivery.batch_size=7')

    runner = site.daemon(reload_settings)
    runner.start()
    try:
        with caplog.at_level(logging.INFO, logger='pve_hooks.daemon.loop'):
            runner.reload_requested = True
            runner.step()
            assert runner.settings['delivery.batch_size'] == 500
            assert 'configuration reload rejected, keeping the running configuration: delivery.batch_size' \
                in caplog.text
            runner.reload_requested = True
            runner.step()
        assert runner.settings['delivery.batch_size'] == 7
        assert runner.c.delivery.settings['delivery.batch_size'] == 7
        assert 'configuration reloaded (1 option changed: delivery.batch_size)' in caplog.text
        messages = site.messages()
        assert 'RELOADING=1' in messages and any(m.startswith('READY=1') for m in messages[1:])
    finally:
        runner.shutdown()


def test_run_once_exit_codes(site, dev_accountdb):
    site.outbox.ensure()
    site.outbox.spool(_event(100))
    code, message = daemon.run_once(site.settings)
    assert code == 0 and message == 'delivered 1 event; 0 kept in the outbox; inventory sent'
    site.outbox.spool(_event(100, 'pre-stop'))
    dev_accountdb.set_faults([{'mode': 'refuse'}])
    code, message = daemon.run_once(site.settings)
    assert code == 1
    assert message.startswith('AccountDB unreachable (connection to AccountDB ')
    assert message.endswith('; 1 event kept in the outbox')
    saved = site.daemon_state()
    assert saved.get('heartbeat_at') is None and saved['once_at']   # a one-shot run is not a live daemon
    dev_accountdb.set_faults([{'mode': 'unauthorized'}])
    code, message = daemon.run_once(site.settings)
    assert code == 1 and message.startswith('AccountDB refused the token (HTTP 401')


def test_accountdb_url_missing_keeps_events_and_says_so(site, caplog):
    site.settings = site.load('accountdb.url=')
    site.outbox.ensure()
    site.outbox.spool(_event(100))
    runner = site.daemon()
    with caplog.at_level(logging.ERROR):
        runner.start()
        runner.step()
    runner.shutdown()
    assert 'accountdb.url is not set' in caplog.text
    assert site.outbox.stats()['depth'] == 1
    saved = site.daemon_state()
    assert saved['connection'] == 'down' and 'accountdb.url is not set' in saved['last_error']


def test_no_busy_loop_while_accountdb_is_down(dev_accountdb, fake_node, tmp_path):
    clock = Clock()
    site = Site(dev_accountdb, fake_node, tmp_path, 'whitelist.refresh_interval=1', 'reconcile.heartbeat_interval=5',
                'retry.base_delay=2', 'retry.max_delay=8')
    dev_accountdb.set_faults([{'mode': 'refuse'}])
    runner = daemon.Daemon(site.settings, install_signals=False, clock=clock, rand=lambda: 0.5,
                           notifier=Notifier(env={}))
    runner.start()
    try:
        site.outbox.spool(_event(100))
        waits = []
        for _iteration in range(12):
            runner.step()
            wake = runner.next_wakeup(clock.now)
            waits.append(wake - clock.now)
            clock.now = max(wake, clock.now)
        # every iteration sleeps: the whitelist, delivery, inventory and heartbeat deadlines all move on
        assert min(waits) > daemon.MIN_SLEEP, waits   # no job was due again at once (the floor never applied)
        assert site.outbox.stats()['depth'] == 1
        assert runner.c.connection.state == 'down'
        dev_accountdb.set_faults([])
        for _iteration in range(30):   # recovers by itself once the breaker lets a probe through
            clock.now = max(runner.next_wakeup(clock.now), clock.now)
            runner.step()
            if not site.outbox.stats()['depth']:
                break
        assert site.outbox.stats()['depth'] == 0 and runner.c.connection.state == 'up'
        assert len(dev_accountdb.events()) == 1
    finally:
        runner.shutdown()


def test_an_unexpected_error_in_the_loop_is_logged_once_and_retried_later(site, caplog):
    clock = Clock()
    runner = daemon.Daemon(site.settings, install_signals=False, clock=clock, notifier=Notifier(env={}))
    runner.start()
    try:
        broken = []

        def explode(now=None):
            broken.append(1)
            raise KeyError('guests')

        runner.c.inventory.run = explode
        waits = []
        with caplog.at_level(logging.DEBUG, logger='pve_hooks.daemon.loop'):
            for _iteration in range(4):
                runner.c.inventory.next_at = 0
                assert runner.iterate() is False
                waits.append(runner.next_wakeup(clock.now) - clock.now)
                clock.now += waits[-1]
        assert len(broken) == 4 and waits == [1.0, 2.0, 4.0, 8.0]
        errors_logged = [r.getMessage() for r in caplog.records
                         if r.name == 'pve_hooks.daemon.loop' and r.levelno == logging.ERROR]
        assert errors_logged == ["unexpected error in the reconciler loop (KeyError: 'guests'); events stay in "
                                 "the outbox, next try in 1 s; please report this"]
        del runner.c.inventory.run
        with caplog.at_level(logging.INFO, logger='pve_hooks.daemon.loop'):
            assert runner.iterate() is True
        assert 'reconciler loop works again' in caplog.text
    finally:
        runner.shutdown()


def test_metrics_are_served_on_metrics_listen(dev_accountdb, fake_node, tmp_path):
    import urllib.request

    probe = socket.socket()
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
    probe.close()
    site = Site(dev_accountdb, fake_node, tmp_path, 'metrics.listen=127.0.0.1:{0}'.format(port))
    runner = site.daemon()
    runner.start()
    try:
        site.outbox.spool(_event(100))
        runner.step()
        with urllib.request.urlopen('http://127.0.0.1:{0}/metrics'.format(port), timeout=10) as response:
            text = response.read().decode()
        assert 'pve_hooks_events_delivered_total 1' in text
        assert 'pve_hooks_accountdb_requests_total{endpoint="events",status_class="2xx"} 1' in text
    finally:
        runner.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen('http://127.0.0.1:{0}/metrics'.format(port), timeout=2)


def test_without_inotify_the_outbox_is_polled(site, caplog):
    from pve_hooks.daemon import dirwatch

    def no_inotify():
        raise OSError('no inotify here')

    clock = Clock()
    settings = site.load('delivery.poll_interval=2', 'reconcile.heartbeat_interval=600', 'reconcile.interval=600',
                         'whitelist.refresh_interval=600')
    with caplog.at_level(logging.WARNING, logger='pve_hooks.daemon.loop'):
        runner = daemon.Daemon(settings, install_signals=False, clock=clock, notifier=Notifier(env={}),
                               watch_factory=lambda path: dirwatch.DirWatch(path, libc_loader=no_inotify))
        runner.start()
    try:
        assert 'inotify unavailable (no inotify here); polling the outbox every 2.0 s' in caplog.text
        runner.step()
        assert runner.next_wakeup(clock.now) == clock.now + 2   # the poll, not the 600 s jobs
        site.outbox.spool(_event(100))
        clock.now += 2
        runner.step()
        assert len(site.server.events()) == 1
    finally:
        runner.shutdown()


def test_start_refuses_a_file_the_hookscript_reads_otherwise(site):
    with open(site.settings.file, 'w') as stream:
        stream.write('health:\n  services:\n    - pveproxy\n')
    runner = daemon.Daemon(site.load(), install_signals=False, notifier=Notifier(env={}, use_systemd=False))
    with pytest.raises(config.ConfigError, match=r'config.yaml:3: block lists'):
        runner.start()
    assert runner.c is None   # refused before taking the lock or touching the outbox


def test_reload_of_a_file_the_hookscript_reads_otherwise_keeps_the_old_one_and_alerts(site, caplog):
    runner = site.daemon(site.load)
    runner.start()
    try:
        with open(site.settings.file, 'w') as stream:
            stream.write('health:\n  services:\n    - pveproxy\n')
        with caplog.at_level(logging.INFO):
            runner.reload_requested = True
            runner.step()
            assert runner.settings is site.settings
            assert 'ALERT config_unreadable_by_hookscript' in caplog.text and 'block lists' in caplog.text
            assert alerts.CONFIG_UNREADABLE_BY_HOOKSCRIPT in runner.tools.alerter.active()
            with open(site.settings.file, 'w') as stream:
                stream.write('{}\n')
            runner.reload_requested = True
            runner.step()
            assert alerts.CONFIG_UNREADABLE_BY_HOOKSCRIPT not in runner.tools.alerter.active()
    finally:
        runner.shutdown()
