#!/usr/bin/env python3
"""Benchmark: steady-state inventory reconciliation with 5,000 unchanged guests.

Target (issue 10): at most 1 KiB sent to AccountDB per steady pass; report the
pvesh calls per pass.

Set-up: fakepve (the independent Proxmox API fake) serving 5,000 guests on
node pve1 (half VMs, half containers) behind the test pvesh shim, a counting
wrapper around it, an /etc/pve stand-in with the 5,000 guest configs and
``.vmlist``, the reference AccountDB, and the REAL daemon with
``reconcile.interval`` = 1 s. The first pass sends the full inventory; then
nothing changes; after the start-up heartbeat and health checks (one-offs,
excluded) the daemon runs for ``--seconds``. Bytes are the request
bytes (request line + headers + body) AccountDB's own statistics counted.

Two steady modes are measured:

- **.vmlist gate** (the default configuration): .vmlist unchanged, so pvesh is
  not called and nothing is sent;
- **forced re-read** (``reconcile.reread_interval`` = 1 s): pvesh is called
  every pass, the content hash is unchanged, nothing is sent.

Baseline, same run: the full inventory PUT of the first pass — what an agent
that pushes its whole picture every pass (the old polling agent) sends each
time. Heartbeats are a separate timer (``reconcile.heartbeat_interval``, 60 s
by default); their size is printed too.

Run: .venv/bin/python benchmarks/reconcile_steady.py [--guests N] [--seconds S]  (about a minute).
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

from tests.end_to_end.harness import CountingPvesh, stored_inventories, write_config, write_token  # noqa: E402
from tests.support.accountdb import run_dev_accountdb  # noqa: E402
from tests.support.fakepve import FakePveHandle, FakePveServer, PveTree  # noqa: E402

TARGET_BYTES = 1024
NODE = 'pve1'


def build_cluster(root, guests):
    """Start fakepve with ``guests`` guests on pve1 and write the matching /etc/pve tree.

    Return (server, handle, tree).
    """
    from fakepve.certs import make_cert

    pki = os.path.join(root, 'pki')
    os.makedirs(pki)
    certfile, keyfile = make_cert(pki, hosts=('127.0.0.1',))[:2]
    server = FakePveServer(certfile, keyfile)
    os.makedirs(os.path.join(root, 'fakepve'))
    handle = FakePveHandle(server, os.path.join(root, 'fakepve'), certfile)
    tree = PveTree(os.path.join(root, 'etc-pve'))

    def add_all():
        for index in range(guests):
            vmid = 1000 + index
            if index % 2:
                server.pve.add_ct(vmid, 'ct{0}'.format(vmid), node=NODE, status='running')
            else:
                server.pve.add_vm(vmid, 'vm{0}'.format(vmid), node=NODE, status='running')
    handle.call(add_all)
    for index in range(guests):
        vmid = 1000 + index
        kind = 'lxc' if index % 2 else 'qemu'
        tree.write_config(NODE, vmid, kind, {'name' if kind == 'qemu' else 'hostname': 'g{0}'.format(vmid)})
    tree.write_vmlist()
    return server, handle, tree


def count_lines(path, text):
    """Return how many lines of file ``path`` contain ``text``."""
    with open(path, errors='replace') as stream:
        return sum(1 for line in stream if text in line)


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError('timed out waiting for ' + what)
        time.sleep(0.1)


def measure(server, handle, tree, directory, seconds, reread):
    """Run the daemon through its first pass and then ``seconds`` of steady state.

    Return a dict of figures: first-pass bytes and pvesh calls, steady passes,
    bytes and pvesh calls, heartbeat bytes.
    """
    os.makedirs(directory)
    pvesh = CountingPvesh(directory, handle.pvesh)
    values = {
        'node': NODE,
        'accountdb.url': server.url,
        'accountdb.token_file': write_token(os.path.join(directory, 'token'), server.token),
        'paths.spool_dir': os.path.join(directory, 'spool'),
        'paths.state_dir': os.path.join(directory, 'state'),
        'proxmox.pvesh': pvesh.path,
        'proxmox.pve_root': tree.root,
        'proxmox.pvesh_timeout': 120,
        'reconcile.interval': 1,
        'reconcile.heartbeat_interval': 3600,
        'whitelist.refresh_interval': 3600,
        'health.pvesh_interval': 3600,
        'health.systemctl': '/bin/true',
        'metrics.textfile': os.path.join(directory, 'metrics.prom'),
        'logging.target': 'stderr',
        'logging.level': 'debug',
        'hook.journal_socket': os.path.join(directory, 'journal.sock'),
    }
    if reread:
        values['reconcile.reread_interval'] = 1
    config = write_config(os.path.join(directory, 'config.yaml'), values)
    server.reset_stats()
    puts_before = (stored_inventories(server.db).get(NODE) or {}).get('puts', 0)
    log_path = os.path.join(directory, 'daemon.log')
    log = open(log_path, 'wb')
    daemon = subprocess.Popen([sys.executable, '-m', 'pve_hooks', '--config', config, 'reconcile'],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        if puts_before == 0:
            wait(lambda: (stored_inventories(server.db).get(NODE) or {}).get('puts', 0) > puts_before, 180,
                 'the first inventory')
            done = 'inventory of node {0} sent'.format(NODE)
        else:
            done = 'inventory unchanged ('
        wait(lambda: count_lines(log_path, done) >= 1, 180, 'the first pass to finish')
        # Start-up one-offs (the first heartbeat, the first health checks) are not steady state.
        wait(lambda: _find(server.stats(), 'heartbeat'), 60, 'the start-up heartbeat')
        time.sleep(2)
        first = server.stats()
        first_calls = len(pvesh.calls())
        server.reset_stats()
        passes_before = _passes(log_path)
        calls_before = len(pvesh.calls())
        time.sleep(seconds)
        steady = server.stats()
        passes = _passes(log_path) - passes_before
        calls = [call for call in pvesh.calls()[calls_before:]]
    finally:
        daemon.terminate()
        daemon.wait(30)
        log.close()
    if passes < 1:
        raise RuntimeError('no steady pass was logged; see ' + log_path)
    inventory_first = _bytes(first, 'PUT')
    heartbeat = first['endpoints'].get('POST /api/v1/nodes/{node}/heartbeat') or _find(first, 'heartbeat')
    return {
        'first_inventory_bytes': inventory_first,
        'first_pvesh_calls': first_calls,
        'passes': passes,
        'steady_bytes': steady['totals']['bytes_in'],
        'steady_requests': steady['totals']['count'],
        'steady_pvesh_calls': len(calls),
        'steady_pvesh_inventory_calls': len([c for c in calls if c.endswith(('/qemu --output-format json',
                                                                             '/lxc --output-format json'))]),
        'heartbeat_bytes': heartbeat['bytes_in'] / max(1, heartbeat['count']) if heartbeat else None,
        'steady_by_endpoint': {key: (entry['count'], entry['bytes_in']) for key, entry in steady['endpoints'].items()},
        'steady_calls': calls,
    }


def _passes(log_path):
    return (count_lines(log_path, 'inventory unchanged according to .vmlist')
            + count_lines(log_path, 'inventory unchanged (')
            + count_lines(log_path, 'inventory of node'))


def _find(stats, word):
    for key, entry in stats['endpoints'].items():
        if word in key:
            return entry
    return None


def _bytes(stats, method):
    return sum(entry['bytes_in'] for key, entry in stats['endpoints'].items()
               if key.startswith(method + ' ') and 'inventory' in key)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--guests', type=int, default=5000)
    parser.add_argument('--seconds', type=float, default=15.0, help='steady-state time per mode (15)')
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix='bench-steady-')
    try:
        server_pve, handle, tree = build_cluster(root, args.guests)
        try:
            with run_dev_accountdb(os.path.join(root, 'accountdb')) as server:
                gate = measure(server, handle, tree, os.path.join(root, 'gate'), args.seconds, reread=False)
                reread = measure(server, handle, tree, os.path.join(root, 'reread'), args.seconds, reread=True)
        finally:
            server_pve.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    baseline = gate['first_inventory_bytes']
    print('steady-state reconciliation, {0} unchanged guests, reconcile.interval 1 s, {1:g} s per mode'.format(
        args.guests, args.seconds))
    print('  baseline (full inventory PUT, what a push-everything agent sends every pass): {0:,} bytes, '
          '{1} pvesh calls'.format(baseline, gate['first_pvesh_calls']))
    for name, figures in (('.vmlist gate (default)', gate), ('forced re-read (reread_interval 1 s)', reread)):
        per_pass = figures['steady_bytes'] / figures['passes']
        print('  {0}: {1} passes, {2} bytes sent ({3:.1f} bytes/pass, {4} requests), pvesh calls per pass '
              '{5:.2f} (inventory reads {6:.2f})   target <= {7} bytes/pass: {8}; ratio vs baseline: {9}'.format(
                  name, figures['passes'], figures['steady_bytes'], per_pass, figures['steady_requests'],
                  figures['steady_pvesh_calls'] / figures['passes'],
                  figures['steady_pvesh_inventory_calls'] / figures['passes'], TARGET_BYTES,
                  'met' if per_pass <= TARGET_BYTES else 'MISSED',
                  '{0:,.0f}x less'.format(baseline / per_pass) if per_pass else 'nothing sent (baseline / 0)'))
        for key, (count, size) in sorted(figures['steady_by_endpoint'].items()):
            print('      requests during steady state: {0} x {1} = {2} bytes'.format(count, key, size))
        other = [call for call in figures['steady_calls'] if not call.endswith(
            ('/qemu --output-format json', '/lxc --output-format json'))]
        if other:
            print('      other pvesh calls (health checks): {0}'.format(', '.join(sorted(set(other)))))
    if gate['heartbeat_bytes']:
        print('  heartbeat (separate timer, every reconcile.heartbeat_interval = 60 s by default): '
              '{0:,.0f} bytes each'.format(gate['heartbeat_bytes']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
