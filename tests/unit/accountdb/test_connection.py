"""Unit tests for pve_hooks.accountdb.connection: backoff, breaker, probe and log-once against the real reference AccountDB."""

import logging
import os

import pytest

from pve_hooks.accountdb import client as accountdb
from pve_hooks.accountdb import breaker
from pve_hooks.accountdb import errors
from pve_hooks.accountdb.connection import DOWN, UP, Connection, Deferred
from tests.support.accountdb import dev_accountdb  # noqa: F401 (fixture)
from tests.support.clock import Clock


def _connection(server, tmp_path, *overrides, clock=None):
    clock = clock or Clock()
    settings = server.settings('retry.base_delay=1', 'retry.max_delay=4', 'retry.max_retry_after=5',
                               'breaker.failure_threshold=3', 'breaker.reset_timeout=10',
                               'accountdb.timeout.read=5', *overrides, directory=str(tmp_path / 'client'))
    client = accountdb.Client(settings)
    gate = breaker.from_settings(settings, clock=clock)
    return Connection(settings, client, gate, clock=clock, rand=lambda: 0.5, pending=lambda: 37), clock


def _messages(caplog, level):
    return [record.getMessage() for record in caplog.records
            if record.name == 'pve_hooks.accountdb.connection' and record.levelno == level]


def test_transient_failures_back_off_open_the_breaker_and_recover_with_one_log_each(dev_accountdb, tmp_path, caplog):
    connection, clock = _connection(dev_accountdb, tmp_path)
    dev_accountdb.set_faults([{'mode': 'status', 'status': 503}])
    caplog.set_level(logging.DEBUG)
    delays = []
    for _attempt in range(3):
        with pytest.raises(errors.TransientError):
            connection.call('event batch', connection.client.health)
        delays.append(connection.next_try_at - clock.now)
        with pytest.raises(Deferred):   # backoff pending: not attempted
            connection.call('event batch', connection.client.health)
        clock.now = connection.next_try_at
    # full jitter with rand=0.5: half of min(cap 4, 1, 2, 4); the probe before each retry fails too
    assert delays == [0.5, 1.0, 2.0]
    assert connection.state == DOWN and connection.attempt == 3
    assert connection.breaker.state == breaker.OPEN
    with pytest.raises(Deferred) as deferred:
        connection.call('event batch', connection.client.health)
    assert 'circuit breaker open' in deferred.value.reason
    assert deferred.value.until > clock.now
    # one warning for the outage, not one per attempt; it names the kept events and the next try
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith('AccountDB unreachable (HTTP 503: injected fault: HTTP 503, during health check')
    assert '37 events kept in outbox, next try in 0.50 s' in warnings[0]

    dev_accountdb.set_faults([])
    clock.now += 10   # breaker half-opens: the health endpoint is probed first, then the call
    dev_accountdb.reset_stats()
    assert connection.call('event batch', connection.client.health)['status'] == 'ok'
    assert connection.state == UP and connection.attempt == 0 and connection.next_try_at == 0
    assert connection.breaker.state == breaker.CLOSED
    assert dev_accountdb.stats()['endpoints']['GET /api/v1/health']['count'] == 2
    infos = [m for m in _messages(caplog, logging.INFO) if 'reachable again' in m]
    assert infos == ['AccountDB reachable again after 3 failed attempts; delivering the 37 events kept in the outbox']


def test_retry_after_is_honoured_up_to_max_retry_after(dev_accountdb, tmp_path):
    connection, clock = _connection(dev_accountdb, tmp_path)
    assert connection.probe()
    dev_accountdb.set_faults([{'mode': 'status', 'status': 429, 'retry_after': 3, 'path': '/api/v1/events'}])
    with pytest.raises(errors.TransientError):
        connection.call('event batch', connection.client.send_events, 'pve1', [])
    assert connection.next_try_at - clock.now == 3.0
    dev_accountdb.set_faults([{'mode': 'status', 'status': 503, 'retry_after': 3600, 'path': '/api/v1/events'}])
    clock.now = connection.next_try_at
    with pytest.raises(errors.TransientError):
        connection.call('event batch', connection.client.send_events, 'pve1', [])
    assert connection.next_try_at - clock.now == 5.0   # retry.max_retry_after


def test_auth_failure_never_opens_the_breaker_and_a_rotated_token_is_picked_up(dev_accountdb, tmp_path, caplog):
    token_file = str(tmp_path / 'client-token')
    dev_accountdb.write_token(token_file, 'wrong-token')
    connection, clock = _connection(dev_accountdb, tmp_path, 'accountdb.token_file=' + token_file)
    caplog.set_level(logging.DEBUG)
    for _attempt in range(5):
        with pytest.raises(errors.AuthError):
            connection.call('event batch', connection.client.health)
        clock.now = connection.next_try_at
    assert connection.kind == 'auth'
    assert connection.breaker.state == breaker.CLOSED   # auth failures are not about availability
    assert connection.attempt == 5
    criticals = _messages(caplog, logging.CRITICAL)
    assert len(criticals) == 1 and criticals[0].startswith('AccountDB refused the token')
    assert 'wrong-token' not in caplog.text and dev_accountdb.token not in caplog.text
    dev_accountdb.write_token(token_file, dev_accountdb.token)   # the operator rotates the token
    assert connection.call('event batch', connection.client.health)['status'] == 'ok'
    assert connection.state == UP


def test_backoff_is_capped(dev_accountdb, tmp_path):
    connection, clock = _connection(dev_accountdb, tmp_path, 'breaker.failure_threshold=100')
    dev_accountdb.set_faults([{'mode': 'refuse'}])
    delays = []
    for _attempt in range(6):
        with pytest.raises(errors.TransientError):
            connection.call('heartbeat', connection.client.health)
        delays.append(connection.next_try_at - clock.now)
        clock.now = connection.next_try_at
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]   # rand 0.5 x min(retry.max_delay 4, 2**n)


def test_misconfigured_endpoint_stays_down_while_health_answers(dev_accountdb, tmp_path, caplog):
    connection, clock = _connection(dev_accountdb, tmp_path, 'accountdb.endpoints.events=/api/v1/nope')
    caplog.set_level(logging.DEBUG)
    assert connection.probe()
    for _attempt in range(3):
        with pytest.raises(errors.ConfigurationError):
            connection.call('event batch', connection.client.send_events, 'pve1', [])
        clock.now = connection.next_try_at
    # health answers before each retry, but that does not count as recovery
    assert connection.state == DOWN and connection.attempt == 3
    errors_logged = _messages(caplog, logging.ERROR)
    assert len(errors_logged) == 1 and 'misconfigured' in errors_logged[0]
    assert not [m for m in _messages(caplog, logging.INFO) if 'reachable again' in m]


def test_rejection_is_the_items_problem_not_the_connections(dev_accountdb, tmp_path):
    connection, _clock = _connection(dev_accountdb, tmp_path)
    with pytest.raises(errors.RejectedError):
        connection.call('inventory', connection.client.put_inventory, 'pve1', {'node': 'pve1', 'guests': 'nope'})
    assert connection.state == UP and connection.attempt == 0


def test_probe_reports_reachability(dev_accountdb, tmp_path):
    connection, _clock = _connection(dev_accountdb, tmp_path)
    dev_accountdb.set_faults([{'mode': 'garbage'}])
    assert connection.probe() is False
    assert connection.state == DOWN and 'malformed' in connection.summary()
    dev_accountdb.set_faults([])
    assert connection.probe() is True
    assert connection.state == UP and connection.summary() == 'up'
    assert connection.server_version is not None
    assert os.path.exists(breaker.breaker_path(connection.settings))


def test_a_clock_step_back_does_not_stretch_the_backoff(dev_accountdb, tmp_path):
    connection, clock = _connection(dev_accountdb, tmp_path)
    dev_accountdb.set_faults([{'mode': 'status', 'status': 503, 'count': 1}])
    with pytest.raises(errors.AccountDBError):
        connection.call('event batch', connection.client.health)
    clock.now -= 86400                      # the clock steps back a day
    with pytest.raises(Deferred) as deferred:
        connection.call('event batch', connection.client.health)
    assert deferred.value.until - clock.now <= 10 + 1   # the longest delay it could choose, not 86400 s more
    clock.now += 11
    assert connection.due()
