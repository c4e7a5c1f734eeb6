"""Prometheus metrics: every pve_hooks_* name, the daemon's counters, the snapshot collector, /metrics.

Built on prometheus_client (Debian: python3-prometheus-client; 0.16 on
Debian 12 is the oldest supported), which owns the text exposition format
0.0.4. The daemon owns one :class:`Metrics`; its :attr:`Metrics.registry`
is a private CollectorRegistry (never the library's global REGISTRY) holding

- the counters the daemon itself counts as it works (deliveries, AccountDB
  requests, pvesh calls): prometheus_client Counter/Histogram/Summary,
  updated by :meth:`Metrics.count_delivery`, :meth:`Metrics.on_request`
  and :meth:`Metrics.count_pvesh`;
- one :class:`SnapshotCollector`, which calls ``snapshot()`` (the node's
  status snapshot, pve_hooks.observe.status) at every render and turns it
  into the outbox, breaker, last-* time, whitelist, health and alert series.
  Those values are therefore never older than the scrape.

The daemon writes the registry with :meth:`Metrics.write_textfile` after
every pass (``metrics.textfile``, read by node_exporter's textfile
collector) and, when ``metrics.listen`` is set, serves it with :func:`serve`::

    board = status.Board(...)
    registry = metrics.Metrics(snapshot=board.snapshot, node=settings['node'])
    client = accountdb.Client(settings, metrics=registry)   # on_request()
    registry.count_delivery(pass_result)
    registry.write_textfile(settings['metrics.textfile'])
    server = metrics.serve(registry, settings['metrics.listen'])
    ...
    metrics.stop(server)

Every metric name, type and help text lives in :data:`METRICS` below; use
the module constants (``metrics.EVENTS_DELIVERED``) rather than spelling
names out.

/metrics is served by observe.listener (why our own server: see there).
"""

import errno
import logging
import os
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from pve_hooks import __version__, statedir
from pve_hooks.observe import alerts

log = logging.getLogger(__name__)

# What generate_latest() writes. prometheus_client >= 0.22 names a newer
# format in CONTENT_TYPE_LATEST, so the constant is ours.
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

COUNTER, GAUGE, HISTOGRAM, SUMMARY = 'counter', 'gauge', 'histogram', 'summary'

# Names (one place). Counters end in _total; times are seconds.
EVENTS_SPOOLED = 'pve_hooks_events_spooled_total'
EVENTS_DELIVERED = 'pve_hooks_events_delivered_total'
EVENTS_DUPLICATE = 'pve_hooks_events_duplicate_total'
EVENTS_REJECTED = 'pve_hooks_events_rejected_total'
EVENTS_FILTERED = 'pve_hooks_events_filtered_total'
EVENTS_DROPPED = 'pve_hooks_events_dropped_total'
OUTBOX_DEPTH = 'pve_hooks_outbox_depth'
OUTBOX_OLDEST_AGE = 'pve_hooks_outbox_oldest_age_seconds'
OUTBOX_DEAD = 'pve_hooks_outbox_dead'
OUTBOX_QUARANTINE = 'pve_hooks_outbox_quarantine'
DELIVERY_LATENCY = 'pve_hooks_delivery_latency_seconds'
ACCOUNTDB_REQUESTS = 'pve_hooks_accountdb_requests_total'
BREAKER_STATE = 'pve_hooks_breaker_state'
LAST_DELIVERY = 'pve_hooks_last_delivery_timestamp_seconds'
LAST_INVENTORY_SYNC = 'pve_hooks_last_inventory_sync_timestamp_seconds'
LAST_WHITELIST_REFRESH = 'pve_hooks_last_whitelist_refresh_timestamp_seconds'
LAST_HEARTBEAT = 'pve_hooks_last_heartbeat_timestamp_seconds'
WHITELIST_AGE = 'pve_hooks_whitelist_cache_age_seconds'
PVESH_DURATION = 'pve_hooks_pvesh_duration_seconds'
PVESH_FAILURES = 'pve_hooks_pvesh_failures_total'
HOOKSCRIPT_ERRORS = 'pve_hooks_hookscript_errors_total'
HEALTH_STATUS = 'pve_hooks_health_status'
ALERT_ACTIVE = 'pve_hooks_alert_active'
INFO = 'pve_hooks_info'

# Delivery latency: enqueue by the hookscript -> acknowledged by AccountDB.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
BREAKER_STATES = ('closed', 'half_open', 'open')
# Nagios/Icinga plugin codes, also the value of pve_hooks_health_status.
HEALTH_CODES = {'OK': 0, 'WARNING': 1, 'CRITICAL': 2, 'UNKNOWN': 3}
STATUS_CLASSES = ('2xx', '3xx', '4xx', '5xx', 'error')


class Metric:
    """One metric family: name, type, help text, label names (and buckets for a histogram)."""

    __slots__ = ('name', 'type', 'help', 'labels', 'buckets')

    def __init__(self, name, type_, help_, labels=(), buckets=()):
        self.name = name
        self.type = type_
        self.help = help_
        self.labels = tuple(labels)
        self.buckets = tuple(buckets)


M = Metric
METRICS = (
    M(EVENTS_SPOOLED, COUNTER, 'Events the hookscript wrote to the outbox.'),
    M(EVENTS_DELIVERED, COUNTER, 'Events AccountDB accepted.'),
    M(EVENTS_DUPLICATE, COUNTER, 'Events AccountDB already had (same event_id); acknowledged.'),
    M(EVENTS_REJECTED, COUNTER, 'Events AccountDB rejected for good; moved to the dead directory.'),
    M(EVENTS_FILTERED, COUNTER, 'Events for guests outside the whitelist; acknowledged locally, not sent.'),
    M(EVENTS_DROPPED, COUNTER, 'Events dropped because the outbox was full.'),
    M(OUTBOX_DEPTH, GAUGE, 'Events waiting in the outbox (ready and claimed).'),
    M(OUTBOX_OLDEST_AGE, GAUGE, 'Age of the oldest event waiting in the outbox (0 when empty).'),
    M(OUTBOX_DEAD, GAUGE, 'Events in the outbox dead directory (rejected by AccountDB).'),
    M(OUTBOX_QUARANTINE, GAUGE, 'Files in the outbox quarantine directory (unreadable or corrupt).'),
    M(DELIVERY_LATENCY, HISTOGRAM, 'Seconds from an event being spooled to AccountDB acknowledging it.',
      buckets=LATENCY_BUCKETS),
    M(ACCOUNTDB_REQUESTS, COUNTER,
      'AccountDB requests by endpoint and HTTP status class (error = no HTTP response).',
      labels=('endpoint', 'status_class')),
    M(BREAKER_STATE, GAUGE, 'Circuit breaker towards AccountDB: 1 for the current state, 0 for the others.',
      labels=('state',)),
    M(LAST_DELIVERY, GAUGE, 'Unix time of the last successful delivery to AccountDB.'),
    M(LAST_INVENTORY_SYNC, GAUGE, 'Unix time of the last inventory AccountDB acknowledged.'),
    M(LAST_WHITELIST_REFRESH, GAUGE, 'Unix time of the last successful whitelist refresh.'),
    M(LAST_HEARTBEAT, GAUGE, 'Unix time of the last heartbeat AccountDB accepted.'),
    M(WHITELIST_AGE, GAUGE, 'Age of the cached whitelist in seconds.'),
    M(PVESH_DURATION, SUMMARY, 'Seconds pvesh calls took (count = calls made).', labels=('call',)),
    M(PVESH_FAILURES, COUNTER, 'pvesh calls that failed, timed out or printed garbage.', labels=('call',)),
    M(HOOKSCRIPT_ERRORS, COUNTER, 'Errors the hookscript recorded (it still exited 0).'),
    M(HEALTH_STATUS, GAUGE, 'Health check status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.',
      labels=('check',)),
    M(ALERT_ACTIVE, GAUGE, 'Alert conditions: 1 while active, 0 once resolved.', labels=('condition',)),
    M(INFO, GAUGE, 'Always 1; labels carry the pve-hooks version and node name.', labels=('version', 'node')),
)
del M

BY_NAME = {metric.name: metric for metric in METRICS}

# Counted by the daemon (Metrics); everything else comes from the snapshot (SnapshotCollector).
OWNED = (EVENTS_DELIVERED, EVENTS_DUPLICATE, EVENTS_REJECTED, EVENTS_FILTERED, DELIVERY_LATENCY,
         ACCOUNTDB_REQUESTS, PVESH_DURATION, PVESH_FAILURES)
_LIBRARY_TYPES = {COUNTER: Counter, HISTOGRAM: Histogram, SUMMARY: Summary}


def status_class(http_status):
    """Given an HTTP status (int) or None (no response), return '2xx'...'5xx' or 'error'."""
    if not http_status or not 100 <= int(http_status) <= 599:
        return 'error'
    return '{0}xx'.format(int(http_status) // 100)


class Metrics:
    """The daemon's metrics: its own counters plus the snapshot's figures, on a private registry.

    ``snapshot``: a callable returning the status snapshot
    (pve_hooks.observe.status), called at every render; None leaves the
    snapshot's series out. ``node``: the node name for ``pve_hooks_info``
    (default: the snapshot's). Thread safe: the daemon counts while
    :func:`serve` renders.
    """

    def __init__(self, snapshot=None, node=None):
        self.registry = CollectorRegistry(auto_describe=True)
        self._owned = {}
        for name in OWNED:
            metric = BY_NAME[name]
            extra = {'buckets': metric.buckets} if metric.buckets else {}
            self._owned[name] = _LIBRARY_TYPES[metric.type](
                name, metric.help, metric.labels, registry=self.registry, **extra)
        self.collector = SnapshotCollector(snapshot, node)
        self.registry.register(self.collector)
        self._write_lock = threading.Lock()
        self._warned = set()  # (path, reason) of the text file warnings already logged

    def count_delivery(self, result):
        """Count one delivery pass, a daemon.delivery.PassResult: its four counts and its latencies."""
        for name, amount in ((EVENTS_DELIVERED, result.accepted), (EVENTS_DUPLICATE, result.duplicate),
                             (EVENTS_REJECTED, result.rejected), (EVENTS_FILTERED, result.filtered)):
            if amount:
                self._owned[name].inc(amount)
        histogram = self._owned[DELIVERY_LATENCY]
        for latency in result.latencies:
            histogram.observe(latency)

    def on_request(self, method, endpoint, status_class, duration_s):
        """accountdb.Client's ``metrics`` hook: count one request to ``endpoint`` by ``status_class``."""
        self._owned[ACCOUNTDB_REQUESTS].labels(endpoint=endpoint, status_class=status_class).inc()

    def count_pvesh(self, call, seconds, ok):
        """Record one pvesh call named ``call`` (e.g. 'qemu') that took ``seconds``; count it if not ``ok``."""
        self._owned[PVESH_DURATION].labels(call=call).observe(seconds)
        failures = self._owned[PVESH_FAILURES].labels(call=call)  # a 0 series for calls that never failed
        if not ok:
            failures.inc()

    def render(self):
        """Return every metric as Prometheus text exposition format 0.0.4 (bytes)."""
        return generate_latest(self.registry)

    def write_textfile(self, path):
        """Write :meth:`render` to ``path`` atomically, mode 0644 (statedir.atomic_write).

        node_exporter never sees a half-written file, and can read it although
        the daemon runs with UMask=0077. The directory belongs to
        node_exporter and is never created here (atomic_write would make it
        0700, unreadable to node_exporter). A missing or unwritable directory
        logs one warning per path and reason (not one per pass) and returns
        False; nothing is raised. Return True when written.
        """
        directory = os.path.dirname(os.path.abspath(path))
        with self._write_lock:
            try:
                if not os.path.isdir(directory):
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), directory)
                statedir.atomic_write(path, self.render(), 0o644)
            except OSError as error:
                reason = error.strerror or str(error)
                if (path, reason) not in self._warned:
                    self._warned.add((path, reason))
                    log.warning('cannot write metrics file %s (%s); metrics.textfile is skipped until this is '
                                'fixed (create the directory or set metrics.textfile: null)', path, reason)
                return False
            self._warned = {item for item in self._warned if item[0] != path}
        return True


class SnapshotCollector:
    """prometheus_client collector for the series read off the status snapshot, and pve_hooks_info.

    ``snapshot`` (a callable, or None) is called once per render, so the
    figures are as fresh as the scrape. A snapshot that raises (or lacks a
    key) logs one warning until it works again; the other metrics are still
    rendered. Each figure can be checked by hand in ``pve-hooks status --json``.
    """

    def __init__(self, snapshot, node=None):
        self.snapshot = snapshot
        self.node = node
        self._failing = False
        self._lock = threading.Lock()  # one snapshot at a time: scrapes and the text file may overlap

    def describe(self):
        """Return the families this collector yields, without samples (the registry checks names)."""
        return [_family(metric.name) for metric in METRICS if metric.name not in OWNED]

    def collect(self):
        """Return the families: pve_hooks_info, then (with a snapshot) the snapshot's series."""
        taken, families = None, []
        if self.snapshot is not None:
            with self._lock:
                try:
                    taken = self.snapshot()
                    families = snapshot_families(taken)
                except Exception as error:  # a broken snapshot costs its own series only, never the scrape
                    if not self._failing:
                        log.warning('cannot take the status snapshot for metrics (%s: %s); the other metrics '
                                    'are rendered without it', type(error).__name__, error)
                    self._failing = True
                    taken, families = None, []
                else:
                    if self._failing:
                        log.info('the status snapshot for metrics works again')
                    self._failing = False
        info = _family(INFO)
        node = self.node if self.node is not None else (taken or {}).get('node')
        info.add_metric([__version__, str(node or '')], 1)
        return [info] + families


def _family(name):
    metric = BY_NAME[name]
    if metric.type == COUNTER:
        return CounterMetricFamily(name, metric.help, labels=metric.labels)
    return GaugeMetricFamily(name, metric.help, labels=metric.labels)


def _single(name, value):
    family = _family(name)
    if value is not None:
        family.add_metric([], value)
    return family


def snapshot_families(snapshot):
    """Given a status snapshot (pve_hooks.observe.status), return its metric families.

    Every family is returned; a figure the snapshot does not know (None)
    has no sample. Raise KeyError/TypeError if ``snapshot`` is not shaped
    like one.
    """
    outbox = snapshot['outbox']
    readable = outbox.get('depth') is not None
    families = [
        _single(OUTBOX_DEPTH, outbox.get('depth')),
        # status says None for an empty outbox; the gauge must drop to 0, not keep the last age.
        _single(OUTBOX_OLDEST_AGE, (outbox.get('oldest_age') or 0) if readable else None),
        _single(OUTBOX_DEAD, outbox.get('dead')),
        _single(OUTBOX_QUARANTINE, outbox.get('quarantine')),
        _single(EVENTS_SPOOLED, outbox.get('spooled')),
        _single(EVENTS_DROPPED, outbox.get('dropped')),
        _single(HOOKSCRIPT_ERRORS, outbox.get('hookscript_errors')),
    ]
    breaker = _family(BREAKER_STATE)
    current = snapshot['breaker'].get('state')
    if current is not None:
        for state in BREAKER_STATES:
            breaker.add_metric([state], 1 if state == current else 0)
    families.append(breaker)
    for name, key in ((LAST_DELIVERY, 'last_delivery_at'), (LAST_INVENTORY_SYNC, 'last_inventory_sync_at'),
                      (LAST_WHITELIST_REFRESH, 'last_whitelist_refresh_at'),
                      (LAST_HEARTBEAT, 'last_heartbeat_sent_at')):
        families.append(_single(name, snapshot[key]))
    families.append(_single(WHITELIST_AGE, (snapshot['whitelist'] or {}).get('age')))
    health = _family(HEALTH_STATUS)
    for check in (snapshot['health'] or {}).get('checks') or ():
        status = str(check.get('status') or 'UNKNOWN').upper()
        health.add_metric([str(check['name'])], HEALTH_CODES.get(status, 3))
    families.append(health)
    active = set(snapshot['alerts'])
    alert = _family(ALERT_ACTIVE)
    for condition in alerts.CONDITIONS:
        alert.add_metric([condition], 1 if condition in active else 0)
    families.append(alert)
    return families
