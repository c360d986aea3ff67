"""The data behind ``GET /dashboard``: one snapshot of the cumulative metrics, reshaped for a page.

The snapshot holds totals since start, exactly as ``/metrics`` does (summed over workers), plus the
time it was taken. The page keeps the snapshots it polled and works out rates, error ratios and
quantiles over a window from the differences, as Prometheus's ``rate`` and ``histogram_quantile``
would. So the server keeps no state for the dashboard, and every worker answers the same.

Shape (every ``buckets`` list holds cumulative counts for the finite ``bounds`` of its kind; the
``+Inf`` bucket is ``count``)::

    {"at": 1718000000.5,
     "bounds": {"request": [0.001, …], "query": […], "wait": […]},
     "in_flight": 1,
     "routes": [{"method", "route", "count", "sum", "errors", "client_errors", "buckets"}],
     "statements": [{"statement", "role", "count", "sum", "slow", "buckets", "sql"}],
     "pools": [{"role", "size", "in_use", "wait_count", "wait_sum", "wait_buckets"}],
     "transfers": [{"operation", "outcome", "count"}],
     "rejections": [{"route", "code", "count"}],
     "replays": 3,
     "queue": null | [{"queue", "ready", "oldest_age_seconds", "dead"}],
     "cache": null | [{"cache", "hits", "misses", "stale"}]}

``queue`` and ``cache`` are ``null`` until a queue has been sampled or a cache looked up.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.metrics_core import Metric

from tally.observability.metrics import QUERY_BUCKETS, REQUEST_BUCKETS, WAIT_BUCKETS

Key = tuple[str, ...]


class _Histograms:
    """Cumulative buckets, counts and sums of one histogram family, added up by ``key`` labels."""

    def __init__(self, bounds: tuple[float, ...], key: tuple[str, ...]) -> None:
        self._index = {bound: i for i, bound in enumerate(bounds)}
        self._key = key
        self.buckets: dict[Key, list[float]] = defaultdict(lambda: [0.0] * len(bounds))
        self.count: dict[Key, float] = defaultdict(float)
        self.sum: dict[Key, float] = defaultdict(float)

    def add(self, family: Metric) -> None:
        for sample in family.samples:
            key = tuple(sample.labels.get(name, "") for name in self._key)
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                if not math.isinf(bound) and bound in self._index:
                    self.buckets[key][self._index[bound]] += sample.value
            elif sample.name.endswith("_count"):
                self.count[key] += sample.value
            elif sample.name.endswith("_sum"):
                self.sum[key] += sample.value


def _totals(family: Metric | None, key: tuple[str, ...], suffix: str = "") -> dict[Key, float]:
    totals: dict[Key, float] = defaultdict(float)
    if family is not None:
        for sample in family.samples:
            if sample.name == family.name + suffix:
                totals[tuple(sample.labels.get(name, "") for name in key)] += sample.value
    return totals


def snapshot(families: Iterable[Metric], at: float, sql: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The dashboard's view of ``families`` (from ``Metrics.collect()``) taken at ``at`` (Unix seconds).

    ``sql`` maps statement shape names to their normalised text, shown beside each statement.
    """
    by_name = {family.name: family for family in families}
    requests = _Histograms(REQUEST_BUCKETS, ("method", "route"))
    queries = _Histograms(QUERY_BUCKETS, ("statement", "role"))
    waits = _Histograms(WAIT_BUCKETS, ("role",))
    for name, histograms in (
        ("tally_http_request_duration_seconds", requests),
        ("tally_db_query_duration_seconds", queries),
        ("tally_db_pool_wait_seconds", waits),
    ):
        if name in by_name:
            histograms.add(by_name[name])
    errors = _totals(by_name.get("tally_http_errors"), ("method", "route"), "_total")
    per_class = _totals(by_name.get("tally_http_requests"), ("method", "route", "status_class"), "_total")
    slow = _totals(by_name.get("tally_db_slow_queries"), ("statement", "role"), "_total")
    in_use = _totals(by_name.get("tally_db_connections_in_use"), ("role",))
    size = _totals(by_name.get("tally_db_connections"), ("role",))
    known = sql or {}
    return {
        "at": at,
        "bounds": {"request": REQUEST_BUCKETS, "query": QUERY_BUCKETS, "wait": WAIT_BUCKETS},
        "in_flight": sum(_totals(by_name.get("tally_http_requests_in_flight"), ()).values()),
        "routes": [
            {
                "method": method,
                "route": route,
                "count": count,
                "sum": requests.sum[method, route],
                "errors": errors.get((method, route), 0.0),
                "client_errors": per_class.get((method, route, "4xx"), 0.0),
                "buckets": requests.buckets[method, route],
            }
            for (method, route), count in sorted(requests.count.items())
        ],
        "statements": [
            {
                "statement": statement,
                "role": role,
                "count": count,
                "sum": queries.sum[statement, role],
                "slow": slow.get((statement, role), 0.0),
                "buckets": queries.buckets[statement, role],
                "sql": known.get(statement, ""),
            }
            for (statement, role), count in sorted(queries.count.items())
        ],
        "pools": [
            {
                "role": role,
                "size": size.get((role,), 0.0),
                "in_use": in_use.get((role,), 0.0),
                "wait_count": waits.count[role,],
                "wait_sum": waits.sum[role,],
                "wait_buckets": waits.buckets[role,],
            }
            for (role,) in sorted(set(size) | set(waits.count))
        ],
        "transfers": _rows(by_name.get("tally_transfers"), ("operation", "outcome")),
        "rejections": _rows(by_name.get("tally_rejections"), ("route", "code")),
        "replays": sum(_totals(by_name.get("tally_idempotent_replays"), (), "_total").values()),
        "queue": _queue(by_name),
        "cache": _cache(by_name),
    }


def _rows(family: Metric | None, key: tuple[str, ...]) -> list[dict[str, Any]]:
    totals = _totals(family, key, "_total")
    return [{**dict(zip(key, labels, strict=True)), "count": n} for labels, n in sorted(totals.items())]


def _queue(by_name: Mapping[str, Metric]) -> list[dict[str, Any]] | None:
    if "tally_queue_ready_jobs" not in by_name:
        return None
    ready = _totals(by_name["tally_queue_ready_jobs"], ("queue",))
    age = _totals(by_name.get("tally_queue_oldest_ready_age_seconds"), ("queue",))
    dead = _totals(by_name.get("tally_queue_dead_jobs"), ("queue",))
    return [
        {
            "queue": queue,
            "ready": n,
            "oldest_age_seconds": age.get((queue,), 0.0),
            "dead": dead.get((queue,), 0.0),
        }
        for (queue,), n in sorted(ready.items())
    ]


def _cache(by_name: Mapping[str, Metric]) -> list[dict[str, Any]] | None:
    if "tally_cache_requests" not in by_name:
        return None
    totals = _totals(by_name["tally_cache_requests"], ("cache", "backend", "result"), "_total")
    caches = sorted({(cache, backend) for cache, backend, _ in totals})
    return [
        {
            "cache": f"{cache} ({backend})",
            "hits": totals.get((cache, backend, "hit"), 0.0),
            # A lookup the backend failed is a miss to the reader: the database answered it.
            "misses": totals.get((cache, backend, "miss"), 0.0) + totals.get((cache, backend, "error"), 0.0),
            "stale": totals.get((cache, backend, "stale"), 0.0),
        }
        for cache, backend in caches
    ]
