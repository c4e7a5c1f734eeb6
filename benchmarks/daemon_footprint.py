#!/usr/bin/env python3
"""Benchmark: the idle daemon's footprint — resident memory and CPU.

Targets (issue 10): idle RSS <= 40 MiB; idle CPU over 60 s <= 0.5 % of one CPU.
(The third footprint figure, enqueue -> AccountDB latency, is measured by
benchmarks/enqueue_latency.py.)

Set-up: the REAL daemon (``python -m pve_hooks reconcile``) with the schema's
DEFAULT intervals (reconcile every 300 s, heartbeat every 60 s, whitelist
every 300 s, pvesh health checks every 60 s), talking to the reference
AccountDB on loopback and to fakepve (20 guests) through the test pvesh shim,
with a fake systemctl. After ``--warmup`` seconds (start-up: first
inventory, whitelist, heartbeat, health checks) the benchmark samples
``/proc/<pid>`` for ``--seconds``:

- RSS: VmRSS at the end, and its maximum over the samples (VmHWM is also
  printed: the start-up peak);
- CPU: the run time of the daemon's threads over the window (schedstat,
  nanoseconds), as a percentage of one CPU; the CPU of its child processes (the pvesh shim, a Python
  program standing in for Proxmox's Perl pvesh) is printed separately.

Baseline, same run: a bare interpreter that imports the same third-party
libraries (click, yaml, requests) and sleeps — what any Python daemon costs.

Run: .venv/bin/python benchmarks/daemon_footprint.py [--seconds 60] [--warmup 10]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.dont_write_bytecode = True

from tests.end_to_end.harness import write_config, write_token  # noqa: E402
from tests.support.accountdb import run_dev_accountdb  # noqa: E402
from tests.support.fakepve import FakeNode, FakePveHandle, FakePveServer, PveTree  # noqa: E402
from tests.support.systemctl import make_systemctl  # noqa: E402

TARGET_RSS_MIB = 40.0
TARGET_CPU_PERCENT = 0.5
TICKS = os.sysconf('SC_CLK_TCK')


def proc_status(pid):
    """Return {field: kB} for the Vm* lines of /proc/<pid>/status."""
    values = {}
    with open('/proc/{0}/status'.format(pid)) as stream:
        for line in stream:
            if line.startswith('Vm'):
                key, _, rest = line.partition(':')
                values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid):
    """Return (own, children) CPU seconds of ``pid``.

    Own: the sum of every thread's run time from ``/proc/<pid>/task/*/schedstat``
    (nanoseconds; utime+stime has a 10 ms tick, too coarse for an idle daemon).
    Children: cutime+cstime of waited-for children (ticks).
    """
    own = 0
    task_dir = '/proc/{0}/task'.format(pid)
    for task in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, task, 'schedstat')) as stream:
                own += int(stream.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    with open('/proc/{0}/stat'.format(pid)) as stream:
        fields = stream.read().rsplit(')', 1)[1].split()
    cutime, cstime = (int(value) for value in fields[13:15])
    return own / 1e9, (cutime + cstime) / TICKS


def sample(pid, seconds, interval=1.0):
    """Sample ``pid`` for ``seconds``; return {rss_end, rss_max, hwm (MiB), cpu_pct, child_cpu_pct}."""
    own0, child0 = cpu_seconds(pid)
    started = time.monotonic()
    rss_max = 0
    while time.monotonic() - started < seconds:
        rss_max = max(rss_max, proc_status(pid)['VmRSS'])
        time.sleep(min(interval, max(0.0, seconds - (time.monotonic() - started))))
    elapsed = time.monotonic() - started
    own1, child1 = cpu_seconds(pid)
    status = proc_status(pid)
    return {'rss_end': status['VmRSS'] / 1024.0, 'rss_max': max(rss_max, status['VmRSS']) / 1024.0,
            'hwm': status['VmHWM'] / 1024.0, 'cpu_pct': 100.0 * (own1 - own0) / elapsed,
            'child_cpu_pct': 100.0 * (child1 - child0) / elapsed, 'elapsed': elapsed}


def baseline(seconds):
    """Measure a bare interpreter that imports click, yaml and requests, then sleeps."""
    process = subprocess.Popen([sys.executable, '-c', 'import click, yaml, requests, time; time.sleep(3600)'],
                               stdin=subprocess.DEVNULL)
    try:
        time.sleep(2)
        return sample(process.pid, seconds)
    finally:
        process.kill()
        process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=60.0, help='measurement window (60)')
    parser.add_argument('--warmup', type=float, default=10.0, help='seconds after start before measuring (10)')
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix='bench-footprint-')
    started = []
    try:
        from fakepve.certs import make_cert
        os.makedirs(os.path.join(root, 'pki'))
        certfile, keyfile = make_cert(os.path.join(root, 'pki'), hosts=('127.0.0.1',))[:2]
        server = FakePveServer(certfile, keyfile)
        started.append(server.stop)
        os.makedirs(os.path.join(root, 'fakepve'))
        cluster = FakeNode(FakePveHandle(server, os.path.join(root, 'fakepve'), certfile),
                           PveTree(os.path.join(root, 'etc-pve')))
        for vmid in range(100, 120):
            cluster.create_guest(vmid, 'qemu' if vmid % 2 else 'lxc', status='running')
        with run_dev_accountdb(os.path.join(root, 'accountdb')) as accountdb:
            directory = os.path.join(root, 'node')
            os.makedirs(directory)
            config = write_config(os.path.join(directory, 'config.yaml'), {
                'node': 'pve1',
                'accountdb.url': accountdb.url,
                'accountdb.token_file': write_token(os.path.join(directory, 'token'), accountdb.token),
                'paths.spool_dir': os.path.join(directory, 'spool'),
                'paths.state_dir': os.path.join(directory, 'state'),
                'proxmox.pvesh': cluster.fake.pvesh,
                'proxmox.pve_root': cluster.pve_root,
                'health.systemctl': make_systemctl(directory, {}),
                'metrics.textfile': os.path.join(directory, 'metrics.prom'),
                'logging.target': 'stderr',
                'hook.journal_socket': os.path.join(directory, 'journal.sock'),
            })
            log = open(os.path.join(directory, 'daemon.log'), 'wb')
            daemon = subprocess.Popen([sys.executable, '-m', 'pve_hooks', '--config', config, 'reconcile'],
                                      stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                time.sleep(args.warmup)
                if daemon.poll() is not None:
                    raise RuntimeError('the daemon exited; see ' + log.name)
                measured = sample(daemon.pid, args.seconds)
            finally:
                daemon.terminate()
                daemon.wait(30)
                log.close()
            base = baseline(min(args.seconds, 10.0))
    finally:
        for stop in reversed(started):
            stop()
        shutil.rmtree(root, ignore_errors=True)
    print('daemon footprint, idle, default intervals, {0:.0f} s window after {1:.0f} s warm-up'.format(
        measured['elapsed'], args.warmup))
    print('  RSS: {0:.1f} MiB at the end, {1:.1f} MiB max in the window, start-up peak (VmHWM) {2:.1f} MiB   '
          'target <= {3:.0f} MiB: {4}'.format(measured['rss_end'], measured['rss_max'], measured['hwm'],
                                               TARGET_RSS_MIB, 'met' if measured['rss_max'] <= TARGET_RSS_MIB
                                               else 'MISSED'))
    print('  CPU: {0:.4f} % of one CPU (daemon process)   target <= {1} %: {2}; its children (pvesh shim for the '
          'health checks) {3:.3f} %'.format(measured['cpu_pct'], TARGET_CPU_PERCENT,
                                            'met' if measured['cpu_pct'] <= TARGET_CPU_PERCENT else 'MISSED',
                                            measured['child_cpu_pct']))
    print('  baseline, bare interpreter with click+yaml+requests imported, sleeping: RSS {0:.1f} MiB, CPU {1:.4f} %'
          .format(base['rss_end'], base['cpu_pct']))
    print('  ratio daemon / baseline RSS: {0:.2f}x (+{1:.1f} MiB)'.format(
        measured['rss_max'] / base['rss_end'], measured['rss_max'] - base['rss_end']))
    print('  enqueue -> AccountDB latency: see benchmarks/enqueue_latency.py')
    return 0


if __name__ == '__main__':
    sys.exit(main())
