"""Canned Proxmox answers and state files for the health checks' tests (tests/unit/health/).

``Runner`` answers pvesh and systemctl; ``check()`` runs one check function
of health/node.py or health/own.py on a fresh node.Probe at ``NOW``, as one
run of health/runner.py would; ``write_state()`` and
``snapshot_with_outbox()`` give the pve-hooks checks what they read.
"""

import json
import os
import subprocess

from pve_hooks.config import loader as config
from pve_hooks.health import node
from pve_hooks.observe import status

NOW = 1_800_000_000.0
GiB = 1024 ** 3
STATUS = {'loadavg': ['0.50', '0.4', '0.3'], 'cpuinfo': {'cpus': 4}, 'pveversion': 'pve-manager/8.2.4',
          'memory': {'total': 100 * GiB, 'used': 50 * GiB}, 'rootfs': {'total': 100 * GiB, 'used': 10 * GiB}}
CLUSTER = [{'type': 'cluster', 'name': 'clu', 'nodes': 2, 'quorate': 1},
           {'type': 'node', 'name': 'pve1', 'online': 1, 'local': 1},
           {'type': 'node', 'name': 'pve2', 'online': 1, 'local': 0}]


class Runner:
    """Canned answers by program: pvesh paths -> data (or a CompletedProcess / exception), systemctl states."""

    def __init__(self, status=STATUS, cluster=CLUSTER, services=None, systemctl=None):
        self.answers = {'/nodes/pve1/status': status, '/cluster/status': cluster}
        self.services = services or {}
        self.systemctl = systemctl
        self.calls = []

    def __call__(self, argv, timeout):
        self.calls.append((argv, timeout))
        if argv[0] == 'pvesh':
            answer = self.answers[argv[2]]
        else:
            if self.systemctl is not None:
                answer = self.systemctl
            else:
                states = [self.services.get(unit, 'active') for unit in argv[2:]]
                answer = subprocess.CompletedProcess(argv, 0, ('\n'.join(states) + '\n').encode(), b'')
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, subprocess.CompletedProcess):
            return answer
        return subprocess.CompletedProcess(argv, 0, json.dumps(answer).encode(), b'')


def snapshot_with_outbox(settings, stats):
    """A status snapshot whose outbox figures are ``stats`` (over an empty outbox's)."""
    outbox = dict({'depth': 0, 'oldest_age': None, 'dead': 0, 'quarantine': 0, 'dropped': 0}, **stats)
    closed = {'state': 'closed', 'failures': 0, 'opened_at': None, 'changed_at': None}
    return status.build(settings, NOW, {}, outbox, closed)


def check(settings, function, runner=None, outbox=None, client=None, **overrides):
    """Run the check ``function`` (node.check_* or own.check_*) on one probe at NOW; return its CheckResult.

    ``runner`` answers pvesh and systemctl (default: a healthy node),
    ``outbox`` the snapshot's outbox figures (default: read from the state
    files), ``client`` the AccountDB client factory; ``overrides`` replace
    settings ('health.memory_warning': 0.4).
    """
    if overrides:
        settings = config.Settings(dict(settings, **overrides), settings.sources)
    snapshot = snapshot_with_outbox(settings, outbox) if outbox is not None else None
    probe = node.Probe(settings, clock=lambda: NOW, monotonic=iter(range(0, 1000)).__next__,
                       runner=runner or Runner(), client_factory=client, snapshot=snapshot)
    found = function(probe)
    assert found.name == function.__name__[len('check_'):] and '\n' not in found.reason
    return found


def write_state(settings, name, data):
    """Write ``data`` (JSON-able, or the text itself) to the state file ``name``."""
    os.makedirs(settings['paths.state_dir'], exist_ok=True)
    with open(os.path.join(settings['paths.state_dir'], name), 'w') as out:
        out.write(data if isinstance(data, str) else json.dumps(data))
