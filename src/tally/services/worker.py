"""Workers: claim jobs from the database queue, run their handlers, settle every outcome (ADR 0023).

Each queue runs ``concurrency`` loops per process. A loop claims one job in a short write
transaction, runs the handler outside any transaction, and settles the claim in another:

- the handler returns → ``done``;
- it raises ``Defer(until)`` → ready again at ``until``, the attempt not spent (rate limits);
- it raises ``Permanent`` → ``dead`` at once;
- anything else → ready again after a full-jitter exponential backoff on the database clock, or
  ``dead`` once ``max_attempts`` claims have failed.

A worker that dies mid-job leaves its claim to expire: ``run_at`` is the lease's end, and the job
is claimable again after it. Handlers must therefore be idempotent: they write their effect with an
inbox record (``tx.inbox.claim``) or by client ids, so a second run finds the effect done. On
``stop`` the loops claim nothing more, running jobs get ``grace`` seconds to finish, and the
claims of those that do not are released (ready again, attempt not spent).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from tally.services.ports import Database
from tally.services.queue_ports import Job, QueueDepth


class Defer(Exception):
    """Run the job again at ``until`` without spending an attempt."""

    def __init__(self, until: datetime) -> None:
        super().__init__(until.isoformat())
        self.until = until


class Permanent(Exception):
    """A failure no retry can fix: the job goes ``dead`` at once."""


Handler = Callable[[Job], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    handler: Handler
    concurrency: int = 1
    lease: timedelta = timedelta(seconds=60)  # longer than any handler's own time bound
    first_backoff: float = 1.0  # seconds; the n-th retry waits up to first_backoff × 2^(n-1)
    longest_backoff: float = 600.0


def backoff(queue: Queue, attempts: int) -> timedelta:
    """Full jitter: uniform over [0, min(longest, first × 2^(attempts-1))]."""
    ceiling = min(queue.longest_backoff, queue.first_backoff * 2 ** max(0, attempts - 1))
    return timedelta(seconds=random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret


class Wakeups(Protocol):
    """Told when jobs may be ready: after a commit that queued some, or a NOTIFY from elsewhere."""

    async def wait(self) -> None:
        """Return at the next wake-up (the caller bounds the wait)."""
        ...


class JobObserver(Protocol):
    def settled(self, job: Job, outcome: str, seconds: float) -> None:
        """``outcome``: done, deferred, retried, dead, released, lost (the lease went elsewhere)."""


class _Unobserved:
    def settled(self, job: Job, outcome: str, seconds: float) -> None:
        pass


def _no_context(_: Job) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


class Worker:
    def __init__(
        self,
        database: Database,
        queues: list[Queue],
        *,
        name: str,
        wakeups: Wakeups,
        poll_seconds: float = 1.0,
        observer: JobObserver | None = None,
        context: Callable[[Job], AbstractContextManager[None]] = _no_context,
    ) -> None:
        self._database = database
        self._queues = queues
        self.name = name
        self._wakeups = wakeups
        self._poll = poll_seconds
        self._observer = observer or _Unobserved()
        self._context = context  # log context of a job: its queue and originating request id
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._running: dict[asyncio.Task[None], Job] = {}

    def start(self) -> None:
        for queue in self._queues:
            for n in range(queue.concurrency):
                task = asyncio.create_task(self._loop(queue), name=f"tally-worker-{queue.name}-{n}")
                self._loops.append(task)

    async def stop(self, grace: float = 10.0) -> None:
        """Claim nothing more; let running jobs finish within ``grace``; release the others."""
        self._stopping.set()
        if self._loops:
            _, pending = await asyncio.wait(self._loops, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loops.clear()

    async def _loop(self, queue: Queue) -> None:
        while not self._stopping.is_set():
            try:
                job = await self._claim(queue)
            except Exception:  # the database is away: try again after a pause
                await self._pause(self._poll)
                continue
            if job is None:
                await self._pause(self._poll)
                continue
            await self._run(queue, job)

    async def _pause(self, seconds: float) -> None:
        """Until a wake-up, ``stop``, or ``seconds`` (the polling fallback), whichever comes first."""
        waiting = asyncio.ensure_future(self._wakeups.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            stopping.cancel()

    async def _claim(self, queue: Queue) -> Job | None:
        async with self._database.write() as tx:
            claimed = await tx.jobs.claim(queue.name, self.name, 1, await tx.now(), queue.lease)
        return claimed[0] if claimed else None

    async def _run(self, queue: Queue, job: Job) -> None:
        started = asyncio.get_running_loop().time()
        outcome = "released"
        try:
            with self._context(job):
                if job.attempts > job.max_attempts:  # claimed again and again by workers that died
                    outcome = await self._settle(queue, job, Permanent("its lease ran out too often"))
                    return
                try:
                    await queue.handler(job)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    outcome = await self._settle(queue, job, error)
                else:
                    outcome = await self._settle(queue, job, None)
        except asyncio.CancelledError:
            # Shut down mid-job: give the claim back so another worker runs it at once.
            with contextlib.suppress(Exception):
                async with self._database.write() as tx:
                    now = await tx.now()
                    await tx.jobs.release(job, now, now)
            raise
        finally:
            self._observer.settled(job, outcome, asyncio.get_running_loop().time() - started)

    async def _settle(self, queue: Queue, job: Job, error: BaseException | None) -> str:
        async with self._database.write() as tx:
            now = await tx.now()
            if error is None:
                kept, outcome = await tx.jobs.finish(job, now), "done"
            elif isinstance(error, Defer):
                kept, outcome = await tx.jobs.release(job, error.until, now), "deferred"
            elif isinstance(error, Permanent) or job.attempts >= job.max_attempts:
                kept, outcome = await tx.jobs.bury(job, _describe(error), now), "dead"
            else:
                run_at = now + backoff(queue, job.attempts)
                kept, outcome = await tx.jobs.retry(job, run_at, _describe(error), now), "retried"
        return outcome if kept else "lost"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


async def redrive_dead(database: Database, queue: str, *, limit: int = 1000) -> int:
    """Put up to ``limit`` of the queue's dead jobs back to ready with fresh attempts; how many."""
    async with database.write() as tx:
        now = await tx.now()
        return await tx.jobs.redrive(queue, await tx.jobs.dead(queue, limit), now)


async def queue_depths(database: Database) -> list[QueueDepth]:
    """Jobs per queue and status, and the oldest ready job's due time."""
    async with database.read() as tx:
        return await tx.jobs.depths(await tx.now())
