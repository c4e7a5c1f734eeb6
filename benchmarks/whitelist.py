#!/usr/bin/env python3
"""Benchmark the VMID whitelist: per-guest filtering, and the bytes a conditional refresh saves.

1. Filtering 10,000 guests against a 100,000-entry whitelist (target <= 5 ms),
   against a baseline measured in the same run: iterating the same 10,000
   guests with no filter.
2. Bytes on the wire (request + response, headers included, as counted by the
   reference AccountDB's /_admin/stats) for 100 unchanged refreshes
   (conditional GET -> 304) versus 100 full fetches of the same 100,000-entry
   list, over loopback (target <= 1 %).

Run: .venv/bin/python benchmarks/whitelist.py  (about 10 s; starts its own
reference AccountDB on 127.0.0.1 with a temporary database).
"""

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pve_hooks.accountdb import client as accountdb  # noqa: E402
from pve_hooks.config import loader as config
from pve_hooks.whitelist.cache import WhitelistCache  # noqa: E402
from pve_hooks.whitelist.filter import Filter  # noqa: E402

GUESTS = 10_000
ENTRIES = 100_000
REFRESHES = 100
FILTER_TARGET_MS = 5.0
BYTES_TARGET = 0.01


def best_ms(statement, number, repeat=7):
    """Return the best time of ``repeat`` runs of ``number`` calls, per call, in ms."""
    return min(timeit.repeat(statement, number=number, repeat=repeat)) / number * 1000


def bench_filter(rand):
    """Return a dict of timings in ms for the sizes above."""
    whitelist = rand.sample(range(100, 10_000_000), ENTRIES)
    on_list = rand.sample(whitelist, GUESTS // 2)
    off_list = [vmid + 10_000_000 for vmid in rand.sample(range(100, 10_000_000), GUESTS - len(on_list))]
    guests = on_list + off_list
    rand.shuffle(guests)

    only = Filter(whitelist)
    assert len(only.select(guests)) == GUESTS // 2
    with tempfile.TemporaryDirectory(prefix='pve-hooks-bench-') as state_dir:
        with open(os.path.join(state_dir, 'whitelist.json'), 'w') as stream:
            json.dump({'vmids': sorted(whitelist), 'etag': '"x"', 'fetched_at': time.time()}, stream)
        cache = WhitelistCache(state_dir)
        assert cache.filter.active and len(cache.filter.select(guests)) == GUESTS // 2
        load_ms = best_ms(lambda: WhitelistCache(state_dir), number=3, repeat=3)
    timings = {'build_ms': best_ms(lambda: Filter(whitelist), number=5), 'load_ms': load_ms}
    # The same loop three ways, and the baseline: the loop with no filter at all.
    allows = only.allows
    timings['filter_ms'] = best_ms(lambda: [vmid for vmid in guests if allows(vmid)], number=20)
    timings['cache_ms'] = best_ms(lambda: [vmid for vmid in guests if cache.allows(vmid)], number=20)
    timings['select_ms'] = best_ms(lambda: only.select(guests), number=20)
    timings['baseline_ms'] = best_ms(lambda: [vmid for vmid in guests], number=20)
    return timings


def start_server(workdir):
    """Start the reference AccountDB on a free loopback port; return (process, url, token_file)."""
    token_file = os.path.join(workdir, 'token')
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as stream:
        stream.write('bench-token-0123456789\n')
    process = subprocess.Popen(
        [sys.executable, '-m', 'pve_hooks', 'dev-accountdb', '--listen', '127.0.0.1:0',
         '--db', os.path.join(workdir, 'accountdb.sqlite'), '--token-file', token_file],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    match = re.search(r'listening on (\S+)', line)
    if not match:
        process.kill()
        raise SystemExit('dev-accountdb did not start: {0!r}'.format(line))
    return process, match.group(1), token_file


def admin(client, method, path):
    """Call an admin endpoint of the reference server with the client's session and token."""
    token = config.read_token(client.settings['accountdb.token_file'], check_owner=False)
    response = client.session.request(method, client.settings['accountdb.url'] + path,
                                      headers={'Authorization': 'Bearer ' + token}, timeout=10)
    response.raise_for_status()
    return response.json()


def whitelist_bytes(client):
    stats = admin(client, 'GET', '/_admin/stats')['endpoints'].get('GET /api/v1/whitelist', {})
    return stats.get('count', 0), stats.get('bytes_in', 0) + stats.get('bytes_out', 0)


def bench_bytes(rand):
    """Return (bytes for 100 304s, bytes for 100 full fetches, body bytes of one full fetch)."""
    with tempfile.TemporaryDirectory(prefix='pve-hooks-bench-') as workdir:
        process, url, token_file = start_server(workdir)
        try:
            settings = config.load(env={}, overrides=[
                'accountdb.url=' + url, 'accountdb.token_file=' + token_file,
                'paths.state_dir=' + os.path.join(workdir, 'state')])
            client = accountdb.Client(settings, token_reader=lambda path: config.read_token(
                path, check_owner=False))
            client.update_whitelist(add=rand.sample(range(100, 10_000_000), ENTRIES))
            cache = WhitelistCache.from_settings(settings)
            assert cache.refresh(client) == 'updated' and len(cache.vmids) == ENTRIES

            admin(client, 'POST', '/_admin/stats/reset')
            for _ in range(REFRESHES):
                assert cache.refresh(client) == 'unchanged'
            count, conditional = whitelist_bytes(client)
            assert count == REFRESHES

            admin(client, 'POST', '/_admin/stats/reset')
            body_bytes = 0
            for _ in range(REFRESHES):
                body_bytes = client.get_whitelist().body_bytes
            count, full = whitelist_bytes(client)
            assert count == REFRESHES
            client.close()
            return conditional, full, body_bytes
        finally:
            process.terminate()
            process.wait(10)


def main():
    rand = random.Random(6)
    t = bench_filter(rand)
    base = t['baseline_ms']
    print('filter: {0:,} guests against a {1:,}-entry whitelist (best of 7 runs)'.format(GUESTS, ENTRIES))
    print('  Filter.allows() per guest      {0:7.3f} ms  ({1:5.1f}x the baseline)  target <= {2} ms  {3}'.format(
        t['filter_ms'], t['filter_ms'] / base, FILTER_TARGET_MS,
        'OK' if t['filter_ms'] <= FILTER_TARGET_MS else 'MISSED'))
    print('  WhitelistCache.allows() (daemon) {0:5.3f} ms  ({1:5.1f}x the baseline)'.format(
        t['cache_ms'], t['cache_ms'] / base))
    print('  Filter.select()                {0:7.3f} ms  ({1:5.1f}x the baseline)'.format(
        t['select_ms'], t['select_ms'] / base))
    print('  baseline (same loop, no filter) {0:6.3f} ms'.format(base))
    print('  building the Filter            {0:7.3f} ms  (once per changed list)'.format(t['build_ms']))
    print('  loading whitelist.json         {0:7.3f} ms  (once per start or file change)'.format(t['load_ms']))

    started = time.monotonic()
    conditional, full, body_bytes = bench_bytes(rand)
    ratio = conditional / full
    print('refresh bytes on loopback, {0} refreshes of a {1:,}-entry whitelist ({2:,} body bytes):'.format(
        REFRESHES, ENTRIES, body_bytes))
    print('  conditional (304)  {0:>12,} bytes'.format(conditional))
    print('  full fetch (200)   {0:>12,} bytes'.format(full))
    print('  ratio              {0:12.4%}  target <= {1:.0%}  {2}'.format(
        ratio, BYTES_TARGET, 'OK' if ratio <= BYTES_TARGET else 'MISSED'))
    print('  ({0:.1f} s)'.format(time.monotonic() - started))
    figures = {key: round(value, 3) for key, value in t.items()}
    figures.update(bytes_conditional=conditional, bytes_full=full, bytes_ratio=round(ratio, 6))
    print(json.dumps(figures, sort_keys=True))
    return 0 if t['filter_ms'] <= FILTER_TARGET_MS and ratio <= BYTES_TARGET else 1


if __name__ == '__main__':
    sys.exit(main())
