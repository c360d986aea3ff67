"""Cache metrics: lookups by result, backend call latency and errors, invalidations, write-behind."""

from __future__ import annotations

from tally.observability.metrics import Children, Metrics


class CacheMetrics:
    """Implements ``cache.guarded.CacheObserver`` and the counters the cache strategies report to."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._latency = Children(metrics.cache_latency)
        self._requests = Children(metrics.cache_requests)

    def called(self, cache: str, backend: str, operation: str, seconds: float, *, ok: bool) -> None:
        self._latency(cache, backend, operation).observe(seconds)
        if not ok:
            self._metrics.cache_errors.labels(cache, backend, operation).inc()

    def looked_up(self, cache: str, backend: str, result: str) -> None:
        self._requests(cache, backend, result).inc()

    def invalidated(self, channel: str) -> None:
        self._metrics.cache_invalidations.labels(channel).inc()

    def buffered(self, buffer: str, size: int) -> None:
        self._metrics.write_behind_buffer.labels(buffer).set(size)

    def flushed(self, buffer: str, outcome: str, count: int = 1) -> None:
        self._metrics.write_behind_flushes.labels(buffer, outcome).inc(count)
