"""Running a batch job for one period: claimed once, checkpointed with every step, resumable (ADR 0032).

A ``BatchJob`` does its work in bounded steps. ``run_batch_job`` claims the (job, period) run in
``job_runs``, then runs one write transaction per step: the fence (this claim still holds the run),
the step's effect, and the checkpoint it ends at, committed together. A run killed at any instant
leaves either a step's effect and its checkpoint, or neither; the next runner resumes from the last
checkpoint. A finished run is never run again: re-running its period returns the stored result.

A run is held by a lease, renewed by every step. Another runner takes it over when the lease has
run out, or at once when the holder was a process on this host that no longer exists (its owner
name is ``host:pid:random``). Each claim and takeover counts one attempt; a runner whose run was
taken over finds the fence gone at its next step and stops with ``LostRun``, that step rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

from tally.jobs.schedule import Schedule
from tally.observability.context import current_job, current_request_id, set_job, set_request_id
from tally.observability.logging import get_logger
from tally.services.deadline import current_deadline, set_deadline
from tally.services.job_run_ports import JobRun, RunStatus
from tally.services.ports import Database, Transaction
from tally.services.retries import retry_conflicts

_log = get_logger("tally.jobs")


@dataclass(frozen=True, slots=True)
class Step:
    done: int  # units this step completed (added to the run's progress)
    state: dict[str, Any]  # JSON-serialisable; saved as the run's checkpoint IN THE SAME transaction
    finished: bool  # True: last step; `state` becomes the run's result
    # What the step writes, run in the write transaction that holds the fence and saves the
    # checkpoint: how a job that ``reads_first`` writes (None: nothing but the checkpoint).
    apply: Callable[[Transaction], Awaitable[None]] | None = None


class BatchJob(Protocol):
    name: str  # "statements", "reconcile", "expire-holds", "purge-idempotency-keys"
    unit: str  # progress label, e.g. "accounts", "holds", "keys"
    # True: a step reads in a background read (``Database.background_read``), and what it must
    # write it hands back as ``Step.apply``, run with the checkpoint in the write transaction; a
    # step of the others runs in the write transaction itself (ADR 0044).
    reads_first: bool

    @property
    def schedule(self) -> Schedule | None:
        """When the job is due (a class attribute does); ``None``: run on demand only, never scheduled."""
        ...

    def period(self, text: str | None, now: datetime) -> str:
        """Validate/normalise --period; the default (text None) is the period due at `now`.
        Raise ValueError with a clear message for a bad period."""
        ...

    async def total(self, tx: Transaction, period: str) -> int | None:
        """How many units the run will do (for the progress bar), or None when unknown."""
        ...

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        """Do one batch inside `tx` starting from `state` (None = from the start): a write
        transaction, or a background read for a job that ``reads_first``."""
        ...


class Progress(Protocol):
    """Hears how a run advances (``jobs.progress`` draws it on a terminal)."""

    def start(self, job: str, period: str, unit: str, done: int, total: int | None) -> None: ...
    def update(self, done: int) -> None: ...
    def finish(self) -> None: ...


class OutcomeStatus(StrEnum):
    FINISHED = "finished"  # this call ran the run to its end (perhaps resuming another's)
    ALREADY_FINISHED = "already_finished"  # the period was done before: nothing was done
    BUSY = "busy"  # another live runner holds the run
    STOPPED = "stopped"  # asked to stop: the last checkpoint is kept and the lease released


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a call of ``run_batch_job`` ended, with the run as it last saw it."""

    status: OutcomeStatus
    run: JobRun
    steps: int  # steps this call committed

    @property
    def result(self) -> dict[str, Any] | None:
        return self.run.result

    @property
    def done(self) -> int:
        return self.run.done


class LostRun(RuntimeError):
    """Another runner took the run over: this runner's step was rolled back and it must stop."""


def new_owner() -> str:
    """A runner's name: ``host:pid:random`` (the random part tells apart runners of one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_is_gone(owner: str) -> bool:
    """Whether ``owner`` names a process of this host that no longer exists.

    Only a process of this host can be checked; a holder elsewhere keeps its run until its lease
    runs out. A pid taken again by an unrelated process reads as alive: the lease still ends it.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


async def run_batch_job(
    database: Database,
    job: BatchJob,
    period: str,
    *,
    owner: str,
    lease: timedelta,
    progress: Progress | None,
    stop: asyncio.Event | None = None,
) -> RunOutcome:
    """Claim the (job, period) run and run its steps to the end; see the module docstring.

    ``stop``, when set, ends the run after the step in progress (``STOPPED``). ``LostRun`` when
    another runner took the run over meanwhile. A step that raises rolls back with its effect and
    ends the call with its error; the checkpoint of the step before stays, for the next runner.
    """
    with _as_background_work(job.name):
        status, run = await retry_conflicts(partial(_claim, database, job, period, owner, lease))
        if status is not None:
            log = _log.info if status is OutcomeStatus.ALREADY_FINISHED else _log.warning
            log(
                f"batch job {status.value.replace('_', ' ')}",
                job=job.name,
                period=period,
                holder=run.owner,
                lease_until=run.lease_until.isoformat(),
                done=run.done,
            )
            return RunOutcome(status, run, 0)
        resumed = run.checkpoint is not None or run.attempts > 1
        _log.info(
            "batch job resumed" if resumed else "batch job started",
            job=job.name,
            period=period,
            attempt=run.attempts,
            done=run.done,
            total=run.total,
        )
        if progress is not None:
            progress.start(job.name, period, job.unit, run.done, run.total)
        steps = 0
        try:
            while run.status is RunStatus.RUNNING:
                if stop is not None and stop.is_set():
                    run = await retry_conflicts(partial(_release, database, run))
                    _log.warning("batch job stopped", job=job.name, period=period, done=run.done, steps=steps)
                    return RunOutcome(OutcomeStatus.STOPPED, run, steps)
                began = time.monotonic()
                run = await retry_conflicts(partial(_step, database, job, run, lease))
                steps += 1
                if progress is not None:
                    progress.update(run.done)
                if run.status is RunStatus.RUNNING:
                    await _give_way(time.monotonic() - began)
        except LostRun:
            raise
        except Exception:
            # The failed step rolled back; the run is left at its last checkpoint, and a retry may
            # resume it at once rather than wait for the lease (best effort: it ends anyway).
            with contextlib.suppress(Exception):
                await _release(database, run)
            raise
        finally:
            if progress is not None:
                progress.finish()
        _log.info("batch job finished", job=job.name, period=period, done=run.done, steps=steps)
        return RunOutcome(OutcomeStatus.FINISHED, run, steps)


async def _give_way(step_seconds: float) -> None:
    """Rest between two steps as long as the step took, so that the requests waiting for the write
    lock (on SQLite, for the event loop too) have it at least half the time while a job runs. With
    steps of 1,000 accounts back to back, ``reconcile`` held transfers at 500/s for up to 0.7 s
    (ADR 0032, addendum)."""
    await asyncio.sleep(step_seconds)


async def _claim(
    database: Database, job: BatchJob, period: str, owner: str, lease: timedelta
) -> tuple[OutcomeStatus | None, JobRun]:
    """``(None, run)`` when this runner now holds the run, else why not and the run as found."""
    async with database.write() as tx:
        runs = tx.job_runs
        found = await runs.lock(job.name, period)
        if found is None:
            total = await job.total(tx, period)
            now = await tx.now()
            claimed = await runs.insert(
                job.name, period, owner=owner, lease_until=now + lease, total=total, at=now
            )
            if claimed is not None:
                return None, claimed
            # Claimed by another runner since the lock found nothing: decide on its row, as below.
            found = await runs.lock(job.name, period)
            if found is None:
                raise AssertionError(f"job run {job.name} {period} neither inserted nor found")
        if found.status is RunStatus.FINISHED:
            return OutcomeStatus.ALREADY_FINISHED, found
        now = await tx.now()
        if found.lease_until > now and not holder_is_gone(found.owner):
            return OutcomeStatus.BUSY, found
        taken = await runs.take_over(found, owner=owner, lease_until=now + lease, at=now)
        if taken is None:  # cannot happen under the row lock; said plainly rather than assumed
            return OutcomeStatus.BUSY, found
        _log.warning(
            "batch job taken over",
            job=job.name,
            period=period,
            holder=found.owner,
            lease_until=found.lease_until.isoformat(),
        )
        return None, taken


async def _step(database: Database, job: BatchJob, run: JobRun, lease: timedelta) -> JobRun:
    """One step in one write transaction: fence, effect, checkpoint; the run as committed.

    A job that ``reads_first`` does its step first, in a background read from the checkpoint this
    runner last committed; the write transaction then holds the fence, the step's ``apply`` and the
    checkpoint, so a step's reads neither hold the write lock nor (on SQLite) the event loop (ADR
    0044).
    """
    read: Step | None = None
    if job.reads_first:
        async with database.background_read() as tx:
            read = await job.step(tx, run.period, run.checkpoint)
    async with database.write() as tx:
        held = await tx.job_runs.fence(run.job, run.period, run.owner, run.attempts)
        # The fence holds: no other runner has stepped this run since this one claimed it, so the
        # stored progress is this runner's own, and the read step began where it should (``done``
        # is compared rather than the checkpoint, which comes back from JSON, not as it was built).
        if held is None or (read is not None and held.done != run.done):
            raise LostRun(
                f"Another runner took over job run {run.job} {run.period}; this step was rolled back."
            )
        step = read if read is not None else await job.step(tx, run.period, held.checkpoint)
        if step.apply is not None:
            await step.apply(tx)
        # The time is read after the step, so that a step taking locks fixes it after them (ADR 0020).
        now = await tx.now()
        done = held.done + step.done
        if step.finished:
            saved = await tx.job_runs.finish(held, result=step.state, done=done, at=now)
        else:
            saved = await tx.job_runs.advance(
                held, checkpoint=step.state, done=done, lease_until=now + lease, at=now
            )
        if not saved:  # the fence holds the row locked: only a broken invariant gets here
            raise LostRun(f"Job run {run.job} {run.period} changed under its fence.")
        finished = step.finished
        return JobRun(
            job=held.job,
            period=held.period,
            status=RunStatus.FINISHED if finished else RunStatus.RUNNING,
            checkpoint=held.checkpoint if finished else step.state,
            result=step.state if finished else None,
            done=done,
            total=held.total,
            owner=held.owner,
            lease_until=now if finished else now + lease,
            attempts=held.attempts,
            started_at=held.started_at,
            updated_at=now,
            finished_at=now if finished else None,
        )


async def _release(database: Database, run: JobRun) -> JobRun:
    async with database.write() as tx:
        now = await tx.now()
        await tx.job_runs.release(run, now)
        return await tx.job_runs.get(run.job, run.period) or run


@contextlib.contextmanager
def _as_background_work(name: str) -> Iterator[None]:
    """The run's log lines name the job (not a request), and no request's time budget cuts its
    transactions.

    A job has no request: a budget inherited from a caller's context would end its steps early.
    Without one, each transaction is bounded by the adapter's own limits (``TALLY_REQUEST_TIMEOUT_MS``
    for lock waits and PostgreSQL's statement timeout), which a bounded step stays well inside.
    """
    before = (current_job(), current_request_id(), current_deadline())
    set_job(name)
    set_request_id(None)
    set_deadline(None)
    try:
        yield
    finally:
        set_job(before[0])
        set_request_id(before[1])
        set_deadline(before[2])
