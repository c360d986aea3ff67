"""The scheduler in every worker process runs each due (job, period) once between them (ADR 0032).

Two worker processes' worth of Tally (``start(api=False)``, as ``tally worker`` does) share one
database and look for due periods every 50 ms. Each scheduled job's due period gets one run,
claimed once — no second claim, no takeover — and a job left out of ``TALLY_JOB_SCHEDULE`` gets
none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tally.bootstrap import Tally
from tally.config import Settings
from tally.jobs.schedule import EVERY_MINUTE, HOURLY
from tally.services.job_run_ports import JobRun, RunStatus
from tests.support import BACKENDS, settings_for

SCHEDULED = {"expire-holds": EVERY_MINUTE, "purge-idempotency-keys": HOURLY}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with BACKENDS.using(request.param) as name:
        yield name


async def finished_runs(tally: Tally) -> dict[str, JobRun]:
    found = {}
    async with tally.database.read() as tx:
        for name in (*SCHEDULED, "statements"):
            for run in await tx.job_runs.recent(name, 5):
                found[f"{name} {run.period}"] = run
    return found


async def test_two_workers_run_each_due_period_of_each_job_once(tmp_path: Path, backend: str) -> None:
    settings = settings_for(
        tmp_path,
        replica_urls=[],  # the runs are read back at once
        job_schedule=list(SCHEDULED),
        job_schedule_seconds=0.05,
        hold_sweep_seconds=3600.0,
        cache_invalidation="off",
    )
    workers = [Tally(settings, announce_root_key=False) for _ in range(2)]
    for worker in workers:
        await worker.start(api=False)
    try:
        deadline = time.monotonic() + 20
        while True:
            runs = await finished_runs(workers[0])
            if len(runs) >= len(SCHEDULED) and all(r.status is RunStatus.FINISHED for r in runs.values()):
                break
            assert time.monotonic() < deadline, f"the scheduled runs did not finish: {runs}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # several more looks by both: none may claim a finished period again
    finally:
        for worker in workers:
            await worker.stop()

    runs = await _reopened(settings)
    now = datetime.now(UTC)
    for name, schedule in SCHEDULED.items():
        mine = {key: run for key, run in runs.items() if run.job == name}
        assert mine, f"{name} never ran"
        for run in mine.values():
            assert run.status is RunStatus.FINISHED
            assert run.attempts == 1, f"{run.job} {run.period} was claimed {run.attempts} times"
            _, end = schedule.bounds(run.period)
            assert end <= now  # only periods that had ended
    assert not any(run.job == "statements" for run in runs.values())  # not in TALLY_JOB_SCHEDULE


async def _reopened(settings: Settings) -> dict[str, JobRun]:
    """The runs as a fresh process reads them."""
    tally = Tally(settings, announce_root_key=False)
    await tally.database.start()
    try:
        return await finished_runs(tally)
    finally:
        await tally.database.stop()
