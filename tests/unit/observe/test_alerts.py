"""Unit tests for pve_hooks.observe.alerts: per-condition state, thresholds, rate limiting, logging.

No channel is configured here (alerts are only logged); the command and the
webhook are exercised for real in tests/integration/test_alert_channels.py.
"""

import logging

import pytest

from pve_hooks.observe import alerts
from pve_hooks.config import loader as config


class Clock:
    def __init__(self, now=1764150000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def alerter(clock):
    settings = config.load(env={}, require_file=False, overrides=[
        'node=pve1', 'alerts.after=300', 'alerts.repeat_interval=3600', 'alerts.outbox_depth=100',
        'alerts.pvesh_failures=3', 'whitelist.max_stale=86400'])
    return alerts.Alerter(settings, clock=clock)


def alert_lines(caplog):
    return [(record.levelname, record.ALERT, record.ALERT_STATUS, record.getMessage())
            for record in caplog.records if hasattr(record, 'ALERT_STATUS')]


def test_fires_once_suppresses_repeats_resends_after_interval_and_resolves(alerter, clock, caplog):
    caplog.set_level(logging.INFO, logger='pve_hooks.observe.alerts')
    assert alerter.raise_(alerts.DEAD_LETTERS, alerts.CRITICAL, '2 events in dead/') is True
    clock.now += 60
    assert alerter.raise_(alerts.DEAD_LETTERS, alerts.CRITICAL, '3 events in dead/') is False
    clock.now += 3540
    assert alerter.raise_(alerts.DEAD_LETTERS, alerts.CRITICAL, '3 events in dead/') is True
    clock.now += 10
    assert alerter.resolve(alerts.DEAD_LETTERS, 'dead/ is empty') is True
    assert alerter.resolve(alerts.DEAD_LETTERS, 'dead/ is empty') is False
    assert alert_lines(caplog) == [
        ('CRITICAL', 'dead_letters', 'firing', 'ALERT dead_letters: 2 events in dead/'),
        ('CRITICAL', 'dead_letters', 'firing', 'ALERT dead_letters: 3 events in dead/ (still active since 3600 s)'),
        ('INFO', 'dead_letters', 'resolved', 'ALERT dead_letters resolved after 3610 s: dead/ is empty'),
    ]
    assert alerter.active() == {}


def test_resolve_of_an_inactive_condition_does_nothing(alerter, caplog):
    caplog.set_level(logging.DEBUG, logger='pve_hooks.observe.alerts')
    assert alerter.resolve(alerts.BREAKER_OPEN) is False
    assert caplog.records == []


def test_conditions_are_independent(alerter, clock):
    assert alerter.raise_(alerts.DEAD_LETTERS, alerts.CRITICAL, 'x')
    assert alerter.raise_(alerts.PVESH_FAILING, alerts.CRITICAL, 'y')
    assert alerter.active() == {alerts.DEAD_LETTERS: clock.now, alerts.PVESH_FAILING: clock.now}


def test_warning_severity_logs_at_warning(alerter, caplog):
    caplog.set_level(logging.INFO, logger='pve_hooks.observe.alerts')
    alerter.raise_(alerts.OUTBOX_DEPTH, alerts.WARNING, 'getting full')
    assert alert_lines(caplog)[0][0] == 'WARNING'


def test_breaker_alerts_only_after_alerts_after(alerter, clock):
    since = clock.now
    clock.now += 299
    assert alerter.breaker('open', since) is False
    clock.now += 1
    assert alerter.breaker('half_open', since) is True
    assert alerts.BREAKER_OPEN in alerter.active()
    assert alerter.breaker('closed', None) is True
    assert alerter.active() == {}


def test_outbox_depth_and_drops(alerter):
    assert alerter.outbox(99) is False
    assert alerter.outbox(100) is True
    assert set(alerter.active()) == {alerts.OUTBOX_DEPTH}
    assert alerter.outbox(150, dropped_since_last=4) is True
    assert set(alerter.active()) == {alerts.OUTBOX_DEPTH, alerts.OUTBOX_FULL}
    assert alerter.outbox(10, dropped_since_last=0) is True  # both resolved
    assert alerter.active() == {}


def test_dead_letters(alerter):
    assert alerter.dead_letters(0) is False
    assert alerter.dead_letters(1) is True
    assert alerter.dead_letters(2) is False
    assert alerter.dead_letters(0) is True


def test_whitelist_stale(alerter):
    assert alerter.whitelist(None) is False
    assert alerter.whitelist(86400) is False
    assert alerter.whitelist(86401) is True
    assert alerter.whitelist(5) is True
    assert alerter.active() == {}


def test_pvesh_failing_after_threshold(alerter):
    assert alerter.pvesh(2, 'timed out') is False
    assert alerter.pvesh(3, 'timed out') is True
    assert alerter.pvesh(4, 'timed out') is False
    assert alerter.pvesh(0) is True


def test_node_health(alerter):
    assert alerter.health('WARNING', 'load high') is False
    assert alerter.health('CRITICAL', 'pveproxy inactive') is True
    assert alerter.health('OK') is True


def test_accountdb_auth(alerter, caplog):
    caplog.set_level(logging.INFO, logger='pve_hooks.observe.alerts')
    assert alerter.accountdb_auth(True, 'HTTP 401') is True
    assert alerter.accountdb_auth(False) is True
    assert [line[3] for line in alert_lines(caplog)] == [
        'ALERT accountdb_auth: AccountDB refuses the token (HTTP 401); check accountdb.token_file; events wait '
        'in the outbox',
        'ALERT accountdb_auth resolved after 0 s: AccountDB accepts the token again']


def test_every_condition_has_a_constant():
    assert sorted(alerts.CONDITIONS) == sorted({
        'accountdb_auth', 'breaker_open', 'outbox_full', 'outbox_depth', 'dead_letters', 'whitelist_stale',
        'pvesh_failing', 'node_health_critical', 'accountdb_configuration', 'config_unreadable_by_hookscript'})


def _snapshot(clock, **changes):
    """A status snapshot of a healthy node at ``clock.now``, with ``changes`` applied (section -> dict)."""
    from pve_hooks.observe import status

    settings = {'node': 'pve1'}
    outbox = {'depth': 0, 'oldest_age': None, 'dead': 0, 'quarantine': 0, 'dropped': 0}
    breaker = {'state': 'closed', 'failures': 0, 'opened_at': None, 'changed_at': None}
    snapshot = status.build(settings, clock.now, {'pid': 1, 'health': {'status': 'OK', 'checks': []}}, outbox,
                            breaker, running=True, whitelist={'age': 10.0, 'state': 'ok'})
    for section, values in changes.items():
        if isinstance(snapshot.get(section), dict):
            snapshot[section].update(values)
        else:
            snapshot[section] = values
    return snapshot


def test_evaluate_raises_every_condition_from_one_snapshot_and_resolves_them(alerter, clock, caplog):
    caplog.set_level(logging.INFO, logger='pve_hooks.observe.alerts')
    assert alerts.evaluate(alerter, _snapshot(clock)) == []
    alerter.dropped_since_last(0)
    bad = _snapshot(clock, outbox={'depth': 150, 'dead': 2, 'dropped': 4},
                    breaker={'state': 'open', 'changed_at': clock.now - 400, 'opened_at': clock.now - 400},
                    daemon={'connection_kind': 'auth', 'last_error': 'HTTP 401'},
                    whitelist={'age': 90000.0, 'state': 'stale'},
                    inventory={'pvesh_failures': 3, 'pvesh_error': 'pvesh timed out'},
                    health={'status': 'CRITICAL', 'checks': [{'name': 'services', 'status': 'CRITICAL',
                                                               'reason': 'not active: pveproxy'}]})
    assert alerts.evaluate(alerter, bad) == sorted([
        'accountdb_auth', 'breaker_open', 'dead_letters', 'node_health_critical', 'outbox_depth', 'outbox_full',
        'pvesh_failing', 'whitelist_stale'])
    messages = [line[3] for line in alert_lines(caplog)]
    assert any('services: not active: pveproxy' in message for message in messages)
    assert any('4 events dropped' in message for message in messages)
    config_error = _snapshot(clock, daemon={'connection_kind': 'configuration', 'last_error': 'HTTP 404'})
    assert alerts.evaluate(alerter, config_error) == ['accountdb_configuration']   # the rest resolved
    assert alerts.evaluate(alerter, _snapshot(clock)) == []


def test_evaluate_survives_a_malformed_snapshot(alerter, clock, caplog):
    alerter.raise_('dead_letters', alerts.CRITICAL, 'x')
    assert alerts.evaluate(alerter, {'outbox': None}) == ['dead_letters']   # kept as it was
    assert 'alert evaluation failed' in caplog.text


@pytest.mark.parametrize('url, shown', [
    ('https://hooks.example.com/services/T0/B0/SECRET', 'https://hooks.example.com/***'),
    ('https://user:pw@hooks.example.com:8443/x?token=1', 'https://hooks.example.com:8443/***'),
    ('https://hooks.example.com?token=1', 'https://hooks.example.com/***'),
    ('http://127.0.0.1:9000', 'http://127.0.0.1:9000'),
])
def test_safe_url_keeps_scheme_and_host_only(url, shown):
    assert alerts.safe_url(url) == shown
