"""The port of batch job runs (ADR 0032): one record per (job, period), claimed once.

A run is claimed by inserting its row, or by taking over a running row whose holder is gone. Every
claim and takeover counts one attempt; ``(owner, attempts)`` fences the steps of that claim, so a
runner that lost its run changes nothing. A step stores its checkpoint with ``advance``/``finish`` in
the transaction of its effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class RunStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class JobRun:
    job: str
    period: str
    status: RunStatus
    checkpoint: dict[str, Any] | None  # where the next step starts; None before the first step
    result: dict[str, Any] | None  # the last step's state, once finished
    done: int  # units completed so far, over every claim
    total: int | None  # units expected, as counted at the first claim; None when unknown
    owner: str  # the runner holding the claim ("host:pid:random")
    lease_until: datetime  # after it, another runner may take the run over
    attempts: int  # claims and takeovers so far; fences every step of the current claim
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class JobRunRepository(Protocol):
    async def get(self, job: str, period: str) -> JobRun | None: ...

    async def lock(self, job: str, period: str) -> JobRun | None:
        """The run, locked for update until the transaction ends."""
        ...

    async def insert(
        self, job: str, period: str, *, owner: str, lease_until: datetime, total: int | None, at: datetime
    ) -> JobRun | None:
        """Claim a period never claimed before (running, attempts 1); ``None`` when its row exists."""
        ...

    async def take_over(
        self, run: JobRun, *, owner: str, lease_until: datetime, at: datetime
    ) -> JobRun | None:
        """Claim a running run from its holder (attempts + 1); ``None`` when it changed since ``run``."""
        ...

    async def fence(self, job: str, period: str, owner: str, attempts: int) -> JobRun | None:
        """The run as this claim holds it, locked until the transaction ends; ``None`` when the claim
        was lost (taken over, or finished by another runner)."""
        ...

    async def advance(
        self, run: JobRun, *, checkpoint: dict[str, Any], done: int, lease_until: datetime, at: datetime
    ) -> bool:
        """Store a step's checkpoint and the run's new ``done``, and extend the lease (fenced)."""
        ...

    async def finish(self, run: JobRun, *, result: dict[str, Any], done: int, at: datetime) -> bool:
        """Mark the run finished with its result (fenced)."""
        ...

    async def release(self, run: JobRun, at: datetime) -> bool:
        """End the lease now, checkpoint kept, so that the next runner resumes without waiting (fenced)."""
        ...

    async def recent(self, job: str, limit: int, *, status: RunStatus | None = None) -> list[JobRun]:
        """The job's runs, latest period first (of ``status`` when given)."""
        ...
