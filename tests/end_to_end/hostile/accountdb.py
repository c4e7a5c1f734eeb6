"""Rows of the hostile-input table for AccountDB and the daemon: what a server (or something in between) sends.

Each row runs the real daemon (``pve-hooks reconcile``) against a raw-socket
server on 127.0.0.1 (tests/support/rawhttp.py) that sends the hostile bytes
for some requests and forwards the others to the reference AccountDB; the
row then heals the server and asserts that the daemon kept running (no
exit, no traceback), classified what it got, and that every event fired
reached AccountDB exactly once, in order, with nothing left in dead/ —
and that the answer was classified, not caught as a bug by the loop's last
line of defence ("unexpected error in the reconciler loop").
"""

import json
import os
import socket
import threading
import time

from tests.end_to_end.harness import assert_all_delivered, wait_for
from tests.support.hostile import case
from tests.support.rawhttp import RawServer, raw, response, trickle

EVENTS = '/api/v1/events'
HEALTH = '/api/v1/health'
FIRED = [(101, 'pre-start'), (101, 'post-start'), (102, 'pre-start'), (101, 'pre-stop'), (101, 'post-stop'),
         (102, 'post-start')]
JSON = ('Content-Type', 'application/json')


def _alert_script(directory):
    path = os.path.join(directory, 'alert.sh')
    with open(path, 'w') as stream:
        stream.write('#!/bin/sh\ncat >> {0}\necho >> {0}\n'.format(os.path.join(directory, 'alerts.jsonl')))
    os.chmod(path, 0o755)
    return path


def _alerts(directory):
    try:
        with open(os.path.join(directory, 'alerts.jsonl')) as stream:
            return [json.loads(line) for line in stream if line.strip()]
    except FileNotFoundError:
        return []


def _run(fixtures, action, path=EVENTS, count=3, settings=None, env=None, during=None, fire_first=False):
    """Start a node whose AccountDB answers ``count`` requests under ``path`` with ``action``; check the end.

    ``during(node, server)`` runs while the fault is active (``count`` None:
    until it returns, then the fault is cleared). Return (node, server log).
    """
    fake_node = fixtures('fake_node')
    accountdb = fixtures('accountdb')
    make_node = fixtures('make_node')
    for vmid in (101, 102):
        fake_node.create_guest(vmid)
    with RawServer(upstream=accountdb.url) as server:
        server.add(path, action, count=count)
        values = {'proxmox.pvesh': fake_node.fake.pvesh, 'accountdb.url': server.url,
                  'alerts.command': [_alert_script(str(fixtures('tmp_path')))], 'alerts.after': 0}
        values.update(settings or {})
        node = make_node('pve1', accountdb, settings=values, pve_root=fake_node.pve_root, env=env)
        if fire_first:
            node.fire(FIRED)
        node.start_daemon()
        if not fire_first:
            node.fire(FIRED)
        wait_for(lambda: server.faulted >= (count or 1), 30, 'the hostile answers to be sent',
                 seen=lambda: 'faulted {0}; log:\n{1}'.format(server.faulted, node.log_tail(15)))
        if during is not None:
            during(node, server)
        server.clear()
        assert node.daemon_alive(), 'the daemon exited:\n' + node.log_tail()
        assert_all_delivered(node, accountdb.db, FIRED)
        text = node.log_text()
        assert 'Traceback' not in text, text[-3000:]
        assert 'unexpected error' not in text, text[-3000:]   # classified, not caught by the loop's last resort
        assert node.stop_daemon() == 0
        return node, text, server


def _row(id, given, outcome, answer, path=EVENTS, expect_in_log=None):  # noqa: A002
    @case(id, 'accountdb', given, outcome)
    def _(fixtures):
        node, text, _ = _run(fixtures, raw(answer), path=path)
        if expect_in_log:
            assert expect_in_log in text, text[-3000:]


_row('accountdb-retry-after-400-digits',
     'AccountDB answers 503 with a `Retry-After` of 400 digits, three times',
     'classified transient (wait capped at `retry.max_retry_after`); daemon keeps running; every event delivered',
     response(503, [('Retry-After', '9' * 400)]))
_row('accountdb-retry-after-5000-digits',
     'AccountDB answers 429 with a `Retry-After` of 5,000 digits, three times',
     'classified transient; daemon keeps running; every event delivered',
     response(429, [('Retry-After', '9' * 5000)]))
_row('accountdb-content-length-5000-digits',
     'an event batch is answered 200 with a `Content-Length` of 5,000 digits, three times',
     'classified transient (malformed response); daemon keeps running; every event delivered',
     response(200, [JSON, ('Content-Length', '9' * 5000)], b'{}'))
_row('accountdb-json-nested-100000-deep',
     'an event batch is answered 200 with JSON nested 100,000 deep, three times',
     'classified transient (malformed response); daemon keeps running; every event delivered',
     response(200, [JSON], b'[' * 100000), expect_in_log='nested too deeply')
_row('accountdb-header-line-70kb',
     'an event batch is answered with a 70 kB header line, three times',
     'classified transient; daemon keeps running; every event delivered',
     response(200, [JSON, ('X-Padding', 'a' * 70000)], b'{}'))
_row('accountdb-not-http',
     'the AccountDB port answers an event batch with an SSH banner, three times',
     'classified transient; daemon keeps running; every event delivered',
     b'SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n')
_row('accountdb-health-nested-json-at-start',
     'the start-up health check is answered 200 with JSON nested 100,000 deep, three times',
     'classified transient; the daemon starts (no traceback, no restart loop); every event delivered',
     response(200, [JSON], b'{"status":' + b'[' * 100000), path=HEALTH)


@case('accountdb-trickle', 'accountdb',
      'an event batch is answered one byte every 0.3 s (headers never end), `accountdb.timeout.total` 3, '
      'systemd watchdog 8 s',
      'the call ends within the total deadline + 2 s; the watchdog is pinged meanwhile; every event delivered')
def _(fixtures):
    tmp = str(fixtures('tmp_path'))
    path = os.path.join(tmp, 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    pings, stop = [], threading.Event()

    def listen():
        while not stop.is_set():
            try:
                if b'WATCHDOG=1' in sock.recv(4096):
                    pings.append(time.monotonic())
            except socket.timeout:
                continue
            except OSError:
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    calls = []

    def slow(conn, request):
        started = time.monotonic()
        trickle(b'HTTP/1.1 200 OK\r\nX-Slow: ' + b'a' * 200, every=0.3)(conn, request)
        calls.append(time.monotonic() - started)

    try:
        _run(fixtures, slow, count=2, settings={'accountdb.timeout.total': 3, 'accountdb.timeout.read': 2},
             env={'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '8000000'},
             during=lambda node, server: wait_for(lambda: len(calls) >= 2, 30, 'two trickled calls to end'))
    finally:
        stop.set()
        listener.join(2)
        sock.close()
    assert calls and max(calls) < 3 + 2, calls
    assert pings, 'no WATCHDOG=1 at all'
    gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
    assert max(gaps or [0]) < 4, gaps   # half the watchdog timeout: fed while the call waited


def _waf_row(id, status, body, content_type):  # noqa: A002
    @case(id, 'accountdb',
          'a proxy in front of AccountDB answers every event batch {0} with {1} until fixed'.format(
              status, 'an HTML page' if 'html' in content_type else 'a non-AccountDB JSON body'),
          'classified configuration (not a rejection): `accountdb_configuration` alerted, no event in '
          '`dead/`, all kept; delivered in order once the proxy is fixed')
    def _(fixtures):
        tmp = str(fixtures('tmp_path'))

        def while_blocked(node, server):
            wait_for(lambda: any(alert.get('condition') == 'accountdb_configuration' for alert in _alerts(tmp)),
                     20, 'the accountdb_configuration alert', seen=lambda: node.log_tail(10))
            assert node.outbox_files('dead') == []
            assert node.pending() == len(FIRED)

        _run(fixtures, raw(response(status, [('Content-Type', content_type)], body)), count=None,
             during=while_blocked)


_waf_row('accountdb-waf-html-400', 400, b'<html><body>Request blocked by the web application firewall</body></html>',
         'text/html')
_waf_row('accountdb-proxy-json-413', 413, b'{"message": "Request Entity Too Large"}', 'application/json')


@case('accountdb-netrc-login', 'accountdb',
      'the daemon\'s `~/.netrc` has a login for the AccountDB host (requests would send Basic auth)',
      'every request carries the bearer token, never the netrc login; every event delivered')
def _(fixtures):
    home = os.path.join(str(fixtures('tmp_path')), 'home')
    os.makedirs(home, exist_ok=True)
    netrc = os.path.join(home, '.netrc')
    with open(netrc, 'w') as stream:
        stream.write('machine 127.0.0.1 login intruder password hunter2\n')
    os.chmod(netrc, 0o600)
    _, text, server = _run(fixtures, raw(response(503, [('Retry-After', '0')])), count=1,
                           env={'HOME': home, 'NETRC': netrc})
    auth = {headers.get('authorization', '')[:7] for _, _, headers in server.seen}
    assert auth == {'Bearer '}, auth
    assert 'hunter2' not in text
