"""An outbox in a temporary directory for the outbox's unit tests, with a clock the test moves."""

import os

from pve_hooks.outbox.store import Outbox
from tests.support.clock import Clock


def event(vmid=100, phase='pre-start'):
    """Return a valid event for guest ``vmid`` without event_id and seq (Outbox.spool fills them in)."""
    return {'schema': 1, 'node': 'pve1', 'vmid': vmid, 'guest_type': 'qemu', 'phase': phase,
            'occurred_at': '2026-11-26T10:35:26.123456Z', 'source': 'hookscript'}


def make_outbox(spool_dir):
    """Return an Outbox under ``spool_dir``, its layout created; ``test_clock`` is its Clock."""
    clock = Clock()
    outbox = Outbox(spool_dir, clock=clock)
    outbox.ensure()
    outbox.test_clock = clock
    return outbox


def spool_n(box, n):
    """Spool ``n`` events (vmid 100, 101, ...), one clock second apart; return their paths in ready/."""
    paths = []
    for index in range(n):
        box.test_clock.now += 1
        paths.append(box.spool(event(vmid=100 + index)))
    return paths


def write_ready(box, name, data):
    """Put the bytes ``data`` into ready/ as ``name``, bypassing the spool; return the path."""
    path = os.path.join(box.root, 'ready', name)
    with open(path, 'wb') as stream:
        stream.write(data)
    return path
