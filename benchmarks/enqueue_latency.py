#!/usr/bin/env python3
"""Benchmark: enqueue -> AccountDB receipt through the running reconciler (target: median <= 200 ms).

Starts a reference AccountDB and ``python -m pve_hooks reconcile`` (the real
daemon, inotify wake-up) on loopback with a temporary spool and state. Then,
one event at a time, spools an event with the outbox's durable write (the
one the hookscript uses) and reads the moment the reference server stored it
(its ``received_at``, same host clock). The figure is received_at minus the
moment the durable write of the event started (so the write itself is included).

Baseline, measured in the same run against the same server: a direct HTTP
POST of one event with a pooled requests session (what delivery costs with
no outbox, no wake-up and no daemon in between).

Run: .venv/bin/python benchmarks/enqueue_latency.py [--events N]  (about 15 s).
"""

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pve_hooks.outbox.store import Outbox  # noqa: E402
from tests.end_to_end.harness import write_config  # noqa: E402
from tests.support.accountdb import run_dev_accountdb  # noqa: E402

TARGET_MS = 200.0
PAUSE = 0.05   # between events, so each one is a fresh wake-up of an idle daemon


def _event(vmid=100, phase='pre-start'):
    return {'schema': 1, 'node': 'pve1', 'vmid': vmid, 'guest_type': 'qemu', 'phase': phase,
            'occurred_at': '2026-11-26T10:35:26.123456Z', 'source': 'hookscript'}


def received_at(db, event_id, timeout=10.0):
    """Poll the reference server's database until ``event_id`` is stored; return its received_at."""
    deadline = time.monotonic() + timeout
    connection = sqlite3.connect('file:{0}?mode=ro'.format(db), uri=True, timeout=10)
    try:
        while time.monotonic() < deadline:
            row = connection.execute('SELECT received_at FROM events WHERE event_id = ?', (event_id,)).fetchone()
            if row:
                return row[0]
            time.sleep(0.001)
    finally:
        connection.close()
    raise RuntimeError('event {0} not stored within {1} s'.format(event_id, timeout))


def baseline(server, count):
    """Return per-event ms of a direct POST (pooled session) until the server stored it."""
    import requests

    session = requests.Session()
    headers = {'Authorization': 'Bearer ' + server.token, 'Content-Type': 'application/json'}
    figures = []
    for _ in range(count):
        event = dict(_event(), event_id=str(uuid.uuid4()), seq=1)
        started = time.time()
        response = session.post(server.url + '/api/v1/events', json={'node': 'pve1', 'events': [event]},
                                headers=headers, timeout=10)
        response.raise_for_status()
        figures.append((received_at(server.db, event['event_id']) - started) * 1000)
        time.sleep(PAUSE)
    session.close()
    return figures


def through_daemon(server, directory, count):
    """Start the daemon, spool ``count`` events one by one; return per-event ms enqueue -> receipt."""
    spool_dir = os.path.join(directory, 'spool')
    state_dir = os.path.join(directory, 'state')
    config_file = os.path.join(directory, 'config.yaml')
    os.makedirs(directory, exist_ok=True)
    write_config(config_file, {
        'node': 'pve1', 'accountdb.url': server.url, 'accountdb.token_file': server.token_file,
        'paths.spool_dir': spool_dir, 'paths.state_dir': state_dir, 'metrics.textfile': None,
        'logging.target': 'stderr', 'logging.level': 'warning', 'proxmox.pvesh': '/bin/true',
        'proxmox.pve_root': directory, 'reconcile.interval': 86400, 'reconcile.heartbeat_interval': 86400,
        'whitelist.refresh_interval': 86400})
    env = dict(os.environ, PYTHONPATH=REPO)
    log = open(os.path.join(directory, 'daemon.log'), 'wb')
    daemon = subprocess.Popen([sys.executable, '-m', 'pve_hooks', '--config', config_file, 'reconcile'],
                              env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(state_dir, 'daemon.json')):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('the daemon did not start; see {0}'.format(log.name))
            time.sleep(0.02)
        time.sleep(0.5)   # let the start-up pass (whitelist, inventory attempt, heartbeat) finish
        outbox = Outbox(spool_dir)
        figures = []
        for index in range(count):
            event = dict(_event(vmid=100 + index % 5), event_id=str(uuid.uuid4()))
            # Conservative: the clock starts before the durable write (tmp, fsync, rename, fsync of the
            # directory), since the daemon may already be sending when spool() returns.
            enqueued = time.time()
            outbox.spool(event)
            figures.append((received_at(server.db, event['event_id']) - enqueued) * 1000)
            time.sleep(PAUSE)
        return figures
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--events', type=int, default=60, help='events per measurement (default 60)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='pve-hooks-bench-') as directory:
        with run_dev_accountdb(os.path.join(directory, 'accountdb')) as server:
            base = baseline(server, args.events)
            measured = through_daemon(server, os.path.join(directory, 'node'), args.events)
    median = statistics.median(measured)
    base_median = statistics.median(base)
    p90 = sorted(measured)[int(len(measured) * 0.9) - 1]
    print('enqueue -> AccountDB receipt through the daemon: median {0:.1f} ms, p90 {1:.1f} ms, max {2:.1f} ms '
          '({3} events)'.format(median, p90, max(measured), len(measured)))
    print('baseline, direct POST of one event (pooled session): median {0:.1f} ms'.format(base_median))
    print('ratio daemon/baseline (medians): {0:.1f}x; overhead {1:.1f} ms'.format(
        median / base_median if base_median else float('inf'), median - base_median))
    verdict = 'OK' if median <= TARGET_MS else 'ABOVE TARGET'
    print('target: median <= {0:.0f} ms -> {1}'.format(TARGET_MS, verdict))
    return 0 if median <= TARGET_MS else 1


if __name__ == '__main__':
    sys.exit(main())
