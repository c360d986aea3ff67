"""``tally queue status`` and ``tally queue redrive`` against a real database (ADR 0023)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from tally.bootstrap import open_database
from tally.services.queue_ports import JobStatus, NewJob
from tests.support import BACKENDS, settings_for


def _tally(directory: Path, *args: str) -> str:
    url, _ = BACKENDS.urls(directory)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}, "TALLY_DATABASE_URL": url}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tally"), *args],
        env=env,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_queue_commands_show_depths_and_redrive_dead_jobs(backend: str, tmp_path: Path) -> None:
    database = open_database(settings_for(tmp_path), None)
    await database.start()
    try:
        async with database.write() as tx:
            now = await tx.now()
            for n in range(3):
                await tx.jobs.add(NewJob("cli-test", {"n": n}, max_attempts=1), now)
        async with database.write() as tx:
            now = await tx.now()
            claimed = await tx.jobs.claim("cli-test", "test", 2, now, timedelta(seconds=30))
            for job in claimed:
                assert await tx.jobs.bury(job, "failed for the test", now)
    finally:
        await database.stop()

    status = _tally(tmp_path, "queue", "status").splitlines()
    assert any(line.split()[:3] == ["cli-test", "dead", "2"] for line in status), status
    assert any(line.split()[:3] == ["cli-test", "ready", "1"] for line in status), status
    assert "2 dead job(s) of cli-test are ready again" in _tally(tmp_path, "queue", "redrive", "cli-test")
    assert "0 dead job(s)" in _tally(tmp_path, "queue", "redrive", "cli-test")

    database = open_database(settings_for(tmp_path), None)
    await database.start()
    try:
        async with database.read() as tx:
            revived = [await tx.jobs.get(job.pk) for job in claimed]
    finally:
        await database.stop()
    assert [(job.status, job.attempts) for job in revived if job] == [(JobStatus.READY, 0)] * 2
