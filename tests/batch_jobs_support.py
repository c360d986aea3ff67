"""Running ``tally jobs run`` as a real process, and killing it with SIGKILL mid-run (ADR 0032).

``kill_mid_run`` starts the command, watches ``job_runs.done`` in the SQLite file until some steps
have committed, and kills the process at once; the caller then runs the command again and compares
with an uninterrupted run on a copy of the same file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WAIT_SECONDS = 60.0  # a bound, only reached when something is wrong


@dataclass(frozen=True, slots=True)
class Killed:
    done: int  # job_runs.done when the process was killed (the last step it committed)
    total: int | None
    finished: bool  # the run finished before the kill landed: the test proved nothing


def tally_env(database_file: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``tally`` process on ``database_file``: no ``TALLY_*`` of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update({"TALLY_DATABASE_URL": f"sqlite:///{database_file}", "TALLY_LOG_FORMAT": "json"})
    env.update({f"TALLY_{name.upper()}": value for name, value in settings.items()})
    return env


def jobs_command(job: str, period: str) -> list[str]:
    return [str(Path(sys.executable).parent / "tally"), "jobs", "run", job, "--period", period]


def run_job(database_file: Path, job: str, period: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``tally jobs run JOB --period PERIOD`` to its end."""
    return subprocess.run(
        jobs_command(job, period),
        env=tally_env(database_file, **settings),
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )


def run_row(database_file: Path, job: str, period: str) -> tuple[str, int, int | None] | None:
    """``(status, done, total)`` of the run, read beside the running process (WAL: no waiting)."""
    with sqlite3.connect(database_file, timeout=5) as conn:
        row = conn.execute(
            "SELECT status, done, total FROM job_runs WHERE job = ? AND period = ?", (job, period)
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def kill_mid_run(database_file: Path, job: str, period: str, **settings: str) -> Killed:
    """Start the job, SIGKILL it as soon as at least one step has committed, and say where it was."""
    process = subprocess.Popen(
        jobs_command(job, period),
        env=tally_env(database_file, **settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            row = run_row(database_file, job, period) if database_file.exists() else None
            if row is not None and (row[1] > 0 or row[0] == "finished"):
                process.send_signal(signal.SIGKILL)
                break
            if process.poll() is not None:
                break
            time.sleep(0.002)
        else:
            raise AssertionError(f"{job} {period} committed no step within {WAIT_SECONDS} s")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT_SECONDS)
    row = run_row(database_file, job, period)
    assert row is not None, f"{job} {period} was never claimed"
    return Killed(done=row[1], total=row[2], finished=row[0] == "finished")
