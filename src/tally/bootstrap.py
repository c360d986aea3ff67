"""The composition root: builds every part of Tally from ``Settings``. Nothing connects at import."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import sys
from collections.abc import Callable
from functools import partial

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from tally.api.app import create_app
from tally.background import build_worker, webhook_parts
from tally.cache.caches import build_caches
from tally.cache.rate_limits import DecisionCounter, build_rate_limiter
from tally.config import Settings
from tally.domain.errors import Unavailable
from tally.jobs.scheduler import Scheduler, scheduler_from
from tally.observability.context import set_job, set_request_ids, task_context
from tally.observability.logging import configure_logging, get_logger
from tally.observability.loop_lag import watch_loop_lag
from tally.observability.queries import QueryTally, current_tally, start_tally
from tally.observability.telemetry import Telemetry
from tally.services.holds import expire_due_holds
from tally.services.idempotency import IdempotentExecutor
from tally.services.job_run_ports import RunStatus
from tally.services.ledgers import Authenticator, KeyUsage, root_key_hash
from tally.services.transfer_groups import GroupHooks, TransferGroups
from tally.store.breaker import Breaker
from tally.store.instrumentation import ConnectionObserver
from tally.store.postgres import PostgresDatabase
from tally.store.sqlite import SqliteDatabase

_log = get_logger("tally")
QUEUE_SAMPLE_SECONDS = 5.0


class Tally:
    """The running service: database, idempotent executor, authenticator, telemetry. Started by the app."""

    def __init__(self, settings: Settings, *, announce_root_key: bool = True) -> None:
        configure_logging(settings.log_format, settings.log_level, secrets=_secrets_of(settings))
        self.settings = settings
        self.max_body_bytes = settings.max_body_bytes
        # Off (TALLY_METRICS_ENABLED=false), nothing is measured: no metrics, no statement timing.
        self.telemetry = (
            Telemetry(
                multiprocess_dir=settings.prometheus_multiproc_dir,
                slow_query_ms=settings.slow_query_ms,
            )
            if settings.metrics_enabled
            else None
        )
        self.request_observer = self.telemetry.requests if self.telemetry else None
        self.database = open_database(settings, self.telemetry.pools if self.telemetry else None)
        if self.telemetry is not None:
            self.telemetry.instrument(self.database)
        self.executor = IdempotentExecutor(self.database)
        limit = settings.transfer_group_limit
        # SQLite has one writer: one group at a time. PostgreSQL starts more (up to four) only while
        # a queued request has waited 50 ms: a group stuck on a row lock holds up no other (ADR 0042).
        runners = 1 if isinstance(self.database, SqliteDatabase) else min(4, settings.pool_size)
        self.transfer_groups = (
            TransferGroups(
                self.database, self.executor, limit=limit, runners=runners, hooks=self.group_hooks()
            )
            if limit > 1
            else None
        )
        self._announce_root_key = announce_root_key
        self.generated_root_key: str | None = None
        self._authenticator: Authenticator | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self._scheduler: Scheduler | None = None  # batch jobs (ADR 0032), where the workers run
        self._working = False
        self.key_usage = KeyUsage(max_keys=settings.key_usage_max_keys)
        cache_metrics = self.telemetry.caches if self.telemetry else None
        self.caches = build_caches(
            settings,
            self.database,
            observer=cache_metrics,
            looked_up=cache_metrics.looked_up if cache_metrics else None,
            invalidated=cache_metrics.invalidated if cache_metrics else None,
        )
        self.worker = build_worker(
            settings,
            self.database,
            self.database.wakeups,
            self.telemetry.jobs if self.telemetry else None,
            self.telemetry.metrics.webhook_latency.observe if self.telemetry else None,
        )
        self.webhooks = webhook_parts(settings, self.database, self.database.wakeups)
        # Per-key rate limits (ADR 0029); None when TALLY_RATE_LIMIT=off. Connects on first use.
        self.rate_limiter = build_rate_limiter(settings, count=_rate_limit_counter(self.telemetry))

    def group_hooks(self) -> GroupHooks:
        """The runners' lines name their job and the requests of their group; each grouped
        request's access line counts its group's statements; group sizes are measured."""

        def began(request_ids: tuple[str, ...]) -> QueryTally:
            set_request_ids(request_ids)
            return start_tally()

        return GroupHooks(
            runner_context=partial(task_context, "transfer_groups"),
            request_count=current_tally,
            group_began=began,
            written=self.telemetry.metrics.transfer_group_size.observe if self.telemetry else _ignore,
        )

    @property
    def authenticator(self) -> Authenticator:
        if self._authenticator is None:
            raise RuntimeError("Tally.start() has not run")
        return self._authenticator

    async def start(self, *, api: bool = True) -> None:
        """Connect, and start the background work: with the API, the workers only when enabled."""
        await self.database.start()
        if api:  # a worker-only process serves no key: it neither needs nor makes the root key
            await self._start_authentication()
        # Only the API reads caches, so only it listens for invalidations; every process writes
        # through and repairs. These tasks' lines name their job, not a request (tasks copy this
        # context).
        start_caches = partial(self.caches.start, invalidation=api)
        contextvars.copy_context().run(_as_job, "cache_upkeep", start_caches)
        self._flusher = asyncio.create_task(self._flush_key_usage(), name="tally-key-usage")
        self._sweeper = asyncio.create_task(self._sweep_holds(), name="tally-hold-sweeper")
        if self.telemetry is not None:
            self._sampler = asyncio.create_task(self._sample_queues(), name="tally-queue-sampler")
        lag = self.telemetry.metrics.loop_lag.observe if self.telemetry is not None else None
        self._lag_watch = asyncio.create_task(
            watch_loop_lag(lag), name="tally-loop-lag", context=task_context("loop_lag")
        )
        self._working = not api or self.settings.worker_enabled
        if self._working:
            self.worker.start()
            self.webhooks.dispatcher.start()
            self._scheduler = scheduler_from(self.settings, self.database)
            if self._scheduler is not None:
                self._scheduler.start()
        _log.info("started", database=self.database.url.render_as_string(hide_password=True))
        # What start made (the app, engines, compiled statements, modules) lives as long as the
        # process: kept out of the collector's sight, a full collection no longer walks it, and the
        # pause it put into some request now and then (~120 ms here) goes (ADR 0030). No collection
        # first: it would walk the whole heap at every start (~150 ms in a test process that starts
        # Tally hundreds of times), to spare the little garbage of a start frozen until stop.
        gc.freeze()

    async def _start_authentication(self) -> None:
        configured = self.settings.root_key.get_secret_value() if self.settings.root_key else None
        digest, generated = await root_key_hash(self.database, configured)
        self.generated_root_key = generated
        if generated is not None and self._announce_root_key:
            # Printed once, to the terminal only: it is never logged and never stored.
            print(
                "\nTally generated a root key. It is shown once; keep it somewhere safe:\n\n"
                f"    {generated}\n",
                file=sys.stdout,
                flush=True,
            )
        self._authenticator = Authenticator(self.database, digest, self.key_usage, self.caches.keys.lookup)

    async def _flush_key_usage(self) -> None:
        set_job("key_usage_flush")  # this task's lines belong to no request
        while True:
            await asyncio.sleep(self.settings.key_usage_flush_ms / 1000)
            await self._flush_usage()

    async def _flush_usage(self) -> None:
        metrics = self.telemetry.caches if self.telemetry else None
        dropped, self.key_usage.dropped = self.key_usage.dropped, 0
        try:
            flushed = await self.key_usage.flush(self.database)
        except Unavailable as error:  # kept for the next flush; the outage is reported elsewhere
            _log.warning("key usage flush postponed", pending=len(self.key_usage), error=str(error))
            if metrics is not None:
                metrics.flushed("key_usage", "failed")
        except Exception:
            _log.exception("key usage flush failed", pending=len(self.key_usage))
            if metrics is not None:
                metrics.flushed("key_usage", "failed")
        else:
            if metrics is not None and flushed:
                metrics.flushed("key_usage", "ok")
        if metrics is not None:
            metrics.buffered("key_usage", len(self.key_usage))
            if dropped:
                metrics.flushed("key_usage", "dropped", dropped)

    async def _sweep_holds(self) -> None:
        # Reads and writes treat a due hold as expired on their own (ADR 0014); the sweeper only
        # writes the expiry down and emits its event, so its period is the event's latency.
        set_job("hold_sweep")  # this task's lines belong to no request
        while True:
            await asyncio.sleep(self.settings.hold_sweep_seconds)
            try:
                while await expire_due_holds(self.database):
                    pass  # more may be due: keep going, one short transaction at a time
            except Exception:
                _log.exception("hold sweep failed")

    async def _sample_queues(self) -> None:
        set_job("queue_sampler")
        while True:
            try:
                async with self.database.read() as tx:
                    now = await tx.now()
                    depths = await tx.jobs.depths(now)
                    reconciled = await tx.job_runs.recent("reconcile", 1, status=RunStatus.FINISHED)
                if self.telemetry is not None:
                    self.telemetry.jobs.depths(depths, now)
                    self.telemetry.jobs.reconciled(reconciled[0] if reconciled else None)
            except Exception:
                _log.exception("queue sampling failed")
            await asyncio.sleep(QUEUE_SAMPLE_SECONDS)

    async def stop(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.stop()  # a run ends after its step, its checkpoint kept
            self._scheduler = None
        if self._working:
            await self.webhooks.dispatcher.stop()
            await self.worker.stop(self.settings.worker_shutdown_grace_ms / 1000)
        for task in (self._flusher, self._sweeper, self._sampler, self._lag_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.transfer_groups is not None:
            await self.transfer_groups.stop()
        await self._flush_usage()
        await self.caches.stop()
        await self.database.stop()
        if self.rate_limiter is not None:
            await self.rate_limiter.close()
        if self.telemetry is not None:
            self.telemetry.close()
        gc.unfreeze()  # a process that starts Tally again (tests) lets the collector see this one's

    async def readiness(self) -> dict[str, str]:
        return await self.database.health()


def open_database(
    settings: Settings, observer: ConnectionObserver | None
) -> SqliteDatabase | PostgresDatabase:
    """The database adapter ``TALLY_DATABASE_URL`` names: SQLite (embedded) or PostgreSQL."""
    backend = make_url(settings.database_url).get_backend_name()
    lock_wait = settings.request_timeout_ms / 1000
    if backend == "sqlite":
        if settings.replica_urls:
            raise ValueError(
                "TALLY_REPLICA_URLS needs a PostgreSQL TALLY_DATABASE_URL; SQLite has no replicas."
            )
        return SqliteDatabase(
            settings.database_url,
            read_pool_size=settings.read_pool_size,
            synchronous=settings.sqlite_synchronous,
            lock_wait_seconds=lock_wait,
            observer=observer,
            schema_check_seconds=settings.schema_check_ms / 1000,
            group_limit=settings.sqlite_group_commit,
            checkpoint_seconds=settings.sqlite_checkpoint_ms / 1000,
        )
    if backend == "postgresql":
        return PostgresDatabase(
            settings.database_url,
            replica_urls=tuple(settings.replica_urls),
            pool_size=settings.pool_size,
            replica_pool_size=settings.replica_pool_size,
            max_lag_seconds=settings.replica_max_lag_ms / 1000,
            check_seconds=settings.replica_check_ms / 1000,
            lock_wait_seconds=lock_wait,
            breaker=Breaker(cooldown=settings.breaker_cooldown_ms / 1000),
            observer=observer,
            schema_check_seconds=settings.schema_check_ms / 1000,
        )
    raise ValueError(
        f"TALLY_DATABASE_URL names {backend!r}; use sqlite:///path.db or postgresql+psycopg://user@host/db."
    )


def _rate_limit_counter(telemetry: Telemetry | None) -> DecisionCounter | None:
    """Counts each rate-limit decision in ``tally_rate_limit_decisions`` (backend, result)."""
    if telemetry is None:
        return None
    decisions = telemetry.metrics.rate_limit_decisions
    return lambda backend, result: decisions.labels(backend, result).inc()


def _secrets_of(settings: Settings) -> list[str]:
    """Configured secrets, which the logs blank wherever they would appear (observability.redaction)."""
    configured = (settings.root_key, settings.ops_token, settings.secret_key)
    return [secret.get_secret_value() for secret in configured if secret is not None]


def build_app(settings: Settings | None = None) -> FastAPI:
    """The app of one ``tally serve`` process, which also sets the process's collector thresholds
    (``TALLY_GC_THRESHOLDS``, ADR 0030, addenda): a setting of the process, not of a ``Tally`` (tests run
    many of those in one process)."""
    settings = settings or Settings()
    if settings.gc_thresholds is not None:
        gc.set_threshold(*settings.gc_thresholds)
    return create_app(Tally(settings))


def app_from_environment() -> FastAPI:
    """The app factory of each worker of ``tally serve --workers N``: settings from the environment."""
    return build_app(Settings())


def _as_job(name: str, start: Callable[[], None]) -> None:
    set_job(name)
    start()


def _ignore(_: int) -> None:
    """A group size with no metrics to count it in."""
