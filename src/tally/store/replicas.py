"""Watching the streaming replicas: how far behind each one is, measured against the primary.

A ``ReplicaMonitor`` samples every ``interval`` seconds, on connections of its own (autocommit,
short timeouts, never from the request pools): first the primary's ``pg_current_wal_lsn()``, then
each replica's ``pg_last_wal_replay_lsn()``. A replica whose replay position has reached the
primary's position sampled just before is *caught up as of* that sample's time: it holds every
commit acknowledged before then. Its lag is the time since it was last caught up, so it grows while
replay is paused or the primary is gone, and ``caught_up_at`` is what a stale answer's
``Tally-As-Of`` says (ADR 0021).

The primary's sample doubles as its health probe: ``on_primary`` hears each outcome, which is how
writes resume after an outage even when no request tries the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from tally.store.instrumentation import ConnectionObserver


def parse_lsn(text: str) -> int:
    """``16/B374D848`` → an integer that orders like the WAL."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(slots=True)
class ReplicaState:
    """What the monitor last learned of one replica."""

    name: str
    reachable: bool = False
    replay_lsn: int = 0
    caught_up_at: datetime | None = None  # wall clock: every commit before it has been replayed
    _caught_up: float | None = None  # the same instant, monotonic

    def lag(self) -> float:
        """Seconds since the replica was last known to hold everything the primary had."""
        return float("inf") if self._caught_up is None else time.monotonic() - self._caught_up

    def has(self, lsn: int) -> bool:
        return self.replay_lsn >= lsn

    def mark_caught_up(self, at: datetime, monotonic: float) -> None:
        self.caught_up_at, self._caught_up = at, monotonic


class ReplicaMonitor:
    def __init__(
        self,
        primary_dsn: str,
        replicas: dict[str, ReplicaState],
        *,
        interval: float,
        on_primary: Callable[[bool, float], None],
        observer: ConnectionObserver,
        timeout: float = 1.0,
    ) -> None:
        self._observer = observer
        self._primary = primary_dsn
        self._replicas = replicas  # dsn -> state
        self._interval = interval
        self._on_primary = on_primary
        self._timeout = timeout
        self._connections: dict[str, psycopg.AsyncConnection[Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tally-replica-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self._connections.clear()

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self._interval)

    async def sample(self) -> None:
        """One round: the primary's position, then each replica's."""
        at, monotonic = datetime.now(UTC), time.monotonic()
        primary_lsn: int | None = None
        try:
            primary_lsn = parse_lsn(await self._scalar(self._primary, "SELECT pg_current_wal_lsn()::text"))
        except Exception:
            self._on_primary(False, monotonic)
        else:
            self._on_primary(True, monotonic)
        for dsn, state in self._replicas.items():
            await self._sample_replica(dsn, state, primary_lsn, at, monotonic)
        lags = {state.name: state.lag() for state in self._replicas.values()}
        self._observer.replication(primary_lsn is not None, lags)

    async def refresh(self, state: ReplicaState) -> None:
        """Sample one replica again now (a read waiting for it to reach a token)."""
        for dsn, known in self._replicas.items():
            if known is state:
                await self._sample_replica(dsn, state, None, datetime.now(UTC), time.monotonic())

    async def _sample_replica(
        self, dsn: str, state: ReplicaState, primary_lsn: int | None, at: datetime, monotonic: float
    ) -> None:
        try:
            replayed = await self._scalar(dsn, "SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')::text")
        except Exception:
            state.reachable = False
            return
        state.reachable = True
        state.replay_lsn = max(state.replay_lsn, parse_lsn(replayed))
        if primary_lsn is not None and state.replay_lsn >= primary_lsn:
            state.mark_caught_up(at, monotonic)

    async def _scalar(self, dsn: str, sql: str) -> str:
        try:
            async with asyncio.timeout(self._timeout):
                conn = self._connections.get(dsn)
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        dsn, autocommit=True, connect_timeout=max(1, round(self._timeout))
                    )
                    self._connections[dsn] = conn
                cursor = await conn.execute(sql)
                row = await cursor.fetchone()
        except BaseException:
            dropped = self._connections.pop(dsn, None)
            if dropped is not None:
                with contextlib.suppress(Exception):
                    await dropped.close()
            raise
        if row is None:
            raise RuntimeError(f"{sql!r} returned no row")
        return str(row[0])
