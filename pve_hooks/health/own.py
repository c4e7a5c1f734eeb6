"""Checks of pve-hooks itself, read from the status snapshot (observe.status), and of AccountDB.

The daemon passes its live snapshot; ``pve-hooks health`` reads one from
the state files (status.read). Either way the figures are the ones
``pve-hooks status``, the heartbeat and the metrics show, and the breaker's
state is the breaker's own reading (an open breaker past its timeout reads
half-open there, not here).
"""

from pve_hooks import UNIT
from pve_hooks.accountdb import breaker, errors
from pve_hooks.config import loader as config
from pve_hooks.health.result import CRITICAL, OK, UNKNOWN, WARNING, CheckResult, level, perf


def _age(probe, stamp):
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        return None
    return max(0.0, probe.clock() - stamp)


def _freshness(probe, name, stamp, limit, texts):
    """Return a CheckResult for the epoch ``stamp`` being at most ``limit`` seconds old.

    ``texts`` is (ok text, stale text), formatted with ``age`` and ``limit``.
    """
    age = _age(probe, stamp)
    values = {'age_seconds': round(age, 1)}
    perfdata = [perf(name + '_age', round(age, 1), 's', crit=limit, minimum=0)]
    if age > limit:
        return CheckResult(name, CRITICAL, texts[1].format(age=age, limit=limit), values, perfdata)
    return CheckResult(name, OK, texts[0].format(age=age, limit=limit), values, perfdata)


def check_reconciler(probe):
    """The daemon's heartbeat (``heartbeat_at`` of the snapshot) is younger than health.reconciler_stale."""
    snapshot, error = probe.snapshot()
    if error:
        return CheckResult('reconciler', UNKNOWN, error)
    daemon = snapshot['daemon']
    if _age(probe, daemon['heartbeat_at']) is None:
        return CheckResult('reconciler', CRITICAL, 'no heartbeat from the reconciler; is it running? '
                           '(systemctl start {0})'.format(UNIT), {'age_seconds': None})
    result = _freshness(probe, 'reconciler', daemon['heartbeat_at'], probe.settings['health.reconciler_stale'],
                        ('alive, last heartbeat {age:.0f}s ago',
                         'last heartbeat {age:.0f}s ago (over {limit:g}s): the reconciler is stopped or stuck'))
    result.values['pid'] = daemon['pid']
    return result


def check_outbox(probe):
    """Outbox depth, oldest event age (health.outbox_age_*), dead, quarantined and dropped events."""
    settings = probe.settings
    snapshot, error = probe.snapshot()
    if error:
        return CheckResult('outbox', UNKNOWN, error)
    stats = snapshot['outbox']
    depth, oldest = stats['depth'] or 0, stats['oldest_age']
    dead, quarantine, dropped = stats['dead'] or 0, stats['quarantine'] or 0, stats['dropped'] or 0
    values = {'depth': depth, 'oldest_age_seconds': None if oldest is None else round(oldest, 1), 'dead': dead,
              'quarantine': quarantine, 'dropped': dropped}
    warn, crit = settings['health.outbox_age_warning'], settings['health.outbox_age_critical']
    status = OK if oldest is None else level(oldest, warn, crit)
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
    """The AccountDB circuit breaker: closed OK, open or half-open WARNING.

    An open breaker is not CRITICAL by itself: how long events have been
    waiting is what escalates (the ``outbox`` check's oldest-event age).
    """
    snapshot, error = probe.snapshot()
    if error:
        return CheckResult('breaker', UNKNOWN, error)
    record = snapshot['breaker']
    state, failures = record['state'], record['failures']
    values = {'state': state, 'failures': failures}
    if state == breaker.CLOSED:
        return CheckResult('breaker', OK, 'closed', values)
    if state == breaker.HALF_OPEN:
        return CheckResult('breaker', WARNING, 'half-open after {0} transient failures: the next request probes '
                           'AccountDB'.format(failures), values)
    opened = _age(probe, record['opened_at']) or 0.0
    values['open_seconds'] = round(opened, 1)
    return CheckResult('breaker', WARNING, 'open for {0:.0f}s after {1} transient failures: AccountDB unreachable, '
                       'events wait in the outbox'.format(opened, failures), values)


def check_whitelist(probe):
    """Age of the cached whitelist (last confirmed by AccountDB) vs whitelist.max_stale."""
    snapshot, error = probe.snapshot()
    if error:
        return CheckResult('whitelist', UNKNOWN, error)
    whitelist = snapshot['whitelist']
    if whitelist is None or _age(probe, whitelist.get('fetched_at')) is None:
        return CheckResult('whitelist', OK, 'no whitelist cached yet: every guest is reported',
                           {'age_seconds': None})
    result = _freshness(probe, 'whitelist', whitelist['fetched_at'], probe.settings['whitelist.max_stale'],
                        ('cached whitelist confirmed {age:.0f}s ago',
                         'cached whitelist is {age:.0f}s old (over whitelist.max_stale {limit:g}s): AccountDB '
                         'not reached'))
    result.values['count'] = whitelist.get('count')
    return result


def check_accountdb(probe):
    """AccountDB's health endpoint answers ``{"status": "ok"}`` (CRITICAL if not)."""
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
