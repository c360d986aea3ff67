"""Runs the batch jobs when they are due, in every process that runs the workers (ADR 0032).

One loop per scheduled job: every ``every`` seconds it asks which period is due (by the database
clock) and, unless that run is finished or held by a live runner, runs it with ``run_batch_job``.
Every process does the same: the claim in ``job_runs`` makes each (job, period) run once, and a
process that dies mid-run leaves it to whichever loop looks next after the lease ends.

Only the latest due period is run. A period missed while no process was up is not caught up by
itself: ``tally jobs list`` shows the gap, and ``tally jobs run NAME --period P`` fills it (for
``expire-holds`` and ``purge-idempotency-keys`` the next period covers what a missed one would have
done).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from tally.jobs.registry import JOBS, build_job
from tally.jobs.runs import BatchJob, LostRun, RunOutcome, holder_is_gone, new_owner, run_batch_job
from tally.observability.context import set_job
from tally.observability.logging import get_logger
from tally.services.job_run_ports import RunStatus
from tally.services.ports import Database

if TYPE_CHECKING:
    from tally.config import Settings

_log = get_logger("tally.jobs")
STOP_GRACE_SECONDS = 10.0  # how long a run may take to end its step on shutdown before it is cancelled


class Scheduler:
    def __init__(
        self, database: Database, jobs: Sequence[BatchJob], *, every: float, lease: timedelta
    ) -> None:
        self._database = database
        self._jobs = list(jobs)
        self._every = every
        self._lease = lease
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def jobs(self) -> list[str]:
        return [job.name for job in self._jobs]

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self._loop(job), name=f"tally-batch-job-{job.name}") for job in self._jobs
        ]

    async def stop(self) -> None:
        """Let each run end after its step in progress (checkpoint kept, lease released), then stop."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECONDS)
        for task in pending:  # a step still running is rolled back with its transaction
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _loop(self, job: BatchJob) -> None:
        set_job("batch_job_scheduler")  # this task's lines belong to no request
        # The first look waits one interval: a process starting (or a test) is not slowed by it.
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._every)
            if self._stop.is_set():
                return
            try:
                await self.run_due(job)
            except LostRun as error:
                _log.warning("batch job lost its run", job=job.name, error=str(error))
            except Exception:
                _log.exception("batch job failed", job=job.name)

    async def run_due(self, job: BatchJob) -> RunOutcome | None:
        """Run the job's due period unless it is finished or held by a live runner (``None``)."""
        async with self._database.read() as tx:
            now = await tx.now()
            if job.schedule is None:  # scheduler_from keeps these out
                return None
            period = job.schedule.due(now)
            run = await tx.job_runs.get(job.name, period)
        # Most looks find the period done: the read keeps them off the write lock.
        if run is not None and (
            run.status is RunStatus.FINISHED or (run.lease_until > now and not holder_is_gone(run.owner))
        ):
            return None
        return await run_batch_job(
            self._database, job, period, owner=new_owner(), lease=self._lease, progress=None, stop=self._stop
        )


def scheduler_from(settings: Settings, database: Database) -> Scheduler | None:
    """The scheduler of the jobs ``TALLY_JOB_SCHEDULE`` names, ``None`` when it names none.

    A name no job is registered under is reported and skipped rather than stopping the process.
    """
    jobs = []
    for name in settings.job_schedule:
        if name not in JOBS:
            _log.warning("no batch job to schedule by this name", name=name, known=sorted(JOBS))
            continue
        job = build_job(name, settings)
        if job.schedule is None:
            _log.warning("this batch job runs on demand only; not scheduled", name=name)
            continue
        jobs.append(job)
    if not jobs:
        return None
    return Scheduler(
        database,
        jobs,
        every=settings.job_schedule_seconds,
        lease=timedelta(milliseconds=settings.job_run_lease_ms),
    )
