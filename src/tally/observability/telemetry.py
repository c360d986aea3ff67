"""Everything Tally measures, assembled: the one object the composition root builds and wires.

``instrument`` hooks a database adapter without importing it (the store and this layer are
siblings): any object with ``engines``, ``role_of`` and ``pool_sizes`` will do, which
``store.sqlite.SqliteDatabase`` has.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from tally.observability.caching import CacheMetrics
from tally.observability.dashboard import snapshot
from tally.observability.jobs import JobMetrics
from tally.observability.metrics import CONTENT_TYPE, Metrics
from tally.observability.pools import PoolMetrics
from tally.observability.queries import QueryTimer
from tally.observability.requests import RequestMetrics


class Instrumentable(Protocol):
    @property
    def engines(self) -> tuple[Engine, ...]: ...
    @property
    def pool_sizes(self) -> Mapping[str, int]: ...
    def role_of(self, conn: Connection) -> str: ...


class Telemetry:
    """Metrics, request and statement timing, pool reports. ``slow_query_ms=None``: no slow-query lines."""

    content_type = CONTENT_TYPE

    def __init__(self, *, multiprocess_dir: Path | None = None, slow_query_ms: float | None = None) -> None:
        self.metrics = Metrics(multiprocess_dir)
        self.requests = RequestMetrics(self.metrics)
        self.pools = PoolMetrics(self.metrics)
        self.jobs = JobMetrics(self.metrics)
        self.caches = CacheMetrics(self.metrics)
        self.queries = QueryTimer(self.metrics, slow_ms=slow_query_ms)

    def instrument(self, database: Instrumentable) -> None:
        """Time every statement of ``database`` and publish its pool sizes."""
        self.pools.sized(database.pool_sizes)
        for engine in database.engines:
            self.queries.attach(engine, database.role_of)

    def exposition(self) -> bytes:
        """``/metrics``: the Prometheus text format, summed over workers."""
        return self.metrics.exposition()

    def dashboard(self, at: float) -> dict[str, Any]:
        """``/dashboard/data``: see ``observability.dashboard``."""
        return snapshot(self.metrics.collect(), at, self.queries.statements())

    def close(self) -> None:
        self.metrics.close()
