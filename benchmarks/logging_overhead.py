#!/usr/bin/env python3
"""Benchmark pve-hooks' logging path and metrics rendering.

1. Cost per log record through pve-hooks' handler (RedactFilter + one-line
   formatter with fields, one registered secret) against a baseline measured
   in the same run: the standard library's StreamHandler with its default
   formatter, same record, same in-memory stream.
2. Rendering the metrics registry with every pve_hooks_* metric and 200
   health-check series (what the daemon does after every pass), and writing
   it atomically to a file (fsync included) in a temporary directory.

Run: .venv/bin/python benchmarks/logging_overhead.py  (a few seconds).
"""

import io
import logging
import os
import sys
import tempfile
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pve_hooks.observe import logs as logsetup  # noqa: E402
from pve_hooks.observe import metrics

RECORDS = 20_000


def best_us(function, number, repeat=5):
    """Return the best time of ``repeat`` runs of ``number`` calls, per call, in microseconds."""
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6


def logger_with(handler):
    logger = logging.getLogger('bench.{0}'.format(id(handler)))
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def main():
    logsetup.register_secret('tok-0123456789abcdef0123456789abcdef')
    extra = {'VMID': 100, 'PHASE': 'pre-start', 'EVENT_ID': '5d9c6b0e-3f7e-4bb5-9a55-4f4d0f0c2e11'}

    baseline_handler = logging.StreamHandler(io.StringIO())
    baseline = logger_with(baseline_handler)
    ours_handler = logging.StreamHandler(io.StringIO())
    ours_handler.setFormatter(logsetup.LineFormatter())
    ours_handler.addFilter(logsetup.RedactFilter())
    ours = logger_with(ours_handler)

    def log_baseline():
        baseline.warning('AccountDB unreachable (%s); %d events kept in outbox, next try in %d s',
                         'connection refused', 37, 40, extra=extra)

    def log_ours():
        ours.warning('AccountDB unreachable (%s); %d events kept in outbox, next try in %d s',
                      'connection refused', 37, 40, extra=extra)

    base_us = best_us(log_baseline, RECORDS)
    ours_us = best_us(log_ours, RECORDS)
    print('log record, stdlib StreamHandler (baseline): {0:.2f} us'.format(base_us))
    print('log record, pve-hooks handler (redact + fields): {0:.2f} us  ratio {1:.2f}x'.format(
        ours_us, ours_us / base_us))

    from tests.support.snapshot import snapshot as realistic_snapshot

    snapshot = realistic_snapshot()
    snapshot['health'] = {'status': 'OK', 'checks': [{'name': 'check-{0}'.format(number),
                                                      'status': ('OK', 'WARNING', 'CRITICAL', 'UNKNOWN')[number % 4]}
                                                     for number in range(200)]}
    registry = metrics.Metrics(snapshot=lambda: snapshot, node='pve1')

    class Pass:   # a delivery pass's result, as daemon.delivery.PassResult counts it
        accepted, duplicate, rejected, filtered, latencies = 5, 5, 5, 5, [value / 100 for value in range(1000)]

    registry.count_delivery(Pass())
    text = registry.render().decode()
    render_us = best_us(registry.render, 200)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, 'pve-hooks.prom')
        write_us = best_us(lambda: registry.write_textfile(path), 50)
    print('metrics render ({0} lines, {1} bytes): {2:.0f} us'.format(text.count('\n'), len(text), render_us))
    print('metrics textfile write incl. fsync + rename: {0:.0f} us  ratio vs render {1:.1f}x'.format(
        write_us, write_us / render_us))


if __name__ == '__main__':
    main()
