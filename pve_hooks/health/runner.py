"""Which checks exist, running a selection of them, and the daemon's periodic runner."""

import logging
import time

from pve_hooks.health import node, own
from pve_hooks.health.result import UNKNOWN, CheckResult, overall
from pve_hooks.proxmox import pvesh

log = logging.getLogger(__name__)

CHECKS = {
    'pvesh_api': node.check_pvesh_api,
    'node_resources': node.check_node_resources,
    'cluster': node.check_cluster,
    'services': node.check_services,
    'reconciler': own.check_reconciler,
    'outbox': own.check_outbox,
    'breaker': own.check_breaker,
    'whitelist': own.check_whitelist,
    'hookscripts': node.check_hookscripts,
    'accountdb': own.check_accountdb,
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
               monotonic=time.monotonic, client_factory=None, snapshot=None):
    """Run the checks ``names`` (default all, in NAMES order) and return their CheckResults.

    ``offline`` leaves out the AccountDB check. ``clock`` gives epoch
    seconds, ``runner(argv, timeout)`` runs pvesh and systemctl (see
    :func:`pve_hooks.proxmox.pvesh.run_bounded`), ``client_factory`` is for
    tests and ``snapshot`` the status snapshot to judge pve-hooks by (see
    node.Probe). Raise ValueError naming the valid checks for an unknown name.
    """
    selected = list(NAMES) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError('unknown check {0}; valid checks: {1}'.format(', '.join(unknown), ', '.join(NAMES)))
    if offline:
        selected = [name for name in selected if name not in NETWORK]
    probe = node.Probe(settings, clock, monotonic, runner, client_factory, snapshot)
    return [_guarded(name, probe) for name in selected]


def _guarded(name, probe):
    """Run one check; an unexpected error becomes UNKNOWN (a health check never crashes its caller)."""
    try:
        return CHECKS[name](probe)
    except Exception as error:  # noqa: BLE001 - deliberately total: the daemon must survive any check
        log.warning('health check %s failed unexpectedly: %s: %s', name, type(error).__name__, error,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        return CheckResult(name, UNKNOWN, 'check failed: {0}: {1}'.format(type(error).__name__, error))


class HealthRunner:
    """The daemon's view: cheap checks every run, pvesh checks every health.pvesh_interval.

    ``names`` defaults to DAEMON_NAMES (every check but ``reconciler``);
    ``offline`` (default True) leaves out ``accountdb``, which the daemon checks itself.

    ``run(now, snapshot)`` returns ``(results, transitions)``: all results (pvesh ones
    reused from their last run between intervals) in NAMES order, and a list
    of ``{"name", "old", "new", "reason"}`` for every check whose status
    changed since the previous run (``old`` None on the first run). The
    daemon alerts on a transition to CRITICAL and sends a resolved notice
    when it leaves CRITICAL.
    """

    def __init__(self, settings, names=None, offline=True, clock=time.time, runner=pvesh.run_bounded,
                 monotonic=time.monotonic, client_factory=None):
        self.settings = settings
        self.names = list(DAEMON_NAMES) if names is None else list(names)
        self.offline = offline
        self.clock = clock
        self.options = dict(runner=runner, monotonic=monotonic, client_factory=client_factory)
        self.last = {}            # name -> CheckResult
        self.last_pvesh_at = None

    def pvesh_due(self, now):
        """True when the pvesh checks should run at ``now`` (epoch seconds)."""
        return self.last_pvesh_at is None or now - self.last_pvesh_at >= self.settings['health.pvesh_interval'] \
            or now < self.last_pvesh_at

    def run(self, now=None, snapshot=None):
        """Run the due checks against ``snapshot`` (the daemon's live one); return (results, transitions)."""
        now = self.clock() if now is None else now
        wanted = [name for name in self.names if name not in PVESH or self.pvesh_due(now)]
        if any(name in PVESH for name in wanted):
            self.last_pvesh_at = now
        fresh = run_checks(self.settings, wanted, self.offline, clock=lambda: now, snapshot=snapshot, **self.options)
        transitions = []
        for result in fresh:
            previous = self.last.get(result.name)
            if previous is None or previous.status != result.status:
                transitions.append({'name': result.name, 'old': previous.status if previous else None,
                                    'new': result.status, 'reason': result.reason})
            self.last[result.name] = result
        results = [self.last[name] for name in self.names if name in self.last]
        return results, transitions

    @staticmethod
    def summary(results):
        """Return the JSON-able summary the heartbeat and the status snapshot carry: {status, checks}."""
        return {'status': overall(results), 'checks': [result.to_dict() for result in results]}
