"""A batch job killed with SIGKILL mid-run resumes where it stopped and ends as if never killed.

Invariants, in plain words: ``tally jobs run`` killed at an arbitrary instant leaves each step either
committed with its checkpoint or not at all; running the same command again resumes after the last
committed step; the outcome (rows left, the run's result and count) equals an uninterrupted run's on
a copy of the same data, and ``done`` equals the work there was (no step counted twice).
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tally.bootstrap import open_database
from tally.config import Settings
from tally.jobs.idempotency import PurgeIdempotencyKeys
from tally.jobs.runs import OutcomeStatus, new_owner, run_batch_job
from tally.jobs.schedule import HOURLY
from tests.batch_jobs_support import kill_mid_run, run_job, run_row
from tests.support import sqlite_url

JOB = "purge-idempotency-keys"
LEASE = timedelta(seconds=30)
EXPIRED = 20_000
KEPT = 100
BATCH = 100  # 200 steps: enough for the kill to land mid-run


async def make_database(directory: Path) -> tuple[Path, str]:
    """A SQLite file with ``EXPIRED`` records past retention and ``KEPT`` within it; the period to purge."""
    database = open_database(Settings(database_url=sqlite_url(directory), log_format="json"), None)
    await database.start()  # creates the schema
    await database.stop()
    now = datetime.now(UTC)
    micros = int(now.timestamp() * 1_000_000)
    hour = 3_600_000_000
    rows = [
        ("ldg", f"old-{n:06d}", b"", 201, b"{}", micros - 30 * hour, micros - 2 * hour - n)
        for n in range(EXPIRED)
    ]
    rows += [("ldg", f"new-{n:06d}", b"", 201, b"{}", micros, micros + hour) for n in range(KEPT)]
    path = directory / "tally.db"
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    return path, HOURLY.name(HOURLY.start_of(now - timedelta(hours=1)))


async def run_in_process(path: Path, period: str) -> OutcomeStatus:
    database = open_database(Settings(database_url=f"sqlite:///{path}", log_format="json"), None)
    await database.start()
    try:
        job = PurgeIdempotencyKeys(BATCH)
        ran = await run_batch_job(database, job, period, owner=new_owner(), lease=LEASE, progress=None)
    finally:
        await database.stop()
    return ran.status


def outcome(path: Path, period: str) -> tuple[list[str], str, int, int | None, int]:
    """The keys left, and the run's status, result, done and total."""
    with sqlite3.connect(path) as conn:
        keys = [row[0] for row in conn.execute("SELECT key FROM idempotency_keys ORDER BY key")]
        result = conn.execute(
            "SELECT result FROM job_runs WHERE job = ? AND period = ?", (JOB, period)
        ).fetchone()[0]
    conn.close()
    row = run_row(path, JOB, period)
    assert row is not None
    return keys, result, row[1], row[2], len(keys)


async def test_a_purge_killed_mid_run_resumes_and_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    path, period = await make_database(tmp_path)
    reference = tmp_path / "reference"
    reference.mkdir()
    shutil.copy(path, reference / "tally.db")
    uninterrupted = await run_in_process(reference / "tally.db", period)  # the same job, never killed
    assert uninterrupted is OutcomeStatus.FINISHED

    killed = kill_mid_run(path, JOB, period, job_batch_size=str(BATCH))
    assert not killed.finished, "the run finished before the kill: nothing was shown"
    assert 0 < killed.done < EXPIRED
    resumed = run_job(path, JOB, period, job_batch_size=str(BATCH))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{JOB} {period} finished" in resumed.stdout
    assert await run_in_process(path, period) is OutcomeStatus.ALREADY_FINISHED

    assert outcome(path, period) == outcome(reference / "tally.db", period)
    keys, result, done, total, _ = outcome(path, period)
    assert keys == [f"new-{n:06d}" for n in range(KEPT)]
    assert (result, done, total) == (f'{{"deleted":{EXPIRED}}}', EXPIRED, EXPIRED)
