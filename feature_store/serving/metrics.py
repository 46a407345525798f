"""Prometheus metrics of the server, on their own HTTP port and their own CollectorRegistry.

=============================================  =========  ==========================================
metric                                         type       labels
=============================================  =========  ==========================================
fstore_serving_request_duration_seconds        histogram  method, feature_service
fstore_serving_store_read_duration_seconds     histogram  (all reads of one request, first to last)
fstore_serving_batch_size                      histogram  entity rows per GetOnlineFeatures
fstore_serving_errors_total                    counter    method, code (gRPC status name)
fstore_serving_field_errors_total              counter    view (per-(entity, view) read failures)
fstore_serving_view_freshness_seconds          gauge      view: now - newest event time seen
fstore_serving_registry_version                gauge      the version serving unversioned requests
fstore_serving_store_reads_in_flight           gauge
fstore_serving_cache_lookups_total             counter    cache (tile, read), result (hit, miss)
=============================================  =========  ==========================================

``feature_service`` is a known service name, ``_refs`` for ad-hoc feature lists, or ``_none``
when the request failed before naming a valid service (label cardinality stays bounded).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from feature_store.serving.cache import ReadCache

__all__ = ["LATENCY_BUCKETS", "ServingMetrics"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class _Freshness(Collector):
    """now - newest event time seen per view, computed at scrape time so it ages between reads."""

    def __init__(self, newest: dict[str, int], now_ms: Callable[[], int]) -> None:
        self._newest = newest
        self._now_ms = now_ms

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fstore_serving_view_freshness_seconds",
            "Seconds between now and the newest event time this server has read, per feature view",
            labels=["view"],
        )
        now = self._now_ms()
        for view, newest in sorted(self._newest.items()):
            family.add_metric([view], (now - newest) / 1000.0)
        yield family


class _CacheStats(Collector):
    def __init__(self, cache: ReadCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "fstore_serving_cache_lookups",
            "Content-keyed read-path cache look-ups",
            labels=["cache", "result"],
        )
        c = self._cache
        family.add_metric(["tile", "hit"], c.tile_hits)
        family.add_metric(["tile", "miss"], c.tile_misses)
        family.add_metric(["read", "hit"], c.read_hits)
        family.add_metric(["read", "miss"], c.read_misses)
        yield family


class ServingMetrics:
    def __init__(self, now_ms: Callable[[], int], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "fstore_serving_request_duration_seconds",
            "Server-side time of each RPC",
            ["method", "feature_service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_read_duration = Histogram(
            "fstore_serving_store_read_duration_seconds",
            "Time from a request's first online-store read to its last answer",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "fstore_serving_batch_size", "Entity rows per look-up", buckets=BATCH_BUCKETS, registry=r
        )
        self.errors = Counter(
            "fstore_serving_errors", "RPCs that ended with a non-OK status", ["method", "code"], registry=r
        )
        self.field_errors = Counter(
            "fstore_serving_field_errors",
            "(entity, view) reads served as FIELD_STATUS_ERROR",
            ["view"],
            registry=r,
        )
        self.registry_version = Gauge(
            "fstore_serving_registry_version", "Registry version of unversioned requests", registry=r
        )
        self.reads_in_flight = Gauge(
            "fstore_serving_store_reads_in_flight", "Online-store reads in flight", registry=r
        )
        self.newest_event_ms: dict[str, int] = {}
        r.register(_Freshness(self.newest_event_ms, now_ms))
        self._children: dict[tuple[str, str], Any] = {}
        self._http: Any = None
        self._http_thread: threading.Thread | None = None

    def request_timer(self, method: str, service: str) -> Any:
        """The histogram child for (method, service), cached: ``.labels()`` is not free."""
        key = (method, service)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.request_duration.labels(method, service)
        return child

    def watch_cache(self, cache: ReadCache) -> None:
        self.registry.register(_CacheStats(cache))

    def saw_event(self, view: str, newest_ms: int) -> None:
        if newest_ms > self.newest_event_ms.get(view, -(1 << 63)):
            self.newest_event_ms[view] = newest_ms

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server in a thread; returns the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._http_thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
