"""Batch job runs on real databases: claimed once per (job, period), checkpointed with each step.

Invariants, in plain words:
- two runners of one period: one runs it, the other finds it busy or finished; each unit is done once;
- a finished period is never run again: a re-run returns the stored result and changes nothing;
- a step that fails leaves neither its effect nor its checkpoint; a retry resumes after the last step;
- a run whose lease ran out, or whose holder was a process of this host that is gone, is taken over
  and resumed from its checkpoint; a live holder's run is busy;
- a runner whose run was taken over commits no further step (the fence);
- expire-holds writes each due hold's expiry and its event once; purge-idempotency-keys deletes
  only records past their retention, in bounded batches, and a re-run deletes nothing.

Each test runs on a SQLite file and on a fresh database of the shared PostgreSQL cluster.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tally.bootstrap import open_database
from tally.jobs.holds import ExpireHolds
from tally.jobs.idempotency import PurgeIdempotencyKeys
from tally.jobs.runs import LostRun, OutcomeStatus, RunOutcome, Step, _step, run_batch_job
from tally.jobs.schedule import HOURLY, Schedule
from tally.services.job_run_ports import RunStatus
from tally.services.ports import IdempotencyRecord, StoredReply, Transaction
from tally.store.postgres import PostgresDatabase
from tally.store.sqlite import SqliteDatabase
from tests.support import (
    BACKENDS,
    asgi_client,
    new_ledger,
    open_account,
    primary_read,
    settings_for,
    transfer,
)

Database = SqliteDatabase | PostgresDatabase
PERIOD = "2026-01-01T00"
LEASE = timedelta(seconds=30)


class UnitsJob:
    """Does units ``0..count-1``, ``batch`` per step: each unit stores one idempotency record under
    the period, so a unit done twice would break their primary key."""

    name = "test-units"
    unit = "units"
    reads_first = False
    schedule: Schedule = HOURLY

    def __init__(self, count: int, batch: int, *, fail_at_step: int | None = None) -> None:
        self.count = count
        self.batch = batch
        self.fail_at_step = fail_at_step

    def period(self, text: str | None, now: datetime) -> str:
        return self.schedule.period(text, now)

    async def total(self, tx: Transaction, period: str) -> int | None:
        del tx, period
        return self.count

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        start = 0 if state is None else int(state["next"])
        end = min(start + self.batch, self.count)
        now = await tx.now()
        for unit in range(start, end):
            record = IdempotencyRecord(period, f"unit-{unit}", b"", StoredReply(200, b""), now)
            await tx.idempotency.add(record, keep_until=now + timedelta(days=1))
        if self.fail_at_step is not None and start // self.batch == self.fail_at_step:
            raise RuntimeError("the step failed after its effect")
        return Step(done=end - start, state={"next": end}, finished=end >= self.count)


class CountSteps:
    """A job that only reads: each step notes the checkpoint stored when its snapshot began, and
    counts one."""

    name = "test-reads"
    unit = "steps"
    schedule: Schedule = HOURLY
    reads_first = True

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.seen: list[dict[str, Any] | None] = []

    def period(self, text: str | None, now: datetime) -> str:
        return self.schedule.period(text, now)

    async def total(self, tx: Transaction, period: str) -> int | None:
        del tx, period
        return self.steps

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        run = await tx.job_runs.get(self.name, period)
        self.seen.append(None if run is None else run.checkpoint)
        done = 1 + (0 if state is None else int(state["steps"]))
        return Step(done=1, state={"steps": done}, finished=done >= self.steps)


class StopAfter:
    """A ``Progress`` that asks the run to stop once ``steps`` steps have committed."""

    def __init__(self, steps: int) -> None:
        self.stop = asyncio.Event()
        self._left = steps

    def start(self, job: str, period: str, unit: str, done: int, total: int | None) -> None:
        del job, period, unit, done, total

    def update(self, done: int) -> None:
        del done
        self._left -= 1
        if self._left <= 0:
            self.stop.set()

    def finish(self) -> None:
        pass


@pytest.fixture
async def database(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    del backend
    db = open_database(settings_for(tmp_path, pool_size=8), None)
    await db.start()
    try:
        yield db
    finally:
        await db.stop()


def units_done(directory: Path) -> int:
    return int(
        BACKENDS.rows(directory, "SELECT count(*) FROM idempotency_keys WHERE ledger_id = ?", (PERIOD,))[0][0]
    )


async def run(database: Database, job: Any, owner: str, **options: Any) -> RunOutcome:
    options.setdefault("progress", None)
    return await run_batch_job(database, job, PERIOD, owner=owner, lease=LEASE, **options)


async def test_two_runners_of_one_period_run_it_once(database: Database, tmp_path: Path) -> None:
    job = UnitsJob(count=60, batch=5)
    first, second = await asyncio.gather(run(database, job, "a:1:a"), run(database, job, "b:2:b"))
    statuses = sorted([first.status, second.status])
    assert statuses.count(OutcomeStatus.FINISHED) == 1, statuses
    assert set(statuses) - {OutcomeStatus.FINISHED} <= {OutcomeStatus.BUSY, OutcomeStatus.ALREADY_FINISHED}
    assert units_done(tmp_path) == 60
    async with primary_read(database) as tx:
        stored = await tx.job_runs.get(job.name, PERIOD)
    assert stored is not None
    assert (stored.status, stored.done, stored.total, stored.attempts) == (RunStatus.FINISHED, 60, 60, 1)
    assert stored.result == {"next": 60}


async def test_a_run_gives_way_between_its_steps_and_not_after_the_last(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rests: list[float] = []

    async def give_way(step_seconds: float) -> None:
        rests.append(step_seconds)

    monkeypatch.setattr("tally.jobs.runs._give_way", give_way)
    finished = await run(database, UnitsJob(count=12, batch=5), "a:1:a")

    assert (finished.status, finished.steps) == (OutcomeStatus.FINISHED, 3)
    assert len(rests) == 2  # after steps 1 and 2; the run ends with step 3
    assert all(seconds > 0 for seconds in rests)


async def test_a_finished_period_is_not_run_again(database: Database, tmp_path: Path) -> None:
    job = UnitsJob(count=12, batch=5)
    finished = await run(database, job, "a:1:a")
    assert (finished.status, finished.steps, finished.done) == (OutcomeStatus.FINISHED, 3, 12)

    again = await run(database, job, "b:2:b")

    assert (again.status, again.steps, again.result) == (OutcomeStatus.ALREADY_FINISHED, 0, {"next": 12})
    assert again.run.finished_at == finished.run.finished_at
    assert units_done(tmp_path) == 12


async def test_a_failed_step_leaves_neither_its_effect_nor_its_checkpoint(
    database: Database, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="the step failed"):
        await run(database, UnitsJob(count=30, batch=5, fail_at_step=2), "a:1:a")
    async with primary_read(database) as tx:
        stored = await tx.job_runs.get("test-units", PERIOD)
    assert stored is not None
    assert (stored.status, stored.checkpoint, stored.done) == (RunStatus.RUNNING, {"next": 10}, 10)
    assert units_done(tmp_path) == 10

    resumed = await run(database, UnitsJob(count=30, batch=5), "b:2:b")  # the lease was released

    assert (resumed.status, resumed.steps, resumed.done) == (OutcomeStatus.FINISHED, 4, 30)
    assert units_done(tmp_path) == 30


async def claim_as(database: Database, owner: str, lease_until: timedelta, done: int) -> None:
    """A run held by ``owner`` that stopped after ``done`` units without a trace (a crashed runner)."""
    job = UnitsJob(count=30, batch=5)
    async with database.write() as tx:
        now = await tx.now()
        held = await tx.job_runs.insert(
            job.name, PERIOD, owner=owner, lease_until=now + lease_until, total=30, at=now
        )
        assert held is not None
        step = await job.step(tx, PERIOD, None)
        assert step.done == done
        assert await tx.job_runs.advance(
            held, checkpoint=step.state, done=done, lease_until=now + lease_until, at=now
        )


async def test_a_live_holder_keeps_its_run_and_an_expired_lease_is_taken_over(
    database: Database, tmp_path: Path
) -> None:
    await claim_as(database, "elsewhere:4242:dead", timedelta(hours=1), done=5)
    busy = await run(database, UnitsJob(count=30, batch=5), "b:2:b")
    assert (busy.status, busy.run.owner, busy.done) == (OutcomeStatus.BUSY, "elsewhere:4242:dead", 5)

    async with database.write() as tx:  # the holder's lease runs out
        stored = await tx.job_runs.get("test-units", PERIOD)
        assert stored is not None
        assert await tx.job_runs.release(stored, await tx.now())
    resumed = await run(database, UnitsJob(count=30, batch=5), "b:2:b")

    assert (resumed.status, resumed.steps, resumed.done, resumed.run.attempts) == (
        OutcomeStatus.FINISHED,
        5,
        30,
        2,
    )
    assert units_done(tmp_path) == 30


async def test_a_run_held_by_a_dead_process_of_this_host_is_taken_over_at_once(
    database: Database, tmp_path: Path
) -> None:
    gone = await asyncio.create_subprocess_exec("true")  # it exits at once: its pid is free
    await gone.wait()
    await claim_as(database, f"{socket.gethostname()}:{gone.pid}:0000", timedelta(hours=1), done=5)

    resumed = await run(database, UnitsJob(count=30, batch=5), "b:2:b")

    assert (resumed.status, resumed.done, resumed.run.attempts) == (OutcomeStatus.FINISHED, 30, 2)
    assert units_done(tmp_path) == 30


async def test_a_runner_whose_run_was_taken_over_commits_no_further_step(
    database: Database, tmp_path: Path
) -> None:
    job = UnitsJob(count=30, batch=5)
    first = StopAfter(1)
    stopped = await run(database, job, "a:1:a", progress=first, stop=first.stop)
    assert (stopped.status, stopped.done) == (OutcomeStatus.STOPPED, 5)
    second = StopAfter(1)
    taken = await run(database, job, "b:2:b", progress=second, stop=second.stop)
    assert (taken.status, taken.done, taken.run.attempts) == (OutcomeStatus.STOPPED, 10, 2)

    with pytest.raises(LostRun):  # the first runner carries on with its old claim
        await _step(database, job, stopped.run, LEASE)

    assert units_done(tmp_path) == 10
    async with primary_read(database) as tx:
        stored = await tx.job_runs.get(job.name, PERIOD)
    assert stored is not None
    assert (stored.owner, stored.done, stored.checkpoint) == ("b:2:b", 10, {"next": 10})


async def test_a_job_that_only_reads_commits_its_checkpoints_and_a_runner_taken_over_commits_none(
    database: Database,
) -> None:
    job = CountSteps(4)
    first = StopAfter(1)
    stopped = await run(database, job, "a:1:a", progress=first, stop=first.stop)
    assert (stopped.status, stopped.done, stopped.run.checkpoint) == (OutcomeStatus.STOPPED, 1, {"steps": 1})
    second = StopAfter(1)
    taken = await run(database, job, "b:2:b", progress=second, stop=second.stop)
    assert (taken.status, taken.done, taken.run.attempts) == (OutcomeStatus.STOPPED, 2, 2)

    with pytest.raises(LostRun):  # its step read, and then found the fence gone
        await _step(database, job, stopped.run, LEASE)

    finished = await run(database, job, "b:2:b")
    assert (finished.status, finished.done, finished.result) == (OutcomeStatus.FINISHED, 4, {"steps": 4})
    # Each step read from the checkpoint before it; the runner taken over read the newer one.
    assert job.seen == [None, {"steps": 1}, {"steps": 2}, {"steps": 2}, {"steps": 3}]


async def test_purge_deletes_only_records_past_retention_in_batches(
    database: Database, tmp_path: Path
) -> None:
    async with database.write() as tx:
        base = await tx.now()
        for number in range(25):
            old = IdempotencyRecord(
                "ldg", f"old-{number}", b"", StoredReply(201, b"{}"), base - timedelta(days=2)
            )
            await tx.idempotency.add(old, keep_until=base - timedelta(hours=2, seconds=number))
        for number in range(5):
            kept = IdempotencyRecord("ldg", f"new-{number}", b"", StoredReply(201, b"{}"), base)
            await tx.idempotency.add(kept, keep_until=base + timedelta(hours=1))
    job = PurgeIdempotencyKeys(batch=10)
    period = job.period(HOURLY.name(HOURLY.start_of(base - timedelta(hours=1))), datetime.now(UTC))

    purged = await run_batch_job(database, job, period, owner="a:1:a", lease=LEASE, progress=None)
    again = await run_batch_job(database, job, period, owner="b:2:b", lease=LEASE, progress=None)

    assert (purged.status, purged.result, purged.steps, purged.run.total) == (
        OutcomeStatus.FINISHED,
        {"deleted": 25},
        3,
        25,
    )
    assert (again.status, again.result) == (OutcomeStatus.ALREADY_FINISHED, {"deleted": 25})
    left = BACKENDS.rows(tmp_path, "SELECT key FROM idempotency_keys ORDER BY key")
    assert [row[0] for row in left] == [f"new-{number}" for number in range(5)]


async def test_expire_holds_writes_each_expiry_and_its_event_once(backend: str, tmp_path: Path) -> None:
    del backend
    # The sweeper of the app is kept out of the way: the job alone writes the expiries down.
    settings = settings_for(tmp_path, hold_sweep_seconds=3600, job_schedule="off")
    async with asgi_client(settings) as client:
        keys = await new_ledger(client)
        soon = datetime.now(UTC) + timedelta(seconds=1)
        for number in range(3):  # on accounts of their own: each expires in the step that finds it
            source = await open_account(client, keys.write, id=f"source-{number}", min_balance=-1000)
            sink = await open_account(client, keys.write, id=f"sink-{number}")
            response = await transfer(
                client, keys.write, source["id"], sink["id"], 10, pending=True, expires_at=soon.isoformat()
            )
            assert response.status_code == 201, response.text
    await asyncio.sleep(1.2)  # the holds come due (reads already see them expired)
    database = open_database(settings, None)
    await database.start()
    try:
        job = ExpireHolds(batch=2)
        later = datetime.now(UTC) + timedelta(minutes=2)  # a period that ends after the expiry
        period = job.period(None, later)
        expired = await run_batch_job(database, job, period, owner="a:1:a", lease=LEASE, progress=None)
        next_period = job.period(None, later + timedelta(minutes=1))
        nothing = await run_batch_job(database, job, next_period, owner="b:2:b", lease=LEASE, progress=None)
    finally:
        await database.stop()

    assert (expired.status, expired.result, expired.steps) == (OutcomeStatus.FINISHED, {"expired": 3}, 2)
    assert (nothing.status, nothing.result) == (OutcomeStatus.FINISHED, {"expired": 0})
    events = BACKENDS.rows(tmp_path, "SELECT count(*) FROM events WHERE type = ?", ("transfer.expired",))
    assert events[0][0] == 3
    statuses = BACKENDS.rows(tmp_path, "SELECT status FROM transfers")
    assert sorted(row[0] for row in statuses) == ["expired"] * 3
