"""Node health checks: the Proxmox node, its API and services, and pve-hooks itself.

Each check returns a :class:`CheckResult` (status OK/WARNING/CRITICAL/UNKNOWN,
a one-line reason, measured values and Nagios perfdata). ``pve-hooks health``
runs them by hand or as a Nagios/Icinga plugin; the daemon runs them through
:class:`HealthRunner` every heartbeat (the cheap ones each time, the pvesh
ones every ``health.pvesh_interval``) and sends the results with the heartbeat.

Checks (names accepted by ``--check``):

- ``pvesh_api``: ``pvesh get /nodes/{node}/status`` answers within ``health.pvesh_timeout``; latency.
- ``node_resources``: root file system, memory and 1-minute load per CPU from that status.
- ``cluster``: ``pvesh get /cluster/status``: quorum, this node online, nodes online.
- ``services``: ``systemctl is-active`` for ``health.services``.
- ``reconciler``: the daemon's heartbeat in ``<paths.state_dir>/daemon.json`` is recent.
- ``outbox``: depth, oldest event age, dead, quarantined and dropped events.
- ``breaker``: the AccountDB circuit breaker's state.
- ``whitelist``: age of the cached VMID whitelist.
- ``hookscripts``: how many of this node's guests have the hookscript attached.
- ``accountdb``: AccountDB's health endpoint answers (skipped when offline).

A check never raises: whatever goes wrong becomes UNKNOWN or CRITICAL with a reason.
"""

import json
import logging
import os
import subprocess
import time

from pve_hooks.proxmox import pvesh

log = logging.getLogger(__name__)

OK, WARNING, CRITICAL, UNKNOWN = 'OK', 'WARNING', 'CRITICAL', 'UNKNOWN'
STATUSES = (OK, WARNING, CRITICAL, UNKNOWN)
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
# Worst first when combining results (monitoring-plugins' max_state_alt order).
_SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}

DAEMON_FILE = 'daemon.json'
WHITELIST_FILE = 'whitelist.json'
BREAKER_FILE = 'breaker.json'


class CheckResult:
    """One check's outcome.

    ``name``; ``status`` one of OK, WARNING, CRITICAL, UNKNOWN; ``reason`` one
    line; ``values`` a JSON-able dict of measurements; ``perfdata`` a list of
    Nagios perfdata items (``label=value[uom];warn;crit;min;max``).
    """

    __slots__ = ('name', 'status', 'reason', 'values', 'perfdata')

    def __init__(self, name, status, reason, values=None, perfdata=()):
        if status not in STATUSES:
            raise ValueError('status must be one of {0}, got {1!r}'.format(', '.join(STATUSES), status))
        self.name = name
        self.status = status
        self.reason = ' '.join(str(reason).split())
        self.values = dict(values or {})
        self.perfdata = list(perfdata)

    def to_dict(self):
        """Return {name, status, reason, values} (what the heartbeat and --json carry)."""
        return {'name': self.name, 'status': self.status, 'reason': self.reason, 'values': self.values}

    def __eq__(self, other):
        return isinstance(other, CheckResult) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return 'CheckResult({0!r}, {1}, {2!r})'.format(self.name, self.status, self.reason)


def perf(label, value, uom='', warn=None, crit=None, minimum=None, maximum=None):
    """Return one Nagios perfdata item, e.g. ``rootfs=25.0%;85;95;0;100``."""
    def fmt(number):
        if number is None:
            return ''
        return '{0:g}'.format(round(number, 6)) if isinstance(number, float) else str(number)
    text = '{0}={1}{2};{3};{4};{5};{6}'.format(label, fmt(value), uom, fmt(warn), fmt(crit), fmt(minimum),
                                                 fmt(maximum))
    return text.rstrip(';')


def _level(value, warning, critical):
    if value >= critical:
        return CRITICAL
    if value >= warning:
        return WARNING
    return OK


# -- the checks ----------------------------------------------------------------------------


class Probe:
    """What the checks of one run share: settings, clocks, runners, and the node status read once.

    ``clock`` returns epoch seconds; ``monotonic`` measures latency; ``runner``
    runs a program (see :func:`pve_hooks.proxmox.pvesh.run_bounded`);
    ``client_factory(settings)`` returns an AccountDB client; ``outbox_factory(settings)``
    returns an object with ``stats()``.
    """

    def __init__(self, settings, clock=time.time, monotonic=time.monotonic, runner=pvesh.run_bounded,
                 client_factory=None, outbox_factory=None):
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.runner = runner
        self.client_factory = client_factory or _accountdb_client
        self.outbox_factory = outbox_factory or _outbox
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


def _outbox(settings):
    from pve_hooks.outbox import store as outbox

    return outbox.Outbox(settings['paths.spool_dir'])


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
        level = _level(value, settings[prefix + '_warning'], settings[prefix + '_critical'])
        if _SEVERITY[level] > _SEVERITY[status]:
            status = level
        parts.append('{0} {1}{2}'.format(label, shown, '' if level == OK else ' ' + level))
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


def _read_state(probe, name):
    """Return (data or None, error or None) for ``<paths.state_dir>/<name>`` (read-only)."""
    path = os.path.join(probe.settings['paths.state_dir'], name)
    try:
        with open(path, 'rb') as stream:
            data = json.loads(stream.read().decode('utf-8'))
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, '{0}: cannot read ({1})'.format(path, error.strerror or error)
    except ValueError:
        return None, '{0}: not valid JSON'.format(path)
    if not isinstance(data, dict):
        return None, '{0}: not a JSON object'.format(path)
    return data, None


def _age(probe, stamp):
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        return None
    return max(0.0, probe.clock() - stamp)


def _freshness(probe, name, file_name, key, limit, texts, missing):
    """Check that timestamp ``key`` (epoch seconds) in state file ``file_name`` is at most ``limit`` seconds old.

    ``texts`` is (ok text, stale text) formatted with ``age`` and ``limit``;
    ``missing`` is the result when the file or the key is absent. Return
    (CheckResult, state file data or None).
    """
    data, error = _read_state(probe, file_name)
    if error:
        return CheckResult(name, UNKNOWN, error), None
    if data is None or data.get(key) is None:
        return missing, data
    age = _age(probe, data[key])
    if age is None:
        return CheckResult(name, UNKNOWN, '{0}: {1} is not a number'.format(file_name, key)), data
    values = {'age_seconds': round(age, 1)}
    perfdata = [perf(name + '_age', round(age, 1), 's', crit=limit, minimum=0)]
    if age > limit:
        return CheckResult(name, CRITICAL, texts[1].format(age=age, limit=limit), values, perfdata), data
    return CheckResult(name, OK, texts[0].format(age=age, limit=limit), values, perfdata), data


def check_reconciler(probe):
    """The daemon's heartbeat (``heartbeat_at`` in daemon.json) is younger than health.reconciler_stale."""
    path = os.path.join(probe.settings['paths.state_dir'], DAEMON_FILE)
    missing = CheckResult('reconciler', CRITICAL, 'no heartbeat from the reconciler (no heartbeat_at in {0}); is '
                          'pve-hooks reconcile running?'.format(path), {'age_seconds': None})
    stale = probe.settings['health.reconciler_stale']
    result, data = _freshness(probe, 'reconciler', DAEMON_FILE, 'heartbeat_at', stale,
                              ('alive, last heartbeat {age:.0f}s ago',
                               'last heartbeat {age:.0f}s ago (over {limit:g}s): the reconciler is stopped or stuck'),
                              missing)
    if data is not None and 'age_seconds' in result.values:
        result.values['pid'] = data.get('pid')
    return result


def check_outbox(probe):
    """Outbox depth, oldest event age (health.outbox_age_*), dead, quarantined and dropped events."""
    settings = probe.settings
    try:
        stats = probe.outbox_factory(settings).stats()
    except OSError as error:
        return CheckResult('outbox', UNKNOWN, '{0}: cannot read the outbox ({1})'.format(
            settings['paths.spool_dir'], error.strerror or error))
    depth, oldest = stats.get('depth', 0), stats.get('oldest_age')
    dead, quarantine, dropped = stats.get('dead', 0), stats.get('quarantine', 0), stats.get('dropped', 0)
    values = {'depth': depth, 'oldest_age_seconds': None if oldest is None else round(oldest, 1), 'dead': dead,
              'quarantine': quarantine, 'dropped': dropped}
    warn, crit = settings['health.outbox_age_warning'], settings['health.outbox_age_critical']
    status = OK if oldest is None else _level(oldest, warn, crit)
    problems = []
    if status != OK:
        problems.append('oldest event waiting {0:.0f}s'.format(oldest))
    for count, text in ((dead, 'dead (pve-hooks outbox list --dead)'), (quarantine, 'quarantined'),
                        (dropped, 'dropped because the outbox was full')):
        if count:
            problems.append('{0} {1}'.format(count, text))
            status = status if status == CRITICAL else WARNING
    if depth >= settings['alerts.outbox_depth']:
        problems.append('depth {0} at or over alerts.outbox_depth'.format(depth))
        status = status if status == CRITICAL else WARNING
    summary = '{0} events waiting'.format(depth) + ('' if oldest is None else ', oldest {0:.0f}s'.format(oldest))
    perfdata = [perf('outbox_depth', depth, '', settings['alerts.outbox_depth'], minimum=0),
                perf('outbox_oldest_age', 0 if oldest is None else round(oldest, 1), 's', warn, crit, 0),
                perf('outbox_dead', dead, '', minimum=0)]
    reason = summary if not problems else summary + '; ' + '; '.join(problems)
    return CheckResult('outbox', status, reason, values, perfdata)


def check_breaker(probe):
    """The AccountDB circuit breaker (read-only from breaker.json): closed OK, open or half-open WARNING.

    An open breaker is not CRITICAL by itself: how long events have been
    waiting is what escalates (the ``outbox`` check's oldest-event age).
    The file is only read, never locked or rewritten, so the daemon's own
    breaker sees (and logs) every transition itself.
    """
    from pve_hooks.accountdb import breaker

    settings = probe.settings
    data, error = _read_state(probe, BREAKER_FILE)
    if error:
        return CheckResult('breaker', UNKNOWN, error)
    if data is None:
        return CheckResult('breaker', OK, 'closed (no breaker state yet)', {'state': breaker.CLOSED, 'failures': 0})
    state, failures = data.get('state'), data.get('failures')
    opened = _age(probe, data.get('opened_at'))
    if state not in breaker.STATES or (state == breaker.OPEN and opened is None):
        return CheckResult('breaker', UNKNOWN, '{0}: unexpected content (the daemon rewrites it at the next '
                           'transition)'.format(BREAKER_FILE))
    if state == breaker.OPEN and opened >= settings['breaker.reset_timeout']:
        state = breaker.HALF_OPEN  # as the breaker itself reads an expired open state
    values = {'state': state, 'failures': failures}
    if state == breaker.CLOSED:
        return CheckResult('breaker', OK, 'closed', values)
    if state == breaker.HALF_OPEN:
        return CheckResult('breaker', WARNING, 'half-open after {0} transient failures: the next request probes '
                           'AccountDB'.format(failures), values)
    values['open_seconds'] = round(opened, 1)
    return CheckResult('breaker', WARNING, 'open for {0:.0f}s after {1} transient failures: AccountDB unreachable, '
                       'events wait in the outbox'.format(opened, failures), values)


def check_whitelist(probe):
    """Age of the cached whitelist (``fetched_at`` in whitelist.json) vs whitelist.max_stale."""
    missing = CheckResult('whitelist', OK, 'no whitelist cached yet: every guest is reported', {'age_seconds': None})
    result, data = _freshness(probe, 'whitelist', WHITELIST_FILE, 'fetched_at', probe.settings['whitelist.max_stale'],
                              ('cached whitelist confirmed {age:.0f}s ago',
                               'cached whitelist is {age:.0f}s old (over whitelist.max_stale {limit:g}s): AccountDB '
                               'not reached'), missing)
    if data is not None and 'age_seconds' in result.values:
        vmids = data.get('vmids')
        result.values['count'] = len(vmids) if isinstance(vmids, list) else None
    return result


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


def check_accountdb(probe):
    """AccountDB's health endpoint answers ``{"status": "ok"}`` (CRITICAL if not)."""
    from pve_hooks.config import loader as config
    from pve_hooks.accountdb import errors

    settings = probe.settings
    if not settings['accountdb.url']:
        return CheckResult('accountdb', UNKNOWN, 'accountdb.url is not set')
    started = probe.monotonic()
    try:
        client = probe.client_factory(settings)
        try:
            client.health()
        finally:
            client.close()
    except (errors.AccountDBError, config.TokenError) as error:
        return CheckResult('accountdb', CRITICAL, 'AccountDB health check failed: {0}'.format(error),
                           {'latency_seconds': round(probe.monotonic() - started, 3)})
    seconds = probe.monotonic() - started
    return CheckResult('accountdb', OK, 'AccountDB answered in {0:.2f}s'.format(seconds),
                       {'latency_seconds': round(seconds, 3)},
                       [perf('accountdb_latency', round(seconds, 3), 's', minimum=0)])


CHECKS = {
    'pvesh_api': check_pvesh_api,
    'node_resources': check_node_resources,
    'cluster': check_cluster,
    'services': check_services,
    'reconciler': check_reconciler,
    'outbox': check_outbox,
    'breaker': check_breaker,
    'whitelist': check_whitelist,
    'hookscripts': check_hookscripts,
    'accountdb': check_accountdb,
}
NAMES = tuple(CHECKS)
# Checks that call pvesh (hundreds of ms each): the daemon runs them every health.pvesh_interval.
PVESH = frozenset(('pvesh_api', 'node_resources', 'cluster'))
# Checks that need the network to AccountDB: left out with offline=True.
NETWORK = frozenset(('accountdb',))
CHEAP = frozenset(NAMES) - PVESH
# What the daemon runs by default: not its own heartbeat (it is the reconciler; at start-up the
# file is missing or old, which would raise a false CRITICAL).
DAEMON_NAMES = tuple(name for name in NAMES if name != 'reconciler')


def run_checks(settings, names=None, offline=False, clock=time.time, runner=pvesh.run_bounded,
               monotonic=time.monotonic, client_factory=None, outbox_factory=None):
    """Run the checks ``names`` (default all, in NAMES order) and return their CheckResults.

    ``offline`` leaves out the AccountDB check. ``clock`` gives epoch
    seconds, ``runner(argv, timeout)`` runs pvesh and systemctl (see
    :func:`pve_hooks.proxmox.pvesh.run_bounded`), the factories are for tests (see
    :class:`Probe`). Raise ValueError naming the valid checks for an unknown name.
    """
    selected = list(NAMES) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError('unknown check {0}; valid checks: {1}'.format(', '.join(unknown), ', '.join(NAMES)))
    if offline:
        selected = [name for name in selected if name not in NETWORK]
    probe = Probe(settings, clock, monotonic, runner, client_factory, outbox_factory)
    return [_guarded(name, probe) for name in selected]


def _guarded(name, probe):
    """Run one check; an unexpected error becomes UNKNOWN (a health check never crashes its caller)."""
    try:
        return CHECKS[name](probe)
    except Exception as error:  # noqa: BLE001 - deliberately total: the daemon must survive any check
        log.warning('health check %s failed unexpectedly: %s: %s', name, type(error).__name__, error,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        return CheckResult(name, UNKNOWN, 'check failed: {0}: {1}'.format(type(error).__name__, error))


def overall(results):
    """Return the worst status of ``results`` (CRITICAL > WARNING > UNKNOWN > OK); UNKNOWN when empty."""
    if not results:
        return UNKNOWN
    return max((result.status for result in results), key=lambda status: _SEVERITY[status])


def exit_code(results):
    """Return the Nagios exit code of ``overall(results)``: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    return EXIT_CODES[overall(results)]


def nagios_line(results):
    """Return the plugin output: ``PVE-HOOKS <STATUS> - <reasons> | <perfdata>`` on one line.

    The reasons are those of the checks that are not OK (or 'all N checks OK').
    """
    status = overall(results)
    bad = [result for result in results if result.status != OK]
    if bad:
        text = '; '.join('{0} {1}: {2}'.format(result.name, result.status, result.reason) for result in bad)
    elif results:
        text = 'all {0} checks OK'.format(len(results))
    else:
        text = 'no checks run'
    perfdata = ' '.join(item for result in results for item in result.perfdata)
    line = 'PVE-HOOKS {0} - {1}'.format(status, text.replace('|', '/'))
    return line + (' | ' + perfdata if perfdata else '')


def to_json(results):
    """Return a JSON document: {status, exit_code, checks: [{name, status, reason, values}]}."""
    return json.dumps({'status': overall(results), 'exit_code': exit_code(results),
                       'checks': [result.to_dict() for result in results]}, sort_keys=True)


def table(results):
    """Return a human-readable table (CHECK, STATUS, REASON) plus an overall line."""
    width = max([len('CHECK')] + [len(result.name) for result in results])
    lines = ['{0:<{1}}  {2:<8}  {3}'.format('CHECK', width, 'STATUS', 'REASON')]
    for result in results:
        lines.append('{0:<{1}}  {2:<8}  {3}'.format(result.name, width, result.status, result.reason))
    lines.append('overall: {0}'.format(overall(results)))
    return '\n'.join(lines)


class HealthRunner:
    """The daemon's view: cheap checks every run, pvesh checks every health.pvesh_interval.

    ``names`` defaults to DAEMON_NAMES (every check but ``reconciler``);
    ``offline`` (default True) leaves out ``accountdb``, which the daemon checks itself.

    ``run(now)`` returns ``(results, transitions)``: all results (pvesh ones
    reused from their last run between intervals) in NAMES order, and a list
    of ``{"name", "old", "new", "reason"}`` for every check whose status
    changed since the previous run (``old`` None on the first run). The
    daemon alerts on a transition to CRITICAL and sends a resolved notice
    when it leaves CRITICAL.
    """

    def __init__(self, settings, names=None, offline=True, clock=time.time, runner=pvesh.run_bounded,
                 monotonic=time.monotonic, client_factory=None, outbox_factory=None):
        self.settings = settings
        self.names = list(DAEMON_NAMES) if names is None else list(names)
        self.offline = offline
        self.clock = clock
        self.options = dict(runner=runner, monotonic=monotonic, client_factory=client_factory,
                            outbox_factory=outbox_factory)
        self.last = {}            # name -> CheckResult
        self.last_pvesh_at = None

    def pvesh_due(self, now):
        """True when the pvesh checks should run at ``now`` (epoch seconds)."""
        return self.last_pvesh_at is None or now - self.last_pvesh_at >= self.settings['health.pvesh_interval'] \
            or now < self.last_pvesh_at

    def run(self, now=None):
        """Run the due checks; return (results, transitions)."""
        now = self.clock() if now is None else now
        wanted = [name for name in self.names if name not in PVESH or self.pvesh_due(now)]
        if any(name in PVESH for name in wanted):
            self.last_pvesh_at = now
        fresh = run_checks(self.settings, wanted, self.offline, clock=lambda: now, **self.options)
        transitions = []
        for result in fresh:
            previous = self.last.get(result.name)
            if previous is None or previous.status != result.status:
                transitions.append({'name': result.name, 'old': previous.status if previous else None,
                                    'new': result.status, 'reason': result.reason})
            self.last[result.name] = result
        results = [self.last[name] for name in self.names if name in self.last]
        return results, transitions
