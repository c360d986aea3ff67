"""The job queue on real databases: claims, leases, fenced outcomes, backoff, dead letters, redrive.

Invariants, in plain words:
- a job is claimed by one worker at a time; a claim counts one attempt and leases the job until
  ``run_at``, after which another claim may take it;
- every outcome of a claim is fenced by its attempt: once another claim took the job, the old one
  changes nothing (``lost``);
- a failure makes the job ready again after a backoff, and ``dead`` after ``max_attempts`` claims;
  ``Defer`` and a release give the attempt back; a redrive makes dead jobs ready with fresh attempts;
- one ``dedupe_key`` per queue queues one job;
- on PostgreSQL, concurrent claim loops on separate connections never claim one job twice.

Each test runs on a SQLite file and on a fresh database of the shared PostgreSQL cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tally.bootstrap import open_database
from tally.config import Settings
from tally.services.queue_ports import Job, JobStatus, NewJob
from tally.services.worker import Defer, Queue, Worker, backoff
from tally.store.postgres import PostgresDatabase
from tally.store.sqlite import SqliteDatabase
from tests.support import BACKENDS, sqlite_url

Database = SqliteDatabase | PostgresDatabase
WAIT_SECONDS = 20.0  # a bound, only reached when a test fails
LONG = timedelta(minutes=5)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    name: str | None = None
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        cluster = BACKENDS.cluster()
        name = cluster.create_database()
        url = cluster.primary.url(name)
    db = open_database(Settings(database_url=url, log_format="json", pool_size=12), None)
    await db.start()
    try:
        yield db
    finally:
        await db.stop()
        if name is not None:
            BACKENDS.cluster().drop_database(name)


async def add(database: Database, *jobs: NewJob) -> list[int | None]:
    """Enqueue in one transaction; each job's pk, or ``None`` when its dedupe key was queued."""
    async with database.write() as tx:
        now = await tx.now()
        return [await tx.jobs.add(job, now) for job in jobs]


async def enqueue(database: Database, *jobs: NewJob) -> list[int]:
    pks = await add(database, *jobs)
    assert None not in pks
    return [pk for pk in pks if pk is not None]


async def claim(
    database: Database, queue: str, worker: str, lease: timedelta = LONG, limit: int = 1
) -> list[Job]:
    async with database.write() as tx:
        return await tx.jobs.claim(queue, worker, limit, await tx.now(), lease)


async def stored(database: Database, pk: int) -> Job:
    async with database.read() as tx:
        job = await tx.jobs.get(pk)
    assert job is not None
    return job


async def settle(database: Database, outcome: Callable[[Any, datetime], Awaitable[bool]]) -> bool:
    """Run one outcome (``lambda jobs, now: jobs.finish(job, now)``) in its own transaction."""
    async with database.write() as tx:
        return await outcome(tx.jobs, await tx.now())


async def finish(database: Database, job: Job) -> bool:
    async with database.write() as tx:
        return await tx.jobs.finish(job, await tx.now())


async def db_now(database: Database) -> datetime:
    async with database.write() as tx:  # the write clock: never behind a commit
        return await tx.now()


class Outcomes:
    """A ``JobObserver`` that remembers each settled claim's outcome."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def settled(self, job: Job, outcome: str, seconds: float) -> None:
        del seconds
        self.seen.append((job.pk, outcome))


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


def worker(database: Database, queue: Queue, observer: Outcomes, name: str = "w1") -> Worker:
    return Worker(
        database, [queue], name=name, wakeups=database.wakeups, poll_seconds=0.05, observer=observer
    )


async def test_a_job_is_claimed_once_leased_until_run_at_and_finished(database: Database) -> None:
    [pk] = await enqueue(database, NewJob("mail", {"to": "alice"}, request_id="req-1"))
    before = await db_now(database)
    [job] = await claim(database, "mail", "w1")
    assert (job.pk, job.status, job.attempts, job.payload, job.request_id) == (
        pk,
        JobStatus.RUNNING,
        1,
        {"to": "alice"},
        "req-1",
    )
    assert before + LONG <= job.run_at <= before + LONG + timedelta(seconds=5)
    assert await claim(database, "mail", "w2") == []  # leased
    assert await claim(database, "other", "w2") == []  # queues are apart
    assert await settle(database, lambda jobs, now: jobs.finish(job, now))
    assert (await stored(database, pk)).status is JobStatus.DONE
    assert await claim(database, "mail", "w2") == []


async def test_jobs_are_claimed_oldest_due_first_and_future_ones_wait(database: Database) -> None:
    now = await db_now(database)
    later, first, second = await enqueue(
        database,
        NewJob("mail", {"n": 0}, run_at=now + timedelta(hours=1)),
        NewJob("mail", {"n": 1}),
        NewJob("mail", {"n": 2}),
    )
    claimed = await claim(database, "mail", "w1", limit=10)
    assert [job.pk for job in claimed] == [first, second]
    assert later not in {job.pk for job in claimed}


async def test_one_dedupe_key_queues_one_job_per_queue(database: Database) -> None:
    first, again, elsewhere = await add(
        database,
        NewJob("batches", {"n": 1}, dedupe_key="tb_1"),
        NewJob("batches", {"n": 2}, dedupe_key="tb_1"),
        NewJob("mail", {"n": 3}, dedupe_key="tb_1"),
    )
    assert first is not None
    assert again is None
    assert elsewhere is not None
    [later] = await add(database, NewJob("batches", {"n": 4}, dedupe_key="tb_1"))
    assert later is None
    assert [job.payload for job in await claim(database, "batches", "w1", limit=10)] == [{"n": 1}]


async def test_an_expired_lease_is_claimable_again_and_the_old_claim_is_fenced_off(
    database: Database,
) -> None:
    [pk] = await enqueue(database, NewJob("mail", {}))
    [old] = await claim(database, "mail", "w1", lease=timedelta(milliseconds=50))
    await asyncio.sleep(0.1)
    [new] = await claim(database, "mail", "w2")
    assert (new.pk, new.attempts) == (pk, 2)
    for outcome in (
        lambda jobs, now: jobs.finish(old, now),
        lambda jobs, now: jobs.retry(old, now, "boom", now),
        lambda jobs, now: jobs.bury(old, "boom", now),
        lambda jobs, now: jobs.release(old, now, now),
    ):
        assert not await settle(database, outcome)
    assert (await stored(database, pk)).status is JobStatus.RUNNING
    assert await settle(database, lambda jobs, now: jobs.finish(new, now))
    assert (await stored(database, pk)).status is JobStatus.DONE


async def test_a_worker_that_lost_its_lease_settles_nothing_and_counts_the_run_lost(
    database: Database,
) -> None:
    [pk] = await enqueue(database, NewJob("slow", {}))
    release = asyncio.Event()
    runs: list[int] = []

    async def handler(job: Job) -> None:
        runs.append(job.attempts)
        if job.attempts == 1:
            await release.wait()  # stalls past its lease

    outcomes = Outcomes()
    queue = Queue("slow", handler, lease=timedelta(milliseconds=200))
    stalled, rescuer = (
        worker(database, queue, outcomes, "stalled"),
        worker(database, queue, outcomes, "rescuer"),
    )
    stalled.start()
    await until(lambda: _true(runs == [1]), "the first run")
    rescuer.start()
    await until(lambda: _true((pk, "done") in outcomes.seen), "the second worker to finish the job")
    release.set()
    await until(lambda: _true((pk, "lost") in outcomes.seen), "the stalled worker to settle")
    await stalled.stop(1.0)
    await rescuer.stop(1.0)
    assert runs == [1, 2]
    job = await stored(database, pk)
    assert (job.status, job.attempts) == (JobStatus.DONE, 2)


async def test_a_failed_job_retries_after_a_backoff_then_dies_after_its_attempts(database: Database) -> None:
    async def failing(job: Job) -> None:
        raise RuntimeError(f"boom {job.payload['n']}")

    outcomes = Outcomes()
    [slow] = await enqueue(database, NewJob("flaky", {"n": 1}))
    runner = worker(database, Queue("flaky", failing, first_backoff=3600.0), outcomes)
    runner.start()
    await until(lambda: _true((slow, "retried") in outcomes.seen), "the first failure")
    await runner.stop(1.0)
    after = await db_now(database)
    job = await stored(database, slow)
    assert (job.status, job.attempts, job.last_error) == (JobStatus.READY, 1, "RuntimeError: boom 1")
    assert job.run_at <= after + timedelta(hours=1)  # up to the first backoff's ceiling
    assert await claim(database, "flaky", "w2") == []  # waiting out its backoff

    async with database.write() as tx:  # set it aside: its hour-long backoff is not tested further
        await tx.connection.execute(text("UPDATE jobs SET status = 'done' WHERE pk = :pk"), {"pk": slow})
    [quick] = await enqueue(database, NewJob("flaky", {"n": 2}, max_attempts=3))
    runner = worker(database, Queue("flaky", failing, first_backoff=0.0), outcomes)
    runner.start()
    await until(lambda: _true((quick, "dead") in outcomes.seen), "the last attempt")
    await runner.stop(1.0)
    assert [o for pk, o in outcomes.seen if pk == quick] == ["retried", "retried", "dead"]
    job = await stored(database, quick)
    assert (job.status, job.attempts, job.last_error) == (JobStatus.DEAD, 3, "RuntimeError: boom 2")


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    queue = Queue("q", _nothing, first_backoff=2.0, longest_backoff=60.0)
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (30, 60.0)):
        waits = [backoff(queue, attempts).total_seconds() for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits), (attempts, max(waits))
        assert max(waits) > ceiling / 2  # spread over the range, not stuck at its floor


async def test_a_dead_job_is_redriven_with_fresh_attempts(database: Database) -> None:
    [pk, other] = await enqueue(database, NewJob("mail", {}, max_attempts=1), NewJob("mail", {}))
    [job] = await claim(database, "mail", "w1")
    assert await settle(database, lambda jobs, now: jobs.bury(job, "RuntimeError: down", now))
    assert (await stored(database, pk)).status is JobStatus.DEAD

    async with database.write() as tx:
        assert await tx.jobs.redrive("elsewhere", [pk], await tx.now()) == 0
        assert await tx.jobs.redrive("mail", [pk, other], await tx.now()) == 1  # only dead ones
    redriven = await stored(database, pk)
    assert (redriven.status, redriven.attempts, redriven.last_error) == (JobStatus.READY, 0, None)
    claimed = await claim(database, "mail", "w2", limit=10)
    assert sorted((job.pk, job.attempts) for job in claimed) == sorted([(pk, 1), (other, 1)])


async def test_a_job_whose_workers_kept_dying_goes_dead_without_running(database: Database) -> None:
    [pk] = await enqueue(database, NewJob("doomed", {}, max_attempts=2))
    for name in ("w1", "w2"):  # two claims whose workers "died": their leases run out
        await claim(database, "doomed", name, lease=timedelta(milliseconds=1))
        await asyncio.sleep(0.01)
    runs: list[Job] = []

    async def handler(job: Job) -> None:
        runs.append(job)

    outcomes = Outcomes()
    runner = worker(database, Queue("doomed", handler), outcomes)
    runner.start()
    await until(lambda: _true((pk, "dead") in outcomes.seen), "the job to go dead")
    await runner.stop(1.0)
    assert runs == []
    job = await stored(database, pk)
    assert (job.status, job.attempts) == (JobStatus.DEAD, 3)


async def test_defer_gives_the_attempt_back_and_runs_the_job_at_the_time_it_names(database: Database) -> None:
    [pk] = await enqueue(database, NewJob("limited", {}))
    until_time = (await db_now(database)) + timedelta(hours=1)

    async def handler(job: Job) -> None:
        raise Defer(until_time)

    outcomes = Outcomes()
    runner = worker(database, Queue("limited", handler), outcomes)
    runner.start()
    await until(lambda: _true((pk, "deferred") in outcomes.seen), "the deferral")
    await runner.stop(1.0)
    job = await stored(database, pk)
    assert (job.status, job.attempts, job.run_at) == (JobStatus.READY, 0, until_time)
    assert await claim(database, "limited", "w2") == []


async def test_a_stopping_worker_releases_the_job_it_could_not_finish(database: Database) -> None:
    [pk] = await enqueue(database, NewJob("slow", {}))
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await asyncio.sleep(3600)

    outcomes = Outcomes()
    runner = worker(database, Queue("slow", handler), outcomes)
    runner.start()
    await asyncio.wait_for(started.wait(), WAIT_SECONDS)
    await runner.stop(0.1)
    assert outcomes.seen == [(pk, "released")]
    job = await stored(database, pk)
    assert (job.status, job.attempts) == (JobStatus.READY, 0)
    [again] = await claim(database, "slow", "w2")  # at once: no lease to wait out
    assert again.pk == pk


async def test_concurrent_claim_loops_take_every_job_exactly_once(database: Database) -> None:
    pks = await enqueue(database, *(NewJob("spike", {"n": n}) for n in range(200)))
    claims: Counter[int] = Counter()
    by_loop: Counter[str] = Counter()
    finished: list[bool] = []

    async def loop(name: str) -> None:
        while True:
            jobs = await claim(database, "spike", name, limit=3)
            if not jobs:
                return
            for job in jobs:
                claims[job.pk] += 1
                by_loop[name] += 1
                await asyncio.sleep(0)  # let the other loops claim in between
                finished.append(await finish(database, job))

    await asyncio.gather(*(loop(f"w{n}") for n in range(8)))
    assert sorted(claims) == sorted(pks)
    assert set(claims.values()) == {1}
    assert finished == [True] * 200
    assert len(by_loop) > 1, by_loop  # the loops did run side by side
    async with database.read() as tx:
        depths = await tx.jobs.depths(await tx.now())
    assert [d for d in depths if d.queue == "spike"] == []  # done jobs are not counted


async def _true(value: bool) -> bool:
    return value


async def _nothing(job: Job) -> None:
    del job
