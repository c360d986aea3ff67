"""``tally jobs run NAME [--period P] | list``: batch jobs from the command line (ADR 0032).

Exit statuses: 0 done (or nothing to do); 2 the job finished and reported a problem
(``result["ok"] is False``, as reconcile does when it finds differences); 64 a bad name or period;
75 another live runner holds the run (try again later); 130 stopped by SIGINT/SIGTERM, resumable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from tally.config import Settings
from tally.jobs.progress import TerminalProgress
from tally.jobs.registry import JOBS, build_job
from tally.jobs.runs import OutcomeStatus, new_owner, run_batch_job
from tally.observability.logging import configure_logging

EXIT_PROBLEM_FOUND = 2
EXIT_USAGE = 64
EXIT_BUSY = 75  # EX_TEMPFAIL: someone else is doing it; try again later
EXIT_STOPPED = 130
RECENT_RUNS = 3  # runs per job that `tally jobs list` shows


def add_jobs_commands(commands: Any) -> None:
    """Add ``jobs`` and its subcommands to the ``tally`` parser's subparsers."""
    jobs = commands.add_parser("jobs", help="run and inspect batch jobs (statements, reconcile, ...)")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    run = job_commands.add_parser("run", help="run a batch job for a period, resuming an interrupted run")
    run.add_argument("name", help="the job, e.g. statements, reconcile, expire-holds, purge-idempotency-keys")
    run.add_argument("--period", help="the period (default: the latest one due), e.g. 2026-01-31")
    run.add_argument("--database-url", help="database URL (TALLY_DATABASE_URL)")
    listing = job_commands.add_parser("list", help="every job, its schedule and its latest runs")
    listing.add_argument("--database-url", help="database URL (TALLY_DATABASE_URL)")


def run_jobs_command(args: argparse.Namespace) -> int:
    overrides = {} if args.database_url is None else {"database_url": args.database_url}
    settings = Settings(**overrides)
    if args.jobs_command == "list":
        return asyncio.run(_list(settings))
    return asyncio.run(_run(settings, args.name, args.period))


async def _run(settings: Settings, name: str, period_text: str | None) -> int:
    from tally.bootstrap import open_database  # noqa: PLC0415 - the database stack loads only to run

    configure_logging(settings.log_format, settings.log_level)
    try:
        job = build_job(name, settings)
        period = job.period(period_text, datetime.now(UTC))
    except (KeyError, ValueError) as error:
        print(f"tally jobs run: {error.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    database = open_database(settings, None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop after the step in progress, checkpoint kept
        loop.add_signal_handler(sig, stop.set)
    await database.start()
    try:
        outcome = await run_batch_job(
            database,
            job,
            period,
            owner=new_owner(),
            lease=timedelta(milliseconds=settings.job_run_lease_ms),
            progress=TerminalProgress(sys.stderr),
            stop=stop,
        )
    finally:
        await database.stop()
    run = outcome.run
    if outcome.status is OutcomeStatus.BUSY:
        print(
            f"{name} {period} is being run by {run.owner} (lease until {run.lease_until.isoformat()}, "
            f"{_progress(run.done, run.total)}); try again later."
        )
        return EXIT_BUSY
    if outcome.status is OutcomeStatus.STOPPED:
        print(
            f"{name} {period} stopped at {_progress(run.done, run.total)}; its checkpoint is kept. "
            f"Resume with: tally jobs run {name} --period {period}"
        )
        return EXIT_STOPPED
    if outcome.status is OutcomeStatus.ALREADY_FINISHED:
        print(f"{name} {period} already finished: nothing to do. Its result:")
    else:
        print(f"{name} {period} finished: {run.done:,} {job.unit} in {outcome.steps} step(s). Its result:")
    print(json.dumps(run.result, indent=2, sort_keys=True))
    return EXIT_PROBLEM_FOUND if (run.result or {}).get("ok") is False else 0


async def _list(settings: Settings) -> int:
    from tally.bootstrap import open_database  # noqa: PLC0415 - the database stack loads only to list

    database = open_database(settings, None)
    await database.start()
    try:
        async with database.read() as tx:
            runs = {name: await tx.job_runs.recent(name, RECENT_RUNS) for name in sorted(JOBS)}
    finally:
        await database.stop()
    scheduled = set(settings.job_schedule)
    for name, recent in runs.items():
        schedule = build_job(name, settings).schedule
        if schedule is None:
            print(f"{name}: on demand only")
        else:
            where = "scheduled" if name in scheduled else "not scheduled (TALLY_JOB_SCHEDULE)"
            print(f"{name}: {schedule.describe()}, {where}")
        if not recent:
            print("    no runs yet")
        for run in recent:
            when = (
                f"finished {run.finished_at:%Y-%m-%d %H:%M:%S}Z"
                if run.finished_at is not None
                else f"lease until {run.lease_until:%Y-%m-%d %H:%M:%S}Z by {run.owner}"
            )
            print(f"    {run.period:<17} {run.status.value:<9} {_progress(run.done, run.total):<22} {when}")
    return 0


def _progress(done: int, total: int | None) -> str:
    return f"{done:,}/{total:,} done" if total is not None else f"{done:,} done"
