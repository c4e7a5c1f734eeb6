"""Unit tests for pve_hooks.observe.metrics: its counters and the snapshot collector, read back with a parser."""

import copy
import logging
import math
import os
import re

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pve_hooks import __version__
from pve_hooks.daemon.delivery import PassResult
from pve_hooks.observe import alerts, metrics
from tests.support.snapshot import NOW, snapshot

# Every name, type and help text the hand-written registry exposed before prometheus_client:
# dashboards and alert rules depend on them.
PREVIOUS = {
    'pve_hooks_events_spooled_total': ('counter', 'Events the hookscript wrote to the outbox.'),
    'pve_hooks_events_delivered_total': ('counter', 'Events AccountDB accepted.'),
    'pve_hooks_events_duplicate_total': ('counter', 'Events AccountDB already had (same event_id); acknowledged.'),
    'pve_hooks_events_rejected_total': ('counter',
                                        'Events AccountDB rejected for good; moved to the dead directory.'),
    'pve_hooks_events_filtered_total': ('counter', 'Events for guests outside the whitelist; acknowledged '
                                                   'locally, not sent.'),
    'pve_hooks_events_dropped_total': ('counter', 'Events dropped because the outbox was full.'),
    'pve_hooks_outbox_depth': ('gauge', 'Events waiting in the outbox (ready and claimed).'),
    'pve_hooks_outbox_oldest_age_seconds': ('gauge', 'Age of the oldest event waiting in the outbox (0 when '
                                                     'empty).'),
    'pve_hooks_outbox_dead': ('gauge', 'Events in the outbox dead directory (rejected by AccountDB).'),
    'pve_hooks_outbox_quarantine': ('gauge', 'Files in the outbox quarantine directory (unreadable or corrupt).'),
    'pve_hooks_delivery_latency_seconds': ('histogram', 'Seconds from an event being spooled to AccountDB '
                                                        'acknowledging it.'),
    'pve_hooks_accountdb_requests_total': ('counter', 'AccountDB requests by endpoint and HTTP status class '
                                                      '(error = no HTTP response).'),
    'pve_hooks_breaker_state': ('gauge', 'Circuit breaker towards AccountDB: 1 for the current state, 0 for the '
                                         'others.'),
    'pve_hooks_last_delivery_timestamp_seconds': ('gauge', 'Unix time of the last successful delivery to '
                                                           'AccountDB.'),
    'pve_hooks_last_inventory_sync_timestamp_seconds': ('gauge', 'Unix time of the last inventory AccountDB '
                                                                 'acknowledged.'),
    'pve_hooks_last_whitelist_refresh_timestamp_seconds': ('gauge', 'Unix time of the last successful whitelist '
                                                                    'refresh.'),
    'pve_hooks_whitelist_cache_age_seconds': ('gauge', 'Age of the cached whitelist in seconds.'),
    'pve_hooks_pvesh_duration_seconds': ('summary', 'Seconds pvesh calls took (count = calls made).'),
    'pve_hooks_pvesh_failures_total': ('counter', 'pvesh calls that failed, timed out or printed garbage.'),
    'pve_hooks_hookscript_errors_total': ('counter', 'Errors the hookscript recorded (it still exited 0).'),
    'pve_hooks_health_status': ('gauge', 'Health check status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.'),
    'pve_hooks_alert_active': ('gauge', 'Alert conditions: 1 while active, 0 once resolved.'),
    'pve_hooks_info': ('gauge', 'Always 1; labels carry the pve-hooks version and node name.'),
}


def parse(text):
    """Return {family name: family} as prometheus_client's parser reads ``text`` (bytes or str)."""
    if isinstance(text, bytes):
        text = text.decode('utf-8')
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples}


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def delivery(accepted=0, duplicate=0, rejected=0, filtered=0, latencies=()):
    result = PassResult()
    result.accepted, result.duplicate, result.rejected, result.filtered = accepted, duplicate, rejected, filtered
    result.latencies = list(latencies)
    return result


# -- names -----------------------------------------------------------------------------------------


def test_names_are_unique_prometheus_names():
    names = [metric.name for metric in metrics.METRICS]
    assert len(names) == len(set(names))
    for metric in metrics.METRICS:
        assert metric.name.startswith('pve_hooks_')
        assert all(ch.islower() or ch.isdigit() or ch == '_' for ch in metric.name)
        assert metric.name.endswith('_total') == (metric.type == metrics.COUNTER), metric.name


def test_every_previous_name_type_and_help_is_kept():
    for name, (type_, help_) in PREVIOUS.items():
        assert (metrics.BY_NAME[name].type, metrics.BY_NAME[name].help) == (type_, help_), name
    assert set(metrics.BY_NAME) - set(PREVIOUS) == {metrics.LAST_HEARTBEAT}


def test_a_full_render_has_help_and_type_for_every_metric():
    text = metrics.Metrics(lambda: snapshot()).render().decode()
    families = parse(text)
    for metric in metrics.METRICS:
        assert '# HELP {0} {1}\n'.format(metric.name, metric.help) in text
        assert '# TYPE {0} {1}\n'.format(metric.name, metric.type) in text
        family = families[metric.name[:-len('_total')] if metric.type == metrics.COUNTER else metric.name]
        assert family.type == metric.type


def test_the_docs_table_lists_every_metric_with_its_type_and_labels():
    docs = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'docs', 'logging.md')
    with open(docs, encoding='utf-8') as stream:
        section = stream.read().split('\n## Metrics\n', 1)[1].split('\n## ', 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        if line.startswith('| `pve_hooks_'):
            labels = re.findall(r'`(\w+)`', re.sub(r'\(.*?\)', '', cells[2]))  # not the (`2xx`...) values
            documented[cells[0].strip('`')] = (cells[1].split()[0], tuple(labels))
    assert sorted(documented) == sorted(metrics.BY_NAME)
    for name, (type_, labels) in documented.items():
        assert (type_, labels) == (metrics.BY_NAME[name].type, metrics.BY_NAME[name].labels), name


# -- what Metrics counts ---------------------------------------------------------------------------


def test_without_a_snapshot_only_the_own_counters_and_info_are_rendered():
    families = parse(metrics.Metrics(node='pve7').render())
    assert samples(families['pve_hooks_events_delivered'])[('pve_hooks_events_delivered_total', ())] == 0
    assert families['pve_hooks_accountdb_requests'].samples == []
    assert samples(families['pve_hooks_info']) == {
        ('pve_hooks_info', (('node', 'pve7'), ('version', __version__))): 1}
    assert 'pve_hooks_outbox_depth' not in families
    assert 'pve_hooks_alert_active' not in families


def test_count_delivery_adds_a_pass_and_its_latencies():
    registry = metrics.Metrics()
    registry.count_delivery(delivery(accepted=12, duplicate=2, rejected=1, filtered=3,
                                     latencies=[0.01, 0.15, 0.15, 4, 5000]))
    registry.count_delivery(delivery(accepted=1))
    registry.count_delivery(delivery())

    reg = registry.registry
    assert value(reg, metrics.EVENTS_DELIVERED) == 13
    assert value(reg, metrics.EVENTS_DUPLICATE) == 2
    assert value(reg, metrics.EVENTS_REJECTED) == 1
    assert value(reg, metrics.EVENTS_FILTERED) == 3
    latency = parse(registry.render())['pve_hooks_delivery_latency_seconds']
    assert latency.type == 'histogram'
    buckets = {sample.labels['le']: sample.value for sample in latency.samples if sample.name.endswith('_bucket')}
    assert [float(bound) for bound in buckets][:-1] == list(metrics.LATENCY_BUCKETS)
    assert buckets['0.05'] == 1
    assert buckets['0.2'] == 3
    assert buckets['5.0'] == 4
    assert buckets['3600.0'] == 4
    assert buckets['+Inf'] == 5
    assert value(reg, 'pve_hooks_delivery_latency_seconds_count') == 5
    assert math.isclose(value(reg, 'pve_hooks_delivery_latency_seconds_sum'), 5004.31)


def test_on_request_counts_by_endpoint_and_status_class():
    registry = metrics.Metrics()
    for endpoint, http_status in (('events', 200), ('events', 503), ('events', None), ('inventory', 204)):
        registry.on_request('POST', endpoint, metrics.status_class(http_status), 0.01)
    requests = samples(parse(registry.render())['pve_hooks_accountdb_requests'])
    assert requests == {
        ('pve_hooks_accountdb_requests_total', (('endpoint', 'events'), ('status_class', '2xx'))): 1,
        ('pve_hooks_accountdb_requests_total', (('endpoint', 'events'), ('status_class', '5xx'))): 1,
        ('pve_hooks_accountdb_requests_total', (('endpoint', 'events'), ('status_class', 'error'))): 1,
        ('pve_hooks_accountdb_requests_total', (('endpoint', 'inventory'), ('status_class', '2xx'))): 1}


def test_count_pvesh_times_calls_and_counts_failures():
    registry = metrics.Metrics()
    registry.count_pvesh('qemu', 0.25, ok=True)
    registry.count_pvesh('qemu', 0.5, ok=False)
    registry.count_pvesh('lxc', 0.125, ok=True)
    families = parse(registry.render())
    assert families['pve_hooks_pvesh_duration_seconds'].type == 'summary'
    reg = registry.registry
    assert value(reg, 'pve_hooks_pvesh_duration_seconds_count', call='qemu') == 2
    assert value(reg, 'pve_hooks_pvesh_duration_seconds_sum', call='qemu') == 0.75
    assert value(reg, metrics.PVESH_FAILURES, call='qemu') == 1
    assert value(reg, metrics.PVESH_FAILURES, call='lxc') == 0  # a series from the first call, for rate()


def test_each_metrics_has_its_own_registry():
    first, second = metrics.Metrics(), metrics.Metrics()
    first.count_delivery(delivery(accepted=2))
    assert first.registry is not prometheus_client.REGISTRY
    assert value(second.registry, metrics.EVENTS_DELIVERED) == 0
    assert prometheus_client.REGISTRY.get_sample_value(metrics.EVENTS_DELIVERED) is None


# -- what the snapshot gives -----------------------------------------------------------------------


def test_snapshot_series():
    families = parse(metrics.Metrics(lambda: snapshot()).render())

    def one(name):
        return [sample.value for sample in families[name].samples]

    assert one('pve_hooks_outbox_depth') == [3]
    assert one('pve_hooks_outbox_oldest_age_seconds') == [12.5]
    assert one('pve_hooks_outbox_dead') == [1]
    assert one('pve_hooks_outbox_quarantine') == [2]
    assert one('pve_hooks_events_spooled') == [120]
    assert one('pve_hooks_events_dropped') == [4]
    assert one('pve_hooks_hookscript_errors') == [5]
    assert families['pve_hooks_events_spooled'].type == 'counter'
    assert one('pve_hooks_last_delivery_timestamp_seconds') == [NOW - 9.75]
    assert one('pve_hooks_last_inventory_sync_timestamp_seconds') == [NOW - 1000]
    assert one('pve_hooks_last_whitelist_refresh_timestamp_seconds') == [NOW - 100]
    assert one('pve_hooks_last_heartbeat_timestamp_seconds') == [NOW - 50]
    assert one('pve_hooks_whitelist_cache_age_seconds') == [30.0]
    assert samples(families['pve_hooks_breaker_state']) == {
        ('pve_hooks_breaker_state', (('state', 'closed'),)): 0,
        ('pve_hooks_breaker_state', (('state', 'half_open'),)): 1,
        ('pve_hooks_breaker_state', (('state', 'open'),)): 0}
    assert samples(families['pve_hooks_health_status']) == {
        ('pve_hooks_health_status', (('check', 'pvesh'),)): 0,
        ('pve_hooks_health_status', (('check', 'cluster'),)): 2,
        ('pve_hooks_health_status', (('check', 'odd "name"\\ \n'),)): 3}
    alert = {sample.labels['condition']: sample.value for sample in families['pve_hooks_alert_active'].samples}
    assert set(alert) == set(alerts.CONDITIONS) | {'accountdb_configuration'}
    assert {condition for condition, active in alert.items() if active} == {'breaker_open',
                                                                             'accountdb_configuration'}
    assert samples(families['pve_hooks_info']) == {
        ('pve_hooks_info', (('node', 'pve1'), ('version', __version__))): 1}


def test_an_empty_outbox_has_age_zero_not_the_last_age():
    current = {'snapshot': snapshot()}
    registry = metrics.Metrics(lambda: current['snapshot'])
    assert value(registry.registry, metrics.OUTBOX_OLDEST_AGE) == 12.5
    current['snapshot'] = snapshot(outbox={'depth': 0, 'oldest_age': None})
    assert value(registry.registry, metrics.OUTBOX_OLDEST_AGE) == 0
    assert value(registry.registry, metrics.OUTBOX_DEPTH) == 0


def test_unknown_figures_have_no_sample():
    unread = snapshot(outbox={key: None for key in snapshot()['outbox']}, breaker={'state': None},
                      last_delivery_at=None, last_inventory_sync_at=None, last_heartbeat_sent_at=None,
                      last_whitelist_refresh_at=None, whitelist={'state': 'none', 'age': None}, health=None,
                      alerts=[])
    text = metrics.Metrics(lambda: unread).render().decode()
    families = parse(text)
    for name in ('pve_hooks_outbox_depth', 'pve_hooks_outbox_oldest_age_seconds', 'pve_hooks_outbox_dead',
                 'pve_hooks_outbox_quarantine', 'pve_hooks_events_spooled', 'pve_hooks_events_dropped',
                 'pve_hooks_hookscript_errors', 'pve_hooks_breaker_state',
                 'pve_hooks_last_delivery_timestamp_seconds', 'pve_hooks_last_inventory_sync_timestamp_seconds',
                 'pve_hooks_last_heartbeat_timestamp_seconds',
                 'pve_hooks_last_whitelist_refresh_timestamp_seconds',
                 'pve_hooks_whitelist_cache_age_seconds', 'pve_hooks_health_status'):
        assert families[name].samples == [], name
    assert all(sample.value == 0 for sample in families['pve_hooks_alert_active'].samples)
    without_whitelist = metrics.Metrics(lambda: snapshot(whitelist=None)).render().decode()
    assert parse(without_whitelist)['pve_hooks_whitelist_cache_age_seconds'].samples == []


def test_the_snapshot_is_taken_at_every_render():
    current = snapshot()
    calls = []

    def take():
        calls.append(1)
        return copy.deepcopy(current)

    registry = metrics.Metrics(take)
    assert value(registry.registry, metrics.OUTBOX_DEPTH) == 3
    current['outbox']['depth'] = 0
    current['breaker']['state'] = 'open'
    current['alerts'] = []
    families = parse(registry.render())
    assert families['pve_hooks_outbox_depth'].samples[0].value == 0
    assert samples(families['pve_hooks_breaker_state'])[('pve_hooks_breaker_state', (('state', 'open'),))] == 1
    assert not any(sample.value for sample in families['pve_hooks_alert_active'].samples)
    assert len(calls) == 2  # registering the collector did not take one


def test_a_failing_snapshot_logs_once_and_the_rest_is_rendered(caplog):
    state = {'error': OSError('outbox unreadable')}

    def take():
        if state['error']:
            raise state['error']
        return snapshot()

    registry = metrics.Metrics(take, node='pve9')
    registry.count_delivery(delivery(accepted=4))
    with caplog.at_level(logging.INFO, logger='pve_hooks.observe.metrics'):
        for _ in range(3):
            families = parse(registry.render())
            assert samples(families['pve_hooks_events_delivered'])[('pve_hooks_events_delivered_total', ())] == 4
            assert samples(families['pve_hooks_info']) == {
                ('pve_hooks_info', (('node', 'pve9'), ('version', __version__))): 1}
            assert 'pve_hooks_outbox_depth' not in families
        state['error'] = None
        assert 'pve_hooks_outbox_depth' in parse(registry.render())
        state['error'] = KeyError('outbox')  # a malformed snapshot is handled the same way
        assert 'pve_hooks_outbox_depth' not in parse(registry.render())
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert messages == [
        ('WARNING', 'cannot take the status snapshot for metrics (OSError: outbox unreadable); the other metrics '
                    'are rendered without it'),
        ('INFO', 'the status snapshot for metrics works again'),
        ('WARNING', "cannot take the status snapshot for metrics (KeyError: 'outbox'); the other metrics are "
                    "rendered without it")]


def test_a_malformed_snapshot_is_not_a_crash(caplog):
    with caplog.at_level(logging.WARNING, logger='pve_hooks.observe.metrics'):
        families = parse(metrics.Metrics(lambda: {'node': 'x'}).render())
    assert 'pve_hooks_info' in families
    assert len(caplog.records) == 1


# -- helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('status, text', [(200, '2xx'), (204, '2xx'), (301, '3xx'), (401, '4xx'), (503, '5xx'),
                                          (None, 'error'), (0, 'error'), (999, 'error')])
def test_status_class(status, text):
    assert metrics.status_class(status) == text
