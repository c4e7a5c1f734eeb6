"""Prometheus metrics: every pve_hooks_* name, a small registry, the text file and /metrics.

No dependency: the registry renders the Prometheus text exposition format
0.0.4 itself (``# HELP``/``# TYPE`` lines, escaped label values, histogram
``_bucket``/``_sum``/``_count``). The daemon owns one :class:`Registry`,
updates it as it works, writes it with :func:`write_textfile` after every
pass (``metrics.textfile``, read by node_exporter's textfile collector) and,
when ``metrics.listen`` is set, serves it with :func:`serve`.

Every metric name lives in :data:`METRICS` below; use the module constants
(``metrics.EVENTS_DELIVERED``) rather than spelling names out::

    registry = metrics.Registry()
    registry.inc(metrics.EVENTS_DELIVERED, 12)
    registry.inc(metrics.ACCOUNTDB_REQUESTS, endpoint='events', status_class=metrics.status_class(503))
    registry.observe(metrics.DELIVERY_LATENCY, 0.042)
    registry.set(metrics.LAST_DELIVERY, time.time())
    metrics.write_textfile(registry, settings['metrics.textfile'])
"""

import http.server
import logging
import math
import os
import tempfile
import threading

log = logging.getLogger(__name__)

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


def status_class(http_status):
    """Given an HTTP status (int) or None (no response), return '2xx'...'5xx' or 'error'."""
    if not http_status or not 100 <= int(http_status) <= 599:
        return 'error'
    return '{0}xx'.format(int(http_status) // 100)


def format_value(value):
    """Return ``value`` as the exposition format writes numbers (+Inf, -Inf, NaN, ints bare)."""
    value = float(value)
    if math.isnan(value):
        return 'NaN'
    if math.isinf(value):
        return '+Inf' if value > 0 else '-Inf'
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def escape_label(value):
    """Escape a label value: backslash, double quote and newline."""
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _escape_help(text):
    return text.replace('\\', '\\\\').replace('\n', '\\n')


def _label_text(pairs):
    if not pairs:
        return ''
    return '{' + ','.join('{0}="{1}"'.format(name, escape_label(value)) for name, value in pairs) + '}'


class Registry:
    """Current values of the metrics in ``definitions`` (default: :data:`METRICS`).

    Thread safe: the daemon updates it while :func:`serve` renders it.
    Unlabelled counters start at 0; gauges appear once set; labelled series
    appear once touched. Methods raise KeyError for an unknown metric name
    and ValueError for wrong label names or a negative counter increment.
    """

    def __init__(self, definitions=METRICS):
        self.definitions = {metric.name: metric for metric in definitions}
        self._order = [metric.name for metric in definitions]
        self._values = {name: {} for name in self._order}  # name -> {label tuple: value}
        self._lock = threading.Lock()
        for metric in definitions:
            if metric.type == COUNTER and not metric.labels:
                self._values[metric.name][()] = 0.0

    def _key(self, name, labels):
        metric = self.definitions[name]
        if set(labels) != set(metric.labels):
            raise ValueError('{0} takes labels {1}, got {2}'.format(
                name, ', '.join(metric.labels) or 'none', ', '.join(sorted(labels)) or 'none'))
        return metric, tuple(str(labels[label]) for label in metric.labels)

    def inc(self, name, amount=1, **labels):
        """Add ``amount`` (>= 0 for counters) to a counter or gauge series. Return None."""
        metric, key = self._key(name, labels)
        if metric.type == COUNTER and amount < 0:
            raise ValueError('{0}: a counter cannot decrease (inc by {1})'.format(name, amount))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name, value, **labels):
        """Set a gauge (or a counter kept elsewhere, e.g. the outbox's dropped count). Return None."""
        metric, key = self._key(name, labels)
        if metric.type in (HISTOGRAM, SUMMARY):
            raise ValueError('{0} is a {1}: use observe()'.format(name, metric.type))
        with self._lock:
            self._values[name][key] = float(value)

    def set_state(self, name, current, states, label='state'):
        """Set an enum gauge: ``label=current`` to 1 and the other ``states`` to 0. Return None."""
        for state in states:
            self.set(name, 1 if state == current else 0, **{label: state})

    def observe(self, name, value, **labels):
        """Record one observation in a histogram or summary. Return None."""
        metric, key = self._key(name, labels)
        if metric.type not in (HISTOGRAM, SUMMARY):
            raise ValueError('{0} is a {1}: use inc() or set()'.format(name, metric.type))
        with self._lock:
            series = self._values[name].get(key)
            if series is None:
                series = self._values[name][key] = {'buckets': [0] * len(metric.buckets), 'sum': 0.0,
                                                    'count': 0}
            for index, bound in enumerate(metric.buckets):
                if value <= bound:
                    series['buckets'][index] += 1
            series['sum'] += value
            series['count'] += 1

    def get(self, name, **labels):
        """Return a series' value (a histogram/summary: its count); None if never set."""
        _, key = self._key(name, labels)
        with self._lock:
            value = self._values[name].get(key)
        if isinstance(value, dict):
            return value['count']
        return value

    def remove(self, name, **labels):
        """Drop one series (e.g. a health check that no longer runs). Return None."""
        _, key = self._key(name, labels)
        with self._lock:
            self._values[name].pop(key, None)

    def render(self):
        """Return the whole registry as Prometheus text exposition format 0.0.4."""
        lines = []
        with self._lock:
            for name in self._order:
                metric = self.definitions[name]
                lines.append('# HELP {0} {1}'.format(name, _escape_help(metric.help)))
                lines.append('# TYPE {0} {1}'.format(name, metric.type))
                for key in sorted(self._values[name]):
                    value = self._values[name][key]
                    pairs = list(zip(metric.labels, key))
                    if metric.type in (HISTOGRAM, SUMMARY):
                        lines.extend(_render_distribution(metric, pairs, value))
                    else:
                        lines.append('{0}{1} {2}'.format(name, _label_text(pairs), format_value(value)))
        return '\n'.join(lines) + '\n'


def _render_distribution(metric, pairs, series):
    lines = []
    if metric.type == HISTOGRAM:
        for bound, count in zip(metric.buckets, series['buckets']):
            lines.append('{0}_bucket{1} {2}'.format(
                metric.name, _label_text(pairs + [('le', format_value(bound))]), count))
        lines.append('{0}_bucket{1} {2}'.format(metric.name, _label_text(pairs + [('le', '+Inf')]),
                                                series['count']))
    lines.append('{0}_sum{1} {2}'.format(metric.name, _label_text(pairs), format_value(series['sum'])))
    lines.append('{0}_count{1} {2}'.format(metric.name, _label_text(pairs), series['count']))
    return lines


def _field(stats, key):
    if isinstance(stats, dict):
        return stats.get(key)
    return getattr(stats, key, None)


def collect_outbox(registry, stats):
    """Copy outbox figures into ``registry``.

    ``stats`` is a mapping or an object with any of ``depth``, ``oldest_age``,
    ``dead``, ``quarantine`` (current counts), ``spooled``, ``dropped`` and
    ``hookscript_errors`` (running totals the outbox keeps on disk); missing
    or None ones are left as they are. Return None.
    """
    for key, name in (('depth', OUTBOX_DEPTH), ('oldest_age', OUTBOX_OLDEST_AGE), ('dead', OUTBOX_DEAD),
                      ('quarantine', OUTBOX_QUARANTINE), ('spooled', EVENTS_SPOOLED),
                      ('dropped', EVENTS_DROPPED), ('hookscript_errors', HOOKSCRIPT_ERRORS)):
        value = _field(stats, key)
        if value is not None:
            registry.set(name, value)


def collect_health(registry, results):
    """Set pve_hooks_health_status{check} from health results.

    ``results`` is an iterable of mappings or objects with ``name`` and
    ``status`` ('OK', 'WARNING', 'CRITICAL', 'UNKNOWN'; anything else counts
    as UNKNOWN). Return None.
    """
    for result in results:
        status = str(_field(result, 'status') or 'UNKNOWN').upper()
        registry.set(HEALTH_STATUS, HEALTH_CODES.get(status, 3), check=_field(result, 'name'))


def collect_alerts(registry, active):
    """Set pve_hooks_alert_active{condition} for every alert condition.

    ``active`` is the collection of conditions currently raised (e.g.
    ``alerter.active()``). Return None.
    """
    from pve_hooks.observe import alerts
    for condition in alerts.CONDITIONS:
        registry.set(ALERT_ACTIVE, 1 if condition in active else 0, condition=condition)


def record_request(registry, endpoint, http_status):
    """Count one AccountDB request to ``endpoint`` that got ``http_status`` (None: no response)."""
    registry.inc(ACCOUNTDB_REQUESTS, endpoint=endpoint, status_class=status_class(http_status))


def record_pvesh(registry, call, seconds, ok):
    """Record one pvesh call named ``call`` (e.g. 'qemu') that took ``seconds``; count it if not ``ok``."""
    registry.observe(PVESH_DURATION, seconds, call=call)
    if not ok:
        registry.inc(PVESH_FAILURES, call=call)


_warned = set()


def write_textfile(registry, path):
    """Write ``registry`` to ``path`` atomically (temp file in the same directory, fsync, rename, 0644).

    node_exporter never sees a half-written file. A missing or unwritable
    directory logs one warning per path and reason (not one per pass) and
    returns False; nothing is raised. Return True when written.
    """
    directory = os.path.dirname(path) or '.'
    text = registry.render().encode('utf-8')
    temp = None
    try:
        fd, temp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        temp = None
    except OSError as error:
        reason = error.strerror or str(error)
        if (path, reason) not in _warned:
            _warned.add((path, reason))
            log.warning('cannot write metrics file %s (%s); metrics.textfile is skipped until this is '
                        'fixed (create the directory or set metrics.textfile: null)', path, reason)
        return False
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass
    _warned.difference_update({item for item in _warned if item[0] == path})
    return True


def parse_listen(listen):
    """Given 'host:port' ('[::1]:9959' for IPv6), return (host, port). Raise ValueError if malformed."""
    host, sep, port = listen.rpartition(':')
    if not sep or not host or not port.isdigit():
        raise ValueError('expected address:port, got {0!r}'.format(listen))
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return host, int(port)


class _Handler(http.server.BaseHTTPRequestHandler):
    registry = None  # set on a subclass per server

    def do_GET(self):
        if self.path.split('?', 1)[0] != '/metrics':
            self._reply(404, b'only /metrics is served here\n', 'text/plain; charset=utf-8')
            return
        self._reply(200, self.registry.render().encode('utf-8'), CONTENT_TYPE)

    def do_HEAD(self):
        self.do_GET()

    def _reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's name)
        log.debug('metrics request from %s: %s', self.client_address[0], format % args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(registry, listen):
    """Serve ``registry`` at http://``listen``/metrics from a background thread.

    ``listen`` is ``metrics.listen`` ('127.0.0.1:9959'); None serves nothing
    and returns None. If the address cannot be bound (in use, not local), log
    one error and return None: metrics are never a reason for the daemon to
    stop. Return the server; stop it with :func:`stop`.
    """
    if not listen:
        return None
    import socket
    try:
        host, port = parse_listen(listen)
        handler = type('MetricsHandler', (_Handler,), {'registry': registry})
        server_class = _Server
        if ':' in host:
            server_class = type('MetricsServer6', (_Server,), {'address_family': socket.AF_INET6})
        server = server_class((host, port), handler)
    except (OSError, ValueError) as error:
        log.error('cannot serve metrics on %s (%s); metrics are still written to metrics.textfile; '
                  'choose a free local address in metrics.listen', listen,
                  getattr(error, 'strerror', None) or error)
        return None
    thread = threading.Thread(target=server.serve_forever, name='metrics-http', daemon=True)
    thread.start()
    server.thread = thread
    log.info('serving metrics on http://%s/metrics', listen)
    return server


def stop(server):
    """Stop a server returned by :func:`serve` (None is fine) and close its socket. Return None."""
    if server is None:
        return
    server.shutdown()
    server.server_close()
    server.thread.join(5)


class Metrics:
    """TEMPORARY adapter onto the hand-written Registry until the prometheus_client rewrite lands."""

    def __init__(self, snapshot=None, node=None):
        self.snapshot = snapshot
        self.node = node
        self.registry = Registry()

    def count_delivery(self, result):
        self.registry.inc(EVENTS_DELIVERED, result.accepted)
        self.registry.inc(EVENTS_DUPLICATE, result.duplicate)
        self.registry.inc(EVENTS_REJECTED, result.rejected)
        self.registry.inc(EVENTS_FILTERED, result.filtered)
        for latency in result.latencies:
            self.registry.observe(DELIVERY_LATENCY, latency)

    def on_request(self, method, endpoint, status_class, duration_s):
        self.registry.inc(ACCOUNTDB_REQUESTS, endpoint=endpoint, status_class=status_class)

    def count_pvesh(self, call, seconds, ok):
        record_pvesh(self.registry, call, seconds, ok)

    def _collect(self):
        snap = self.snapshot() if self.snapshot else None
        if snap:
            collect_outbox(self.registry, snap['outbox'])
            self.registry.set_state(BREAKER_STATE, snap['breaker']['state'], BREAKER_STATES)
            for key, name in (('last_delivery_at', LAST_DELIVERY), ('last_inventory_sync_at', LAST_INVENTORY_SYNC),
                              ('last_whitelist_refresh_at', LAST_WHITELIST_REFRESH)):
                if snap.get(key) is not None:
                    self.registry.set(name, snap[key])
            if snap.get('health'):
                collect_health(self.registry, snap['health']['checks'])

    def render(self):
        self._collect()
        return self.registry.render()

    def write_textfile(self, path):
        self._collect()
        return write_textfile(self.registry, path)
