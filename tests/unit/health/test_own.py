"""health/own.py: the checks of pve-hooks itself from real state files and snapshots, and of AccountDB."""

import os

import pytest

from pve_hooks.accountdb import errors
from pve_hooks.config import loader as config
from pve_hooks.health import node, own
from pve_hooks.health.result import CRITICAL, OK, UNKNOWN, WARNING
from tests.support.health import NOW, check, write_state


# -- reconciler -----------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists('/proc/42'),
                    reason='writes pid 42 to daemon.json and expects it alive: no pid 42 in a fresh PID namespace '
                           '(the make deb-check-chroot chroot)')
def test_reconciler(settings):
    missing = check(settings, own.check_reconciler)
    assert missing.status == CRITICAL and 'no heartbeat' in missing.reason
    write_state(settings, 'daemon.json', {'heartbeat_at': NOW - 30, 'pid': 42})
    fresh = check(settings, own.check_reconciler)
    assert fresh.status == OK and fresh.values == {'age_seconds': 30.0, 'pid': 42}
    write_state(settings, 'daemon.json', {'heartbeat_at': NOW - 181})
    assert check(settings, own.check_reconciler).status == CRITICAL
    write_state(settings, 'daemon.json', {'heartbeat_at': NOW + 5})  # clock skew: not negative
    assert check(settings, own.check_reconciler).values['age_seconds'] == 0
    write_state(settings, 'daemon.json', '{broken')   # read as no state: no heartbeat
    assert check(settings, own.check_reconciler).status == CRITICAL
    write_state(settings, 'daemon.json', {'heartbeat_at': 'yesterday'})
    assert check(settings, own.check_reconciler).status == CRITICAL


# -- outbox -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('stats, status, word', [
    ({}, OK, '0 events waiting'),
    ({'depth': 3, 'oldest_age': 12.0}, OK, '3 events waiting, oldest 12s'),
    ({'depth': 3, 'oldest_age': 700.0}, WARNING, 'oldest event waiting 700s'),
    ({'depth': 3, 'oldest_age': 4000.0}, CRITICAL, 'oldest event waiting 4000s'),
    ({'dead': 2}, WARNING, '2 dead'),
    ({'quarantine': 1}, WARNING, '1 quarantined'),
    ({'dropped': 5}, WARNING, '5 dropped'),
    ({'depth': 10000}, WARNING, 'alerts.outbox_depth'),
    ({'dead': 1, 'oldest_age': 4000.0}, CRITICAL, '1 dead'),
])
def test_outbox(settings, stats, status, word):
    found = check(settings, own.check_outbox, outbox=stats)
    assert found.status == status and word in found.reason


def test_an_unreadable_outbox_is_unknown(settings):
    os.makedirs(os.path.dirname(settings['paths.spool_dir']), exist_ok=True)
    with open(settings['paths.spool_dir'], 'w'):
        pass   # a file where the spool directory should be
    found = check(settings, own.check_outbox)
    assert found.status == UNKNOWN and 'cannot read the outbox' in found.reason


def test_outbox_default_reads_the_real_spool(settings):
    result = own.check_outbox(node.Probe(settings))
    assert result.status == OK and result.values['depth'] == 0


# -- breaker ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('record, status, word', [
    (None, OK, 'closed'),
    ({'state': 'closed', 'failures': 0, 'opened_at': None, 'changed_at': None}, OK, 'closed'),
    ({'state': 'open', 'failures': 5, 'opened_at': NOW - 10, 'changed_at': NOW - 10}, WARNING,
     'open for 10s after 5 transient failures'),
    ({'state': 'open', 'failures': 6, 'opened_at': NOW - 60, 'changed_at': NOW - 60}, WARNING,
     'half-open after 6'),
    ({'state': 'half_open', 'failures': 5, 'opened_at': NOW - 99, 'changed_at': NOW}, WARNING, 'half-open'),
    # What the breaker itself makes of a file it cannot use: closed (it rewrites it at the next transition).
    ({'state': 'open', 'failures': 5}, OK, 'closed'),
    ({'state': 'ajar'}, OK, 'closed'),
    ('{not json', OK, 'closed'),
])
def test_breaker(settings, record, status, word):
    if record is not None:
        write_state(settings, 'breaker.json', record)
    before = sorted(os.listdir(settings['paths.state_dir'])) if record is not None else None
    result = check(settings, own.check_breaker, **{'breaker.reset_timeout': 60.0})
    assert result.status == status and word in result.reason
    if record is not None:  # read-only: no lock file, no rewrite
        assert sorted(os.listdir(settings['paths.state_dir'])) == before


def test_breaker_file_written_by_the_breaker_module_is_understood(settings):
    from pve_hooks.accountdb import breaker

    real = breaker.from_settings(settings, clock=lambda: NOW - 5)
    for _ in range(settings['breaker.failure_threshold']):
        real.record_failure()
    result = check(settings, own.check_breaker)
    assert result.status == WARNING and result.values['state'] == 'open'
    assert result.values['open_seconds'] == 5


# -- whitelist --------------------------------------------------------------------------------------

def test_whitelist(settings):
    assert check(settings, own.check_whitelist).status == OK
    write_state(settings, 'whitelist.json', {'fetched_at': NOW - 100, 'vmids': [100, 101]})
    fresh = check(settings, own.check_whitelist)
    assert fresh.status == OK and fresh.values == {'age_seconds': 100.0, 'count': 2}
    write_state(settings, 'whitelist.json', {'fetched_at': NOW - 90000, 'vmids': []})
    stale = check(settings, own.check_whitelist)
    assert stale.status == CRITICAL and 'whitelist.max_stale' in stale.reason
    write_state(settings, 'whitelist.json', {'fetched_at': None, 'vmids': None})
    assert check(settings, own.check_whitelist).status == OK
    write_state(settings, 'whitelist.json', '[]')   # the cache reads a corrupt file as no list
    assert check(settings, own.check_whitelist).status == OK


# -- accountdb --------------------------------------------------------------------------------------

class Client:
    def __init__(self, error=None):
        self.error = error
        self.closed = False

    def health(self):
        if self.error:
            raise self.error
        return {'status': 'ok'}

    def close(self):
        self.closed = True


def test_accountdb(settings):
    client = Client()
    ok = check(settings, own.check_accountdb, client=lambda s: client)
    assert ok.status == OK and ok.values == {'latency_seconds': 1} and client.closed
    down = check(settings, own.check_accountdb, client=lambda s: Client(errors.TransientError('connection refused')))
    assert down.status == CRITICAL and 'connection refused' in down.reason
    token = check(settings, own.check_accountdb,
                  client=lambda s: Client(config.TokenError('/x: token file not found')))
    assert token.status == CRITICAL and 'token file not found' in token.reason
    unset = check(settings, own.check_accountdb, **{'accountdb.url': None})
    assert unset.status == UNKNOWN and 'accountdb.url' in unset.reason
