"""Tally's Prometheus metrics: their names, labels and buckets, and the exposition of ``/metrics``.

Every label has a bounded set of values: route templates (``/v1/accounts/{account_id}``, never an
id), methods folded to the standard ones, status classes (``2xx``), statement shapes
(``observability.statements``, capped), database roles, problem codes and a few fixed outcomes.

Multi-process serving (``tally serve --workers N``) uses prometheus-client's multiprocess mode:
each worker writes its samples to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``, and
``/metrics``, answered by any one worker, adds up all of them. In that mode the metrics are not
registered in a registry of their own (their values live in the files); gauges say how workers'
values combine (``livesum``: the sum over live workers).

Buckets are chosen for the objectives in ``deploy/prometheus/alerts.yml``: request latency has
edges around the 25 ms P99 target (10, 15, 20, 25, 30, 40, 50 ms) so that "the share of requests
slower than 25 ms" is an exact bucket, not an interpolation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.metrics_core import Metric

from tally import __version__

_M = TypeVar("_M", Counter, Gauge, Histogram)

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the Prometheus text format, as generate_latest writes it

REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
QUERY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERIES_PER_REQUEST_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 30, 50, 100)
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Children(Generic[_M]):
    """A labelled metric's children, kept once made: ``labels()`` takes a lock and hashes the
    labels on every call, and the hot paths (each request, statement and cache call) record a few
    each. Label values are bounded (see above), so the children are too."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *labels: str) -> _M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class Metrics:
    """The metric families of one Tally process. ``multiprocess_dir`` switches to multiprocess mode."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        # No ``*_created`` series: multiprocess mode has none, and both modes should expose the same.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess_dir = multiprocess_dir
        self.registry: CollectorRegistry | None = None if multiprocess_dir else CollectorRegistry()
        registry = self.registry
        self.build_info = Gauge(
            "tally_build_info", "Tally's version (always 1).", ["version"],
            registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        self.build_info.labels(__version__).set(1)

        http = ["method", "route", "status_class"]
        self.requests = Counter("tally_http_requests", "HTTP requests answered.", http, registry=registry)
        self.errors = Counter(
            "tally_http_errors", "HTTP requests answered with a 5xx (the error-rate SLO's failures).",
            http, registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tally_http_request_duration_seconds",
            "Time from the request's first byte in to its last byte out.",
            http, buckets=REQUEST_BUCKETS, registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "tally_http_requests_in_flight", "Requests being served now.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip

        self.query_latency = Histogram(
            "tally_db_query_duration_seconds",
            "Time of one statement, by statement shape and database role.",
            ["role", "statement"], buckets=QUERY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.slow_queries = Counter(
            "tally_db_slow_queries", "Statements slower than TALLY_SLOW_QUERY_MS.",
            ["role", "statement"], registry=registry,
        )  # fmt: skip
        self.queries_per_request = Histogram(
            "tally_db_queries_per_request", "Statements one request ran (an N+1 shows up here).",
            ["method", "route"], buckets=QUERIES_PER_REQUEST_BUCKETS, registry=registry,
        )  # fmt: skip
        self.pool_wait = Histogram(
            "tally_db_pool_wait_seconds",
            "Time a transaction waited for its connection (the writer: both write locks).",
            ["role"], buckets=WAIT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.loop_lag = Histogram(
            "tally_event_loop_lag_seconds",
            "How much later than asked the event loop ran a 100 ms timer (everything waits behind a lag).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=registry,
        )  # fmt: skip
        self.commit_group_size = Histogram(
            "tally_db_commit_group_size",
            "Write transactions committed by one SQLite COMMIT (group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry,
        )  # fmt: skip
        self.transfer_group_size = Histogram(
            "tally_transfer_group_size",
            "Single transfers (POST /v1/transfers) written by one transaction (ADR 0042).",
            buckets=(1, 2, 4, 8, 16, 32), registry=registry,
        )  # fmt: skip
        self.pool_in_use = Gauge(
            "tally_db_connections_in_use", "Connections held by a transaction now.", ["role"],
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.pool_size = Gauge(
            "tally_db_connections", "Connections open, per role.", ["role"],
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        queue = ["queue"]
        self.queue_jobs = Gauge(
            "tally_queue_jobs", "Jobs per queue and status (ready, running, dead), sampled.",
            ["queue", "status"], registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.ready_jobs = Gauge(
            "tally_queue_ready_jobs", "Jobs ready to run (due, or with an expired lease), sampled.",
            queue, registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.oldest_ready_age = Gauge(
            "tally_queue_oldest_ready_age_seconds", "How long the oldest ready job has been due.",
            queue, registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.dead_jobs = Gauge(
            "tally_queue_dead_jobs", "Jobs in the dead letter state, sampled.",
            queue, registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.dead_lettered = Counter(
            "tally_queue_dead_lettered", "Jobs moved to the dead letter state.", queue, registry=registry
        )
        self.job_runs = Counter(
            "tally_queue_job_runs", "Claims settled, by outcome (done, retried, deferred, dead, lost...).",
            ["queue", "outcome"], registry=registry,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "tally_queue_job_duration_seconds", "Time from a claim to its settlement.",
            queue, buckets=JOB_BUCKETS, registry=registry,
        )  # fmt: skip
        self.webhook_latency = Histogram(
            "tally_webhook_delivery_latency_seconds",
            "From an event's commit to its delivery's 2xx, per delivered webhook.",
            buckets=JOB_BUCKETS, registry=registry,
        )  # fmt: skip
        self.primary_up = Gauge(
            "tally_db_primary_up", "1 while the PostgreSQL primary answers the replica monitor, else 0.",
            registry=registry, multiprocess_mode="livemin",
        )  # fmt: skip
        self.replica_lag = Gauge(
            "tally_db_replica_lag_seconds",
            "Seconds since the replica was last known to hold everything the primary had (+Inf: never).",
            ["replica"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        cache = ["cache", "backend"]
        self.cache_requests = Counter(
            "tally_cache_requests",
            "Cache lookups by cache, backend and result (hit, miss, stale: served by stale-if-error, "
            "error: the backend failed and the database answered).",
            [*cache, "result"], registry=registry,
        )  # fmt: skip
        self.cache_latency = Histogram(
            "tally_cache_operation_seconds", "Time of one call to the cache backend, by operation.",
            [*cache, "operation"], buckets=QUERY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.cache_errors = Counter(
            "tally_cache_errors",
            "Cache backend calls that failed or ran out of time (never a failed request).",
            [*cache, "operation"], registry=registry,
        )  # fmt: skip
        self.cache_invalidations = Counter(
            "tally_cache_invalidations",
            "Entries dropped or tombstoned on another process's word, by channel (redis, outbox).",
            ["channel"], registry=registry,
        )  # fmt: skip
        self.write_behind_buffer = Gauge(
            "tally_write_behind_buffer", "Items buffered by a write-behind, not yet flushed.",
            ["buffer"], registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.write_behind_flushes = Counter(
            "tally_write_behind_flushes", "Write-behind flushes by buffer and outcome (ok, failed, dropped).",
            ["buffer", "outcome"], registry=registry,
        )  # fmt: skip
        self.rate_limit_decisions = Counter(
            "tally_rate_limit_decisions",
            "Rate-limit decisions: allowed, limited, or failed_open (the limiter's backend was down).",
            ["backend", "result"], registry=registry,
        )  # fmt: skip

        # From the latest finished ``reconcile`` run in job_runs, sampled by every process (ADR 0033):
        # right whichever process ran it. No series until a run has finished.
        self.reconcile_differences = Gauge(
            "tally_reconcile_differences",
            "Differences the latest finished reconcile run found: kind=balance (stored balances or "
            "entries' running totals against the sums of entries), kind=zero_sum (currencies whose "
            "entries do not sum to zero).",
            ["kind"], registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.reconcile_last_run = Gauge(
            "tally_reconcile_last_run_timestamp_seconds",
            "When the latest reconcile run finished (Unix time).",
            registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip

        self.transfers = Counter(
            "tally_transfers", "Money-moving requests, by operation and outcome.",
            ["operation", "outcome"], registry=registry,
        )  # fmt: skip
        self.rejections = Counter(
            "tally_rejections", "Requests refused with a 4xx problem, by route and problem code.",
            ["route", "code"], registry=registry,
        )  # fmt: skip
        self.replays = Counter(
            "tally_idempotent_replays", "Responses replayed for a repeated Idempotency-Key.",
            ["route"], registry=registry,
        )  # fmt: skip

    def collect(self) -> Iterable[Metric]:
        """Every family with its samples, added up over all workers in multiprocess mode."""
        return self._exposed().collect()

    def exposition(self) -> bytes:
        """The Prometheus text format of ``collect()``."""
        return generate_latest(self._exposed())

    def _exposed(self) -> CollectorRegistry:
        if self.registry is not None:
            return self.registry
        # A fresh registry per scrape, as prometheus-client's multiprocess mode asks: the collector
        # reads the files of every worker, live or gone.
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=str(self.multiprocess_dir)
        )
        return registry

    def close(self) -> None:
        """This process is stopping: drop its ``livesum`` gauges from the workers' totals."""
        if self.multiprocess_dir is not None:
            prometheus_multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                os.getpid(), path=str(self.multiprocess_dir)
            )
