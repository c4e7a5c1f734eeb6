#!/usr/bin/env python3
"""Benchmark: drain 100,000 spooled events into the reference AccountDB on loopback.

Targets (issue 10): the batched drain is >= 20x faster than one-request-per-event
delivery, and 100,000 events drain in <= 30 s on a 2-core machine.

What is measured, all with the REAL daemon (``python -m pve_hooks reconcile``)
against the reference AccountDB (``pve-hooks dev-accountdb``) over loopback:

1. **batched**: N events (default 100,000) are put in the outbox, the daemon
   is started with the default ``delivery.batch_size`` (500), and the clock
   runs from the daemon's start until AccountDB's database holds all N.
2. **baseline, one request per event**: the same daemon with
   ``delivery.batch_size=1`` drains a SAMPLE of events (default 2,000). Its
   time for N is extrapolated as its start-up (daemon start to the first
   event stored) plus N at its steady rate (first to last event stored):
   draining 100,000 one by one would take minutes and prove nothing more.
   The extrapolation is generous to the baseline: its start-up is the one
   measured with the small sample, where the batched run's start-up
   includes the recovery scan of all N files.

The ratio printed is the baseline's time for N / the batched time for N,
both from daemon start to the last event stored. The steady rates (first to
last event stored) of both runs are printed too.

Preparing the outbox is not timed and takes a shortcut: the event files are
written with the outbox's own names and encoding but without one fsync each
(the daemon's start-up recovery recounts them), so preparation takes seconds
rather than 100,000 fsyncs. The hookscript's durable write is measured by
benchmarks/hook_latency.py and benchmarks/enqueue_latency.py.

Run: .venv/bin/python benchmarks/outbox_drain.py [--events N] [--sample N] [--json]
(about a minute; all files in a temporary directory, removed at the end).
``--json`` prints one JSON object with the key figures instead of the report
(benchmarks/ab/ab.py reads it).
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pve_hooks.hook import event  # noqa: E402
from pve_hooks.hook import spool
from tests.end_to_end.harness import write_config, write_token  # noqa: E402
from tests.support.accountdb import run_dev_accountdb  # noqa: E402

TARGET_RATIO = 20.0
TARGET_SECONDS = 30.0


def prepare_outbox(spool_dir, count, node='pve1', first_seq=1):
    """Write ``count`` valid events into ``spool_dir``'s ready/ (no per-file fsync); return their ids."""
    spool.ensure_dirs(spool_dir)
    ready = os.path.join(spool.outbox_dir(spool_dir), spool.READY)
    ids = []
    random_bytes = os.urandom(16 * count)
    for index in range(count):
        event_id = event.new_event_id(random_bytes[16 * index:16 * index + 16])
        vmid = 100 + index % 1000
        phase = event.PHASES[(index // 1000) % 4]
        record = event.make_event(event_id, node, vmid, 'qemu', phase, '2026-11-26T10:35:26.123456Z',
                                  first_seq + index, None)
        with open(os.path.join(ready, spool.event_name(first_seq + index, vmid, event_id)), 'wb') as stream:
            stream.write(event.encode(record))
        ids.append(event_id)
    return ids


def stored_count(db):
    """Return the number of events in the reference server's database.

    ``max(rowid)``: an index lookup, where COUNT(*) would scan the table on every poll and
    steal CPU from the drain it measures (rows are only inserted, once each, never deleted).
    """
    connection = sqlite3.connect('file:{0}?mode=ro'.format(db), uri=True, timeout=30)
    try:
        return connection.execute('SELECT max(rowid) FROM events').fetchone()[0] or 0
    finally:
        connection.close()


def cpu_seconds(pid):
    """Return the user+system CPU seconds process ``pid`` has used so far."""
    with open('/proc/{0}/stat'.format(pid)) as stream:
        fields = stream.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def drain(server, directory, count, batch_size, timeout):
    """Spool ``count`` events, start the daemon, wait until AccountDB holds them.

    Return a dict: ``seconds`` (daemon start to the last event stored),
    ``startup`` (daemon start to the first event stored), ``steady_rate``
    (events/s from the first to the last event stored), ``daemon_cpu`` and
    ``server_cpu`` (CPU seconds during the drain).

    Raise RuntimeError if they are not all stored within ``timeout`` seconds.
    """
    spool_dir = os.path.join(directory, 'spool')
    os.makedirs(directory)
    token = write_token(os.path.join(directory, 'token'), server.token)
    config = write_config(os.path.join(directory, 'config.yaml'), {
        'node': 'pve1',
        'accountdb.url': server.url,
        'accountdb.token_file': token,
        'paths.spool_dir': spool_dir,
        'paths.state_dir': os.path.join(directory, 'state'),
        'delivery.batch_size': batch_size,
        'metrics.textfile': os.path.join(directory, 'metrics.prom'),
        'logging.target': 'stderr',
        'logging.level': 'warning',
        'proxmox.pvesh': '/bin/false',          # no Proxmox here: inventory reads fail, events flow
        'proxmox.pve_root': os.path.join(directory, 'pve'),
        'health.systemctl': '/bin/true',
        'hook.journal_socket': os.path.join(directory, 'journal.sock'),
    })
    before = stored_count(server.db)
    prepare_outbox(spool_dir, count)
    log = open(os.path.join(directory, 'daemon.log'), 'wb')
    server_cpu = cpu_seconds(server.process.pid)
    started = time.monotonic()
    daemon = subprocess.Popen([sys.executable, '-m', 'pve_hooks', '--config', config, 'reconcile'],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    first = None   # (seconds since start, events stored) when the first event was seen in AccountDB
    try:
        while True:
            stored = stored_count(server.db) - before
            now = time.monotonic() - started
            if stored and first is None:
                first = (now, stored)
            if stored >= count:
                break
            if daemon.poll() is not None:
                raise RuntimeError('daemon exited with {0}; see {1}'.format(daemon.returncode, log.name))
            if now > timeout:
                raise RuntimeError('only {0} of {1} events stored after {2} s'.format(stored, count, timeout))
            time.sleep(0.05)
        steady = (count - first[1]) / (now - first[0]) if now > first[0] else float('nan')
        return {'seconds': now, 'startup': first[0], 'steady_rate': steady,
                'daemon_cpu': cpu_seconds(daemon.pid),
                'server_cpu': cpu_seconds(server.process.pid) - server_cpu}
    finally:
        daemon.terminate()
        daemon.wait(30)
        log.close()


def key_figures(args, single, batched):
    """Return the figures ``--json`` prints, from drain()'s results for the one-by-one sample and the batched run."""
    extrapolated = single['startup'] + args.events / single['steady_rate']
    return {'benchmark': 'outbox_drain', 'events': args.events, 'sample': args.sample, 'batch_size': args.batch_size,
            'drain_s': batched['seconds'], 'events_per_s': args.events / batched['seconds'],
            'startup_s': batched['startup'], 'steady_rate': batched['steady_rate'],
            'baseline_startup_s': single['startup'], 'baseline_steady_rate': single['steady_rate'],
            'baseline_extrapolated_s': extrapolated, 'ratio': extrapolated / batched['seconds'],
            'steady_ratio': batched['steady_rate'] / single['steady_rate'],
            'daemon_cpu_s': batched['daemon_cpu'], 'server_cpu_s': batched['server_cpu']}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--events', type=int, default=100000, help='events drained in batches (100000)')
    parser.add_argument('--sample', type=int, default=2000, help='events drained one by one (2000)')
    parser.add_argument('--batch-size', type=int, default=500, help='delivery.batch_size of the batched run')
    parser.add_argument('--json', action='store_true', help='print one JSON object with the key figures')
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix='bench-drain-')
    try:
        with run_dev_accountdb(os.path.join(root, 'accountdb')) as server:
            single = drain(server, os.path.join(root, 'one'), args.sample, 1, timeout=600)
            batched = drain(server, os.path.join(root, 'batched'), args.events, args.batch_size, timeout=900)
            total = stored_count(server.db)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert total == args.events + args.sample, 'AccountDB holds {0} events, expected {1}'.format(
        total, args.events + args.sample)
    figures = key_figures(args, single, batched)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
        return 0
    extrapolated, ratio = figures['baseline_extrapolated_s'], figures['ratio']
    print('outbox drain, reference AccountDB on loopback, {0} CPUs'.format(os.cpu_count()))
    print('  batched (batch_size {0}): {1} events in {2:.1f} s = {3:,.0f} events/s (start-up {4:.2f} s, then '
          '{5:,.0f} events/s)   target <= {6:.0f} s: {7}'.format(
              args.batch_size, args.events, batched['seconds'], args.events / batched['seconds'],
              batched['startup'], batched['steady_rate'], TARGET_SECONDS,
              'met' if batched['seconds'] <= TARGET_SECONDS else 'MISSED'))
    print('  baseline, one request per event: {0} events in {1:.1f} s (start-up {2:.2f} s, then {3:,.0f} '
          'events/s); {4} events would take {5:.0f} s'.format(
              args.sample, single['seconds'], single['startup'], single['steady_rate'], args.events,
              extrapolated))
    print('  CPU seconds during the batched drain: daemon {0:.1f}, AccountDB {1:.1f}; one-by-one sample: daemon '
          '{2:.1f}, AccountDB {3:.1f}'.format(batched['daemon_cpu'], batched['server_cpu'],
                                               single['daemon_cpu'], single['server_cpu']))
    print('  steady rates, batched / one-by-one: {0:.1f}x; whole-run rates (both start-ups counted, the '
          'sample\'s at its size): {1:.1f}x'.format(batched['steady_rate'] / single['steady_rate'],
                                                   (args.events / batched['seconds'])
                                                   / (args.sample / single['seconds'])))
    print('  ratio, one-by-one time / batched time for {0} events: {1:.1f}x   target >= {2:.0f}x: {3}'.format(
        args.events, ratio, TARGET_RATIO, 'met' if ratio >= TARGET_RATIO else 'MISSED'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
