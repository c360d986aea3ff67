"""Connection waits and use, reported by the store (``store.instrumentation.ConnectionObserver``).

On SQLite the pool is the one writer connection behind its lock, and a few readers; a growing
writer wait is the first sign that writes queue behind each other, long before latency alerts.
"""

from __future__ import annotations

from collections.abc import Mapping

from tally.observability.metrics import Children, Metrics


class PoolMetrics:
    """Implements ``ConnectionObserver`` (structurally: the store and this layer are siblings)."""

    def __init__(self, metrics: Metrics) -> None:
        self._waits = Children(metrics.pool_wait)
        self._in_use = Children(metrics.pool_in_use)
        self._metrics = metrics

    def sized(self, sizes: Mapping[str, int]) -> None:
        """The connections of each role, so that use can be read against them."""
        for role, size in sizes.items():
            self._metrics.pool_size.labels(role).set(size)
            self._waits(role)
            self._in_use(role)

    def waited(self, role: str, seconds: float) -> None:
        self._waits(role).observe(seconds)

    def holding(self, role: str, delta: int) -> None:
        # Four calls per request (two transactions, taken and given back).
        self._in_use(role).inc(delta)

    def committed_group(self, members: int) -> None:
        self._metrics.commit_group_size.observe(members)

    def replication(self, primary_up: bool, lags: dict[str, float]) -> None:
        self._metrics.primary_up.set(1 if primary_up else 0)
        for replica, seconds in lags.items():
            self._metrics.replica_lag.labels(replica).set(seconds)
