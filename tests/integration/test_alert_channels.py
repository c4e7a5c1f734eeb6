"""Alerts through real channels: a real command reading JSON on stdin, a real loopback HTTP receiver.

Each failing channel (non-zero exit, timeout, missing program, connection
refused, HTTP 500) must log an error and return normally to the caller.
"""

import http.server
import json
import logging
import os
import socket
import sys
import threading

import pytest

from pve_hooks.observe import alerts
from pve_hooks.config import loader as config


class Clock:
    def __init__(self, now=1764150000.0):
        self.now = now

    def __call__(self):
        return self.now


class Receiver:
    """A loopback HTTP server that records each POSTed JSON body and answers ``status``."""

    def __init__(self, status=200):
        self.status = status
        self.release = threading.Event()
        self.release.set()
        self.bodies = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers['Content-Length'])
                receiver.bodies.append((self.headers['Content-Type'], json.loads(self.rfile.read(length))))
                receiver.release.wait(30)
                self.send_response(receiver.status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = 'http://127.0.0.1:{0}/hooks/alert'.format(self.server.server_address[1])

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def script(tmp_path):
    """Write an executable alert script; return (path, output file)."""
    def make(body):
        path = tmp_path / 'alert-command'
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(0o755)
        return str(path)
    return make


@pytest.fixture
def make_alerter():
    def make(command=None, webhook=None, timeout=5.0, clock=None):
        settings = config.load(env={}, require_file=False, overrides=[
            'node=pve1', 'alerts.repeat_interval=3600', 'alerts.timeout={0}'.format(timeout)])
        settings['alerts.command'] = command
        settings['alerts.webhook'] = webhook
        return alerts.Alerter(settings, clock=clock or Clock())
    return make


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as stream:
        return [json.loads(line) for line in stream if line.strip()]


# (condition, call that makes it hold, call that clears it)
CONDITIONS = [
    (alerts.ACCOUNTDB_AUTH, lambda a: a.accountdb_auth(True, 'HTTP 401'), lambda a: a.accountdb_auth(False)),
    (alerts.BREAKER_OPEN, lambda a: a.breaker('open', a.clock() - 301), lambda a: a.breaker('closed', None)),
    (alerts.OUTBOX_FULL, lambda a: a.outbox(5, dropped_since_last=2), lambda a: a.outbox(5, 0)),
    (alerts.OUTBOX_DEPTH, lambda a: a.outbox(20000), lambda a: a.outbox(10)),
    (alerts.DEAD_LETTERS, lambda a: a.dead_letters(1), lambda a: a.dead_letters(0)),
    (alerts.WHITELIST_STALE, lambda a: a.whitelist(10 ** 6), lambda a: a.whitelist(1)),
    (alerts.PVESH_FAILING, lambda a: a.pvesh(3, 'timed out'), lambda a: a.pvesh(0)),
    (alerts.NODE_HEALTH_CRITICAL, lambda a: a.health('CRITICAL', 'pve-cluster inactive'), lambda a: a.health('OK')),
    (alerts.ACCOUNTDB_CONFIGURATION, lambda a: a.accountdb_configuration(True, 'HTTP 404'),
     lambda a: a.accountdb_configuration(False)),
    (alerts.CONFIG_UNREADABLE_BY_HOOKSCRIPT,
     lambda a: a.update(alerts.CONFIG_UNREADABLE_BY_HOOKSCRIPT, True, 'config.yaml:4: block lists are not supported'),
     lambda a: a.update(alerts.CONFIG_UNREADABLE_BY_HOOKSCRIPT, False, 'the hookscript reads the file again')),
]


def test_the_table_covers_every_condition():
    assert sorted(row[0] for row in CONDITIONS) == sorted(alerts.CONDITIONS)


@pytest.mark.parametrize('condition, hold, clear', CONDITIONS, ids=[row[0] for row in CONDITIONS])
def test_each_condition_fires_once_repeats_after_interval_and_resolves(
        condition, hold, clear, script, receiver, make_alerter, tmp_path, caplog):
    output = str(tmp_path / 'alerts.jsonl')
    command = [script('cat >> "$1"; echo >> "$1"\n'), output]
    clock = Clock()
    alerter = make_alerter(command=command, webhook=receiver.url, clock=clock)
    caplog.set_level(logging.INFO, logger='pve_hooks.observe.alerts')

    hold(alerter)
    clock.now += 60
    hold(alerter)  # suppressed
    clock.now += 3600
    hold(alerter)  # repeat_interval passed: sent again
    clock.now += 5
    clear(alerter)
    clear(alerter)  # nothing more to resolve

    sent = read_lines(output)
    assert [(item['condition'], item['status'], item['repeat']) for item in sent] == [
        (condition, 'firing', False), (condition, 'firing', True), (condition, 'resolved', False)]
    first = sent[0]
    assert first['node'] == 'pve1' and first['source'] == 'pve-hooks' and first['severity'] == 'critical'
    assert first['since'] == 1764150000.0 and first['time'] == 1764150000.0
    assert sent[2]['time'] == 1764150000.0 + 3665
    assert first['message'] and isinstance(first['details'], dict)
    assert [body for _, body in receiver.bodies] == sent
    assert {content_type for content_type, _ in receiver.bodies} == {'application/json'}
    levels = [(record.levelname, record.ALERT_STATUS) for record in caplog.records
              if getattr(record, 'ALERT', None) == condition]
    assert levels == [('CRITICAL', 'firing'), ('CRITICAL', 'firing'), ('INFO', 'resolved')]
    assert not [record for record in caplog.records if record.levelno == logging.ERROR]


def errors(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]


def test_command_exiting_non_zero_is_logged_and_does_not_raise(script, make_alerter, caplog):
    alerter = make_alerter(command=[script('cat >/dev/null; echo "pager service down" >&2; exit 3\n')])
    assert alerter.dead_letters(1) is True
    assert len(errors(caplog)) == 1
    assert 'exited with status 3: pager service down; check alerts.command' in errors(caplog)[0]
    assert alerts.DEAD_LETTERS in alerter.active()


def test_command_timing_out_is_killed_logged_and_does_not_raise(script, make_alerter, caplog):
    alerter = make_alerter(command=[script('exec sleep 60\n')], timeout=0.3)
    assert alerter.dead_letters(1) is True
    assert len(errors(caplog)) == 1
    assert 'timed out after 0 s and was killed' in errors(caplog)[0]


def test_missing_command_is_logged_and_does_not_raise(make_alerter, tmp_path, caplog):
    alerter = make_alerter(command=[str(tmp_path / 'no-such-program'), '--flag'])
    assert alerter.dead_letters(1) is True
    assert len(errors(caplog)) == 1
    assert 'cannot run (No such file or directory); check alerts.command' in errors(caplog)[0]


def test_command_gets_no_shell(script, make_alerter, tmp_path):
    output = tmp_path / 'argv'
    alerter = make_alerter(command=[sys.executable, '-c',
                                    'import sys; open(sys.argv[1], "w").write(repr(sys.argv[2:]))',
                                    str(output), '$(touch {0})'.format(tmp_path / 'pwned'), '; ls'])
    alerter.dead_letters(1)
    assert output.read_text() == repr(['$(touch {0})'.format(tmp_path / 'pwned'), '; ls'])
    assert not (tmp_path / 'pwned').exists()


def test_webhook_answering_500_is_logged_and_does_not_raise(receiver, make_alerter, caplog):
    receiver.status = 500
    alerter = make_alerter(webhook=receiver.url)
    assert alerter.pvesh(5, 'timeout') is True
    assert len(receiver.bodies) == 1
    assert errors(caplog) == ['alert webhook {0}/*** for pvesh_failing answered HTTP 500; check '
                              'alerts.webhook'.format(receiver.url.rsplit('/hooks', 1)[0])]


def test_webhook_refusing_connections_is_logged_and_does_not_raise(make_alerter, caplog):
    closed = socket.socket()
    closed.bind(('127.0.0.1', 0))
    port = closed.getsockname()[1]
    closed.close()
    alerter = make_alerter(webhook='http://127.0.0.1:{0}/secret-path-token'.format(port))
    assert alerter.pvesh(5, 'timeout') is True
    assert len(errors(caplog)) == 1
    message = errors(caplog)[0]
    assert message == ('alert webhook http://127.0.0.1:{0}/*** for pvesh_failing failed (ConnectionError: '
                       'Connection refused); check alerts.webhook'.format(port))
    assert 'secret-path-token' not in message


def test_a_failing_command_does_not_stop_the_webhook(make_alerter, receiver, tmp_path, caplog):
    alerter = make_alerter(command=[str(tmp_path / 'missing')], webhook=receiver.url)
    alerter.health('CRITICAL', 'quorum lost')
    assert [body['condition'] for _, body in receiver.bodies] == ['node_health_critical']
    assert len(errors(caplog)) == 1


def test_webhook_not_answering_is_bounded_by_the_timeout(receiver, make_alerter, caplog):
    receiver.release.clear()  # the receiver reads the alert and then hangs
    alerter = make_alerter(webhook=receiver.url, timeout=0.3)
    assert alerter.outbox(0, dropped_since_last=3) is True
    receiver.release.set()
    assert errors(caplog) == ['alert webhook {0}/*** for outbox_full failed (timed out after 0.3 s); '
                              'check alerts.webhook'.format(receiver.url.rsplit('/hooks', 1)[0])]


def test_background_mode_does_not_wait_for_a_hanging_webhook(receiver, tmp_path, caplog):
    receiver.release.clear()  # the receiver holds every request until released
    settings = config.load(env={}, require_file=False, overrides=['node=pve1', 'alerts.timeout=30'])
    settings['alerts.webhook'] = receiver.url
    alerter = alerts.Alerter(settings, clock=Clock(), background=True)
    caplog.set_level(logging.INFO, logger='pve_hooks.observe.alerts')
    try:
        assert alerter.dead_letters(1) is True  # returns while the webhook still hangs
        assert alerter.dead_letters(0) is True
        assert [record.ALERT_STATUS for record in caplog.records if hasattr(record, 'ALERT_STATUS')] == [
            'firing', 'resolved']
    finally:
        receiver.release.set()
        assert alerter.close() is True
    assert [body['status'] for _, body in receiver.bodies] == ['firing', 'resolved']
    assert errors(caplog) == []
