"""Checks of the Proxmox node itself: its API, resources, cluster, services, and hookscripts attached.

Each takes a :class:`Probe` and returns a result.CheckResult; the pvesh ones
cost hundreds of milliseconds each (pvesh starts Perl), so the daemon runs
them every ``health.pvesh_interval`` only (health.runner).
"""

import logging
import subprocess
import time

from pve_hooks.health.result import CRITICAL, OK, UNKNOWN, WARNING, SEVERITY, CheckResult, level, perf
from pve_hooks.observe import status
from pve_hooks.proxmox import pvesh

log = logging.getLogger(__name__)


class Probe:
    """What the checks of one run share: settings, clocks, runners, and the node status read once.

    ``clock`` returns epoch seconds; ``monotonic`` measures latency; ``runner``
    runs a program (see :func:`pve_hooks.proxmox.pvesh.run_bounded`);
    ``client_factory(settings)`` returns an AccountDB client; ``snapshot`` is
    the status snapshot (observe.status) the pve-hooks checks read: the
    daemon passes its live one, otherwise it is read from the state files
    on first use.
    """

    def __init__(self, settings, clock=time.time, monotonic=time.monotonic, runner=pvesh.run_bounded,
                 client_factory=None, snapshot=None):
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.runner = runner
        self.client_factory = client_factory or _accountdb_client
        self._snapshot = snapshot
        self._snapshot_error = None
        self._status = None
        self._timed_out = None    # the first pvesh call of this run that timed out

    def pvesh(self, path, expect):
        """Return (data, seconds) of a pvesh call bounded by health.pvesh_timeout. Raise PveshError.

        Once a call of this run has timed out, later ones are not tried (raise
        :class:`NotTried`): a hanging pvesh costs one timeout per run, not one per check.
        """
        if self._timed_out is not None:
            raise NotTried('pvesh get {0}: not tried, {1}'.format(path, self._timed_out))
        try:
            return self._pvesh(path, expect)
        except pvesh.PveshTimeout as error:
            self._timed_out = str(error)
            raise

    def _pvesh(self, path, expect):
        durations = []
        data = pvesh.run(self.settings, path, timeout=self.settings['health.pvesh_timeout'], runner=self.runner,
                         expect=expect, clock=self.monotonic,
                         on_duration=lambda _path, seconds, _ok: durations.append(seconds))
        return data, durations[0]

    def snapshot(self):
        """Return (snapshot, None) or (None, one-line error) when the outbox or state cannot be read."""
        if self._snapshot is None and self._snapshot_error is None:
            try:
                self._snapshot = status.read(self.settings, self.clock)
            except OSError as error:
                self._snapshot_error = '{0}: cannot read the outbox ({1})'.format(
                    self.settings['paths.spool_dir'], error.strerror or error)
        return self._snapshot, self._snapshot_error

    def node_status(self):
        """Return ('ok', data, seconds) or ('error', message, seconds) for /nodes/{node}/status, read once."""
        if self._status is None:
            started = self.monotonic()
            try:
                data, seconds = self.pvesh('/nodes/{0}/status'.format(self.settings['node']), dict)
                self._status = ('ok', data, seconds)
            except pvesh.PveshError as error:
                self._status = ('error', str(error), self.monotonic() - started)
        return self._status


class NotTried(pvesh.PveshError):
    """A pvesh call skipped because an earlier one in the same run timed out."""


def _accountdb_client(settings):
    from pve_hooks.accountdb import client as accountdb

    return accountdb.Client(settings)


def check_pvesh_api(probe):
    """``pvesh get /nodes/{node}/status`` answers within health.pvesh_timeout (CRITICAL if not)."""
    kind, data, seconds = probe.node_status()
    values = {'latency_seconds': round(seconds, 3)}
    perfdata = [perf('pvesh_latency', round(seconds, 3), 's', minimum=0,
                     maximum=probe.settings['health.pvesh_timeout'])]
    if kind == 'error':
        return CheckResult('pvesh_api', CRITICAL, data, values, perfdata)
    version = data.get('pveversion')
    values['pveversion'] = version if isinstance(version, str) else None
    return CheckResult('pvesh_api', OK, 'Proxmox API answered in {0:.2f}s'.format(seconds), values, perfdata)


def _fraction(data, key):
    """Return (used, total, fraction) for a {used, total} entry of the node status; raise ValueError."""
    entry = data.get(key)
    if not isinstance(entry, dict):
        raise ValueError('no {0} in the node status'.format(key))
    used, total = entry.get('used'), entry.get('total')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (used, total)) or total <= 0:
        raise ValueError('{0} used/total missing or zero in the node status'.format(key))
    return used, total, used / total


def _load_per_cpu(data):
    loadavg = data.get('loadavg')
    cpus = (data.get('cpuinfo') or {}).get('cpus') if isinstance(data.get('cpuinfo'), dict) else None
    try:
        load1 = float(loadavg[0])
    except (TypeError, ValueError, IndexError, KeyError):
        raise ValueError('loadavg missing or not a number in the node status')
    if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus <= 0:
        raise ValueError('cpuinfo.cpus missing or zero in the node status')
    return load1, cpus, load1 / cpus


def check_node_resources(probe):
    """Root file system, memory and load per CPU from the node status vs health.* thresholds."""
    settings = probe.settings
    kind, data, _ = probe.node_status()
    if kind == 'error':
        return CheckResult('node_resources', UNKNOWN, 'no node status: ' + data)
    try:
        rootfs = _fraction(data, 'rootfs')
        memory = _fraction(data, 'memory')
        load1, cpus, load = _load_per_cpu(data)
    except ValueError as error:
        return CheckResult('node_resources', UNKNOWN, 'pvesh get /nodes/{0}/status: {1}'.format(
            settings['node'], error))
    levels = [
        ('root fs', rootfs[2], 'health.rootfs', '{0:.0%}'.format(rootfs[2])),
        ('memory', memory[2], 'health.memory', '{0:.0%}'.format(memory[2])),
        ('load/cpu', load, 'health.load', '{0:.2f}'.format(load)),
    ]
    status, parts = OK, []
    for label, value, prefix, shown in levels:
        found = level(value, settings[prefix + '_warning'], settings[prefix + '_critical'])
        if SEVERITY[found] > SEVERITY[status]:
            status = found
        parts.append('{0} {1}{2}'.format(label, shown, '' if found == OK else ' ' + found))
    values = {'rootfs_used_bytes': rootfs[0], 'rootfs_total_bytes': rootfs[1], 'rootfs_fraction': round(rootfs[2], 4),
              'memory_used_bytes': memory[0], 'memory_total_bytes': memory[1],
              'memory_fraction': round(memory[2], 4), 'load1': load1, 'cpus': cpus, 'load_per_cpu': round(load, 3)}
    perfdata = [
        perf('rootfs', round(rootfs[2] * 100, 1), '%', settings['health.rootfs_warning'] * 100,
             settings['health.rootfs_critical'] * 100, 0, 100),
        perf('memory', round(memory[2] * 100, 1), '%', settings['health.memory_warning'] * 100,
             settings['health.memory_critical'] * 100, 0, 100),
        perf('load_per_cpu', round(load, 3), '', settings['health.load_warning'], settings['health.load_critical'], 0),
    ]
    return CheckResult('node_resources', status, ', '.join(parts), values, perfdata)


def check_cluster(probe):
    """``pvesh get /cluster/status``: quorate, this node online, nodes online; a standalone node is OK."""
    node = probe.settings['node']
    try:
        data, _ = probe.pvesh('/cluster/status', list)
    except NotTried as error:
        return CheckResult('cluster', UNKNOWN, str(error))
    except pvesh.PveshError as error:
        return CheckResult('cluster', CRITICAL, str(error))
    clusters = [item for item in data if isinstance(item, dict) and item.get('type') == 'cluster']
    nodes = [item for item in data if isinstance(item, dict) and item.get('type') == 'node']
    online = sorted(str(item.get('name')) for item in nodes if item.get('online') in (1, True, '1'))
    me = [item for item in nodes if item.get('name') == node]
    values = {'cluster': None, 'quorate': None, 'nodes': len(nodes), 'nodes_online': len(online),
              'node_online': bool(me) and me[0].get('online') in (1, True, '1')}
    perfdata = [perf('nodes_online', len(online), '', minimum=0, maximum=len(nodes))]
    if not clusters:
        if values['node_online'] or (len(nodes) == 1 and not me):
            values['node_online'] = True
            return CheckResult('cluster', OK, 'standalone node (no cluster)', values, perfdata)
        return CheckResult('cluster', UNKNOWN, '/cluster/status has neither a cluster entry nor node {0}'.format(
            node), values, perfdata)
    cluster = clusters[0]
    values['cluster'] = cluster.get('name')
    values['quorate'] = cluster.get('quorate') in (1, True, '1')
    summary = 'cluster {0}: {1} of {2} nodes online'.format(values['cluster'], len(online), len(nodes))
    if not values['quorate']:
        return CheckResult('cluster', CRITICAL, summary + ', NOT quorate (/etc/pve is read-only)', values, perfdata)
    if not me:
        return CheckResult('cluster', CRITICAL, summary + ', this node {0} is not listed'.format(node),
                           values, perfdata)
    if not values['node_online']:
        return CheckResult('cluster', CRITICAL, summary + ', this node {0} is offline'.format(node),
                           values, perfdata)
    if len(online) < len(nodes):
        offline = sorted(str(item.get('name')) for item in nodes if str(item.get('name')) not in online)
        return CheckResult('cluster', WARNING, summary + ', quorate; offline: ' + ', '.join(offline),
                           values, perfdata)
    return CheckResult('cluster', OK, summary + ', quorate', values, perfdata)


def check_services(probe):
    """``systemctl is-active`` for every service in health.services (UNKNOWN when it cannot be asked)."""
    settings = probe.settings
    services = list(settings['health.services'])
    if not services:
        return CheckResult('services', OK, 'no services configured (health.services)')
    program = settings['health.systemctl']
    argv = [program, 'is-active'] + services
    timeout = settings['health.systemctl_timeout']
    shown = '{0} is-active {1}'.format(program, ' '.join(services))
    try:
        result = probe.runner(argv, timeout=timeout)
    except FileNotFoundError:
        return CheckResult('services', UNKNOWN, '{0}: program not found; set health.systemctl'.format(program))
    except OSError as error:
        return CheckResult('services', UNKNOWN, '{0}: cannot run ({1})'.format(program, error.strerror or error))
    except subprocess.TimeoutExpired:
        return CheckResult('services', UNKNOWN, '{0}: no answer within {1:g}s, killed (health.systemctl_timeout)'
                           .format(shown, timeout))
    states = result.stdout.decode('utf-8', 'replace').split() if isinstance(result.stdout, bytes) \
        else (result.stdout or '').split()
    if len(states) != len(services):
        detail = pvesh.last_line(result.stderr) or 'unexpected output {0!r}'.format(states[:len(services) + 1])
        return CheckResult('services', UNKNOWN, '{0}: {1}'.format(shown, detail))
    values = dict(zip(services, states))
    bad = ['{0} {1}'.format(name, state) for name, state in zip(services, states) if state != 'active']
    perfdata = [perf('services_active', len(services) - len(bad), '', minimum=0, maximum=len(services))]
    if bad:
        return CheckResult('services', CRITICAL, 'not active: ' + ', '.join(bad), values, perfdata)
    return CheckResult('services', OK, 'all {0} services active'.format(len(services)), values, perfdata)


def check_hookscripts(probe):
    """How many of this node's guests (configs under proxmox.pve_root) have our hookscript attached."""
    from pve_hooks.proxmox import guestconf
    from pve_hooks.proxmox import snippets

    settings = probe.settings
    try:
        guests, errors = guestconf.node_guests(settings['proxmox.pve_root'], settings['node'])
    except OSError as error:
        return CheckResult('hookscripts', UNKNOWN, 'cannot list guest configs under {0} ({1})'.format(
            settings['proxmox.pve_root'], error.strerror or error))
    ours = sum(1 for guest in guests.values() if snippets.is_ours(guest.hookscript))
    other = sum(1 for guest in guests.values() if guest.hookscript and not snippets.is_ours(guest.hookscript))
    values = {'guests': len(guests), 'attached': ours, 'other_hookscript': other,
              'without': len(guests) - ours - other, 'unreadable': len(errors)}
    perfdata = [perf('hookscript_attached', ours, '', minimum=0, maximum=len(guests))]
    reason = 'hookscript attached to {0} of {1} guests ({2} with another hookscript, {3} without)'.format(
        ours, len(guests), other, values['without'])
    if errors:
        return CheckResult('hookscripts', UNKNOWN, reason + '; {0} config(s) unreadable'.format(len(errors)),
                           values, perfdata)
    return CheckResult('hookscripts', OK, reason, values, perfdata)
