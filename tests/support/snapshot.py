"""A realistic status snapshot (pve_hooks.observe.status), for tests of what renders one."""

from pve_hooks.observe import alerts, status

NOW = 1764150000.0


def snapshot(**changes):
    """Return status.build()'s snapshot of a busy node, with top-level ``changes`` applied.

    A dict value is merged into the section of the same name (``outbox={'depth': 0}``);
    anything else replaces the key.
    """
    daemon = {'pid': 1234, 'version': '0.1.0', 'started_at': NOW - 3600, 'connection': 'up',
              'last_delivery_at': NOW - 9.75, 'last_inventory_sync_at': NOW - 1000,
              'last_heartbeat_sent_at': NOW - 50, 'last_whitelist_refresh_at': NOW - 100, 'filtered_total': 3,
              'health': {'status': 'CRITICAL', 'checks': [
                  {'name': 'pvesh', 'status': 'OK', 'reason': '', 'values': {}},
                  {'name': 'cluster', 'status': 'CRITICAL', 'reason': 'no quorum', 'values': {}},
                  {'name': 'odd "name"\\ \n', 'status': 'weird', 'reason': '', 'values': {}}]},
              'alerts': [alerts.BREAKER_OPEN, 'accountdb_configuration']}
    outbox = {'depth': 3, 'bytes': 900, 'oldest_age': 12.5, 'dead': 1, 'quarantine': 2, 'dropped': 4,
              'spooled': 120, 'hookscript_errors': 5}
    breaker = {'state': 'half_open', 'failures': 3, 'opened_at': NOW - 1000, 'changed_at': NOW - 500}
    whitelist = {'state': 'fresh', 'filtering': True, 'count': 5, 'fetched_at': NOW - 30, 'age': 30.0}
    taken = status.build({'node': 'pve1'}, NOW, daemon, outbox, breaker, whitelist=whitelist, running=True)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(taken.get(key), dict):
            taken[key] = dict(taken[key], **value)
        else:
            taken[key] = value
    return taken
