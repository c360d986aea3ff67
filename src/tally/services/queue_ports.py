"""The ports of the asynchronous side: the job queue, the inbox, webhooks and queued batches.

Like ``services.ports``, these are Protocols the store implements on both databases; a
``Transaction`` carries one repository of each (``tx.jobs``, ``tx.inbox``, ``tx.webhooks``,
``tx.deliveries``, ``tx.batches``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol


class JobStatus(StrEnum):
    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class NewJob:
    queue: str
    payload: dict[str, Any]
    request_id: str | None = None  # the request that queued the work: its id follows the job
    dedupe_key: str | None = None  # one job per (queue, dedupe_key): enqueueing twice adds one
    run_at: datetime | None = None  # None: now
    max_attempts: int = 8


@dataclass(frozen=True, slots=True)
class Job:
    pk: int
    queue: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int  # claims so far, this one included; fences every outcome of this claim
    max_attempts: int
    run_at: datetime
    request_id: str | None
    dedupe_key: str | None
    last_error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QueueDepth:
    queue: str
    status: JobStatus
    count: int
    oldest_run_at: datetime | None  # of the ready ones: how long the oldest has been waiting


class JobRepository(Protocol):
    async def add(self, job: NewJob, at: datetime) -> int | None:
        """Enqueue; the job's pk, or ``None`` when its ``dedupe_key`` is already queued."""
        ...

    async def claim(self, queue: str, worker: str, limit: int, at: datetime, lease: timedelta) -> list[Job]:
        """Lease up to ``limit`` jobs that are due (ready, or running with an expired lease), oldest
        first, skipping jobs another transaction is claiming; each claim counts one attempt."""
        ...

    async def finish(self, job: Job, at: datetime) -> bool:
        """Done. ``False`` when this claim lost its lease to another worker (nothing changed)."""
        ...

    async def retry(self, job: Job, run_at: datetime, error: str, at: datetime) -> bool:
        """Ready again at ``run_at`` (the attempt is spent)."""
        ...

    async def bury(self, job: Job, error: str, at: datetime) -> bool:
        """Dead: out of attempts, or a failure no retry can fix."""
        ...

    async def release(self, job: Job, run_at: datetime, at: datetime) -> bool:
        """Ready again at ``run_at`` without spending the attempt (rate limits, shutdown)."""
        ...

    async def redrive(self, queue: str, pks: Sequence[int], at: datetime) -> int:
        """Dead jobs among ``pks`` ready again with fresh attempts; how many."""
        ...

    async def get(self, pk: int) -> Job | None: ...

    async def dead(self, queue: str, limit: int) -> list[int]:
        """The pks of the queue's dead jobs, oldest first (for redrive)."""
        ...

    async def depths(self, at: datetime) -> list[QueueDepth]:
        """Jobs per queue and status (done jobs excluded)."""
        ...


class InboxRepository(Protocol):
    async def claim(self, consumer: str, message_id: str, at: datetime) -> bool:
        """Record that ``consumer`` handles ``message_id`` in this transaction; ``False`` when it
        already did (then the caller skips the effect: it was applied with that record)."""
        ...
