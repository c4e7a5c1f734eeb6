"""Unit tests for pve_hooks.observe.metrics: the registry and its text format, checked with a real parser."""

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pve_hooks.observe import metrics


def parse(text):
    """Return {family name: family} as prometheus_client's parser reads ``text``."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples}


def test_names_are_unique_prometheus_names():
    names = [metric.name for metric in metrics.METRICS]
    assert len(names) == len(set(names))
    for metric in metrics.METRICS:
        assert metric.name.startswith('pve_hooks_')
        assert all(ch.islower() or ch.isdigit() or ch == '_' for ch in metric.name)
        assert metric.name.endswith('_total') == (metric.type == metrics.COUNTER), metric.name


def test_every_metric_issue_7_lists_is_defined():
    wanted = ['events_spooled_total', 'events_delivered_total', 'events_duplicate_total',
              'events_rejected_total', 'events_filtered_total', 'events_dropped_total', 'outbox_depth',
              'outbox_oldest_age_seconds', 'outbox_dead', 'outbox_quarantine', 'delivery_latency_seconds',
              'accountdb_requests_total', 'breaker_state', 'last_delivery_timestamp_seconds',
              'last_inventory_sync_timestamp_seconds', 'last_whitelist_refresh_timestamp_seconds',
              'whitelist_cache_age_seconds', 'pvesh_duration_seconds', 'pvesh_failures_total',
              'hookscript_errors_total', 'health_status']
    assert sorted(set('pve_hooks_' + name for name in wanted) - set(metrics.BY_NAME)) == []


def test_empty_registry_parses_with_help_and_type_for_every_metric():
    text = metrics.Registry().render()
    families = parse(text)
    for metric in metrics.METRICS:
        assert '# HELP {0} '.format(metric.name) in text
        assert '# TYPE {0} {1}\n'.format(metric.name, metric.type) in text
    assert samples(families['pve_hooks_events_delivered'])[('pve_hooks_events_delivered_total', ())] == 0
    assert families['pve_hooks_outbox_depth'].samples == []


def test_full_registry_parses_to_the_values_set():
    registry = metrics.Registry()
    registry.inc(metrics.EVENTS_DELIVERED, 12)
    registry.inc(metrics.EVENTS_DELIVERED)
    registry.set(metrics.OUTBOX_DEPTH, 7)
    registry.set(metrics.OUTBOX_OLDEST_AGE, 12.5)
    registry.set(metrics.LAST_DELIVERY, 1764150000.123)
    for value in (0.01, 0.15, 0.15, 4, 5000):
        registry.observe(metrics.DELIVERY_LATENCY, value)
    metrics.record_request(registry, 'events', 200)
    metrics.record_request(registry, 'events', 503)
    metrics.record_request(registry, 'events', None)
    metrics.record_request(registry, 'inventory', 204)
    registry.set_state(metrics.BREAKER_STATE, 'half_open', metrics.BREAKER_STATES)
    metrics.record_pvesh(registry, 'qemu', 0.25, ok=True)
    metrics.record_pvesh(registry, 'qemu', 0.5, ok=False)
    metrics.collect_health(registry, [{'name': 'pvesh', 'status': 'OK'}, {'name': 'cluster', 'status': 'CRITICAL'},
                                      {'name': 'odd "name"\\ \n', 'status': 'weird'}])
    registry.set(metrics.INFO, 1, version='0.1.0', node='pve1')

    families = parse(registry.render())

    assert samples(families['pve_hooks_events_delivered'])[('pve_hooks_events_delivered_total', ())] == 13
    assert samples(families['pve_hooks_outbox_depth'])[('pve_hooks_outbox_depth', ())] == 7
    assert samples(families['pve_hooks_outbox_oldest_age_seconds'])[
        ('pve_hooks_outbox_oldest_age_seconds', ())] == 12.5
    assert samples(families['pve_hooks_last_delivery_timestamp_seconds'])[
        ('pve_hooks_last_delivery_timestamp_seconds', ())] == 1764150000.123

    latency = families['pve_hooks_delivery_latency_seconds']
    assert latency.type == 'histogram'
    values = samples(latency)
    assert values[('pve_hooks_delivery_latency_seconds_bucket', (('le', '0.05'),))] == 1
    assert values[('pve_hooks_delivery_latency_seconds_bucket', (('le', '0.2'),))] == 3
    assert values[('pve_hooks_delivery_latency_seconds_bucket', (('le', '5'),))] == 4
    assert values[('pve_hooks_delivery_latency_seconds_bucket', (('le', '3600'),))] == 4
    assert values[('pve_hooks_delivery_latency_seconds_bucket', (('le', '+Inf'),))] == 5
    assert values[('pve_hooks_delivery_latency_seconds_count', ())] == 5
    assert math.isclose(values[('pve_hooks_delivery_latency_seconds_sum', ())], 5004.31)

    requests = samples(families['pve_hooks_accountdb_requests'])
    assert requests[('pve_hooks_accountdb_requests_total', (('endpoint', 'events'), ('status_class', '5xx')))] == 1
    assert requests[('pve_hooks_accountdb_requests_total', (('endpoint', 'events'), ('status_class', 'error')))] == 1
    assert requests[('pve_hooks_accountdb_requests_total', (('endpoint', 'inventory'),
                                                            ('status_class', '2xx')))] == 1

    breaker = samples(families['pve_hooks_breaker_state'])
    assert breaker == {('pve_hooks_breaker_state', (('state', 'closed'),)): 0,
                       ('pve_hooks_breaker_state', (('state', 'half_open'),)): 1,
                       ('pve_hooks_breaker_state', (('state', 'open'),)): 0}

    pvesh = samples(families['pve_hooks_pvesh_duration_seconds'])
    assert families['pve_hooks_pvesh_duration_seconds'].type == 'summary'
    assert pvesh[('pve_hooks_pvesh_duration_seconds_count', (('call', 'qemu'),))] == 2
    assert pvesh[('pve_hooks_pvesh_duration_seconds_sum', (('call', 'qemu'),))] == 0.75
    assert samples(families['pve_hooks_pvesh_failures'])[
        ('pve_hooks_pvesh_failures_total', (('call', 'qemu'),))] == 1

    health = samples(families['pve_hooks_health_status'])
    assert health[('pve_hooks_health_status', (('check', 'pvesh'),))] == 0
    assert health[('pve_hooks_health_status', (('check', 'cluster'),))] == 2
    assert health[('pve_hooks_health_status', (('check', 'odd "name"\\ \n'),))] == 3


def test_collect_outbox_takes_a_mapping_or_an_object():
    class Stats:
        depth, oldest_age, dead, quarantine = 4, 30.0, 1, 2
        spooled, dropped, hookscript_errors = 100, 3, None

    registry = metrics.Registry()
    registry.set(metrics.HOOKSCRIPT_ERRORS, 5)
    metrics.collect_outbox(registry, Stats())
    assert registry.get(metrics.OUTBOX_DEPTH) == 4
    assert registry.get(metrics.EVENTS_SPOOLED) == 100
    assert registry.get(metrics.HOOKSCRIPT_ERRORS) == 5
    metrics.collect_outbox(registry, {'depth': 0, 'dropped': 4})
    assert registry.get(metrics.OUTBOX_DEPTH) == 0
    assert registry.get(metrics.EVENTS_DROPPED) == 4
    assert registry.get(metrics.OUTBOX_DEAD) == 1


def test_misuse_raises_clear_errors():
    registry = metrics.Registry()
    with pytest.raises(KeyError):
        registry.inc('pve_hooks_nope_total')
    with pytest.raises(ValueError, match='takes labels endpoint, status_class, got endpoint'):
        registry.inc(metrics.ACCOUNTDB_REQUESTS, endpoint='events')
    with pytest.raises(ValueError, match='cannot decrease'):
        registry.inc(metrics.EVENTS_DELIVERED, -1)
    with pytest.raises(ValueError, match='use observe'):
        registry.set(metrics.DELIVERY_LATENCY, 1)
    with pytest.raises(ValueError, match='use inc'):
        registry.observe(metrics.OUTBOX_DEPTH, 1)


def test_remove_drops_a_series():
    registry = metrics.Registry()
    registry.set(metrics.HEALTH_STATUS, 0, check='gone')
    registry.remove(metrics.HEALTH_STATUS, check='gone')
    assert registry.get(metrics.HEALTH_STATUS, check='gone') is None
    assert 'check="gone"' not in registry.render()


@pytest.mark.parametrize('status, text', [(200, '2xx'), (204, '2xx'), (301, '3xx'), (401, '4xx'), (503, '5xx'),
                                          (None, 'error'), (0, 'error'), (999, 'error')])
def test_status_class(status, text):
    assert metrics.status_class(status) == text


@pytest.mark.parametrize('value, text', [(0, '0'), (3, '3'), (2.5, '2.5'), (float('inf'), '+Inf'),
                                         (float('-inf'), '-Inf'), (float('nan'), 'NaN'), (1e20, '1e+20')])
def test_format_value(value, text):
    assert metrics.format_value(value) == text


@pytest.mark.parametrize('listen, expected', [('127.0.0.1:9959', ('127.0.0.1', 9959)),
                                              ('[::1]:9959', ('::1', 9959)), ('localhost:1', ('localhost', 1))])
def test_parse_listen(listen, expected):
    assert metrics.parse_listen(listen) == expected


@pytest.mark.parametrize('listen', ['9959', ':9959', '127.0.0.1:', '127.0.0.1:x'])
def test_parse_listen_rejects(listen):
    with pytest.raises(ValueError):
        metrics.parse_listen(listen)


def test_collect_alerts_sets_every_condition():
    from pve_hooks.observe import alerts
    registry = metrics.Registry()
    metrics.collect_alerts(registry, {alerts.BREAKER_OPEN: 1764150000.0})
    values = samples(parse(registry.render())['pve_hooks_alert_active'])
    assert len(values) == len(alerts.CONDITIONS)
    assert values[('pve_hooks_alert_active', (('condition', 'breaker_open'),))] == 1
    assert values[('pve_hooks_alert_active', (('condition', 'dead_letters'),))] == 0
