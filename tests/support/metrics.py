"""A filled metrics registry and a plain HTTP GET, for tests of the metrics and of their /metrics listener."""

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from pve_hooks.daemon.delivery import PassResult
from pve_hooks.observe import metrics
from tests.support.snapshot import snapshot


def families(text):
    """Return {family name: family} as prometheus_client's parser reads the exposition ``text``."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def delivered(registry, accepted):
    """Count one delivery pass of ``accepted`` events in ``registry`` (a metrics.Metrics)."""
    result = PassResult()
    result.accepted = accepted
    registry.count_delivery(result)


def filled_registry(current=None):
    """Return a Metrics with 5 deliveries; its snapshot is ``current['snapshot']`` (default: depth 2)."""
    current = current if current is not None else {}
    current.setdefault('snapshot', snapshot(outbox={'depth': 2}))
    registry = metrics.Metrics(lambda: current['snapshot'])
    delivered(registry, 5)
    result = PassResult()
    result.latencies = [0.12]
    registry.count_delivery(result)
    return registry


def get(url, method='GET', timeout=10):
    """Return (status, Content-Type, body text) of one request to ``url``, error statuses included."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers['Content-Type'], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers['Content-Type'], error.read().decode()
