"""``tally serve | worker | queue | jobs | bench | keygen | openapi``: the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from tally.bench.command import add_bench_command, run_bench_command
from tally.config import Settings
from tally.db_commands import add_db_commands, run_db_command, schema_refusal
from tally.domain.keys import new_secret
from tally.jobs_commands import add_jobs_commands, run_jobs_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tally", description="A double-entry ledger service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (embedded SQLite by default)")
    serve.add_argument("--host", help="listen address (TALLY_HOST)")
    serve.add_argument("--port", type=int, help="listen port (TALLY_PORT)")
    serve.add_argument("--database-url", help="database URL (TALLY_DATABASE_URL)")
    serve.add_argument("--log-format", choices=["json", "console"], help="TALLY_LOG_FORMAT")
    serve.add_argument("--workers", type=int, help="worker processes (TALLY_WORKERS, default 1)")
    worker = commands.add_parser("worker", help="run the job workers only, no HTTP (scale them out)")
    worker.add_argument("--database-url", help="database URL (TALLY_DATABASE_URL)")
    worker.add_argument("--log-format", choices=["json", "console"], help="TALLY_LOG_FORMAT")
    queue = commands.add_parser("queue", help="inspect the job queues, redrive dead jobs")
    queue_commands = queue.add_subparsers(dest="queue_command", required=True)
    queue_commands.add_parser("status", help="jobs per queue and status, and the oldest ready job's age")
    redrive = queue_commands.add_parser("redrive", help="put a queue's dead jobs back to ready")
    redrive.add_argument("queue", help="the queue, e.g. transfer-batches or webhooks")
    redrive.add_argument("--limit", type=int, default=1000, help="at most this many jobs (default 1000)")
    commands.add_parser("keygen", help="print a fresh root key for TALLY_ROOT_KEY")
    commands.add_parser("openapi", help="print the OpenAPI document")
    add_db_commands(commands)
    add_jobs_commands(commands)
    add_bench_command(commands)
    args = parser.parse_args(argv)

    if args.command == "keygen":
        print(new_secret("root"))
        return 0
    if args.command == "openapi":
        from tally.bootstrap import build_app

        app = build_app(Settings(database_url="sqlite://", log_format="json"))
        print(json.dumps(app.openapi(), indent=2, sort_keys=True))
        return 0
    if args.command == "worker":
        return _work(args)
    if args.command == "queue":
        return _queue(args)
    if args.command == "db":
        return run_db_command(args)
    if args.command == "jobs":
        return run_jobs_command(args)
    if args.command == "bench":
        return run_bench_command(args)
    return _serve(args)


def _queue(args: argparse.Namespace) -> int:
    """``tally queue status | redrive QUEUE``, against TALLY_DATABASE_URL (ADR 0023)."""
    import asyncio
    from datetime import UTC, datetime

    from tally.bootstrap import open_database
    from tally.services.worker import queue_depths, redrive_dead

    database = open_database(Settings(), None)

    async def run() -> int:
        await database.start()
        try:
            if args.queue_command == "redrive":
                count = await redrive_dead(database, args.queue, limit=args.limit)
                print(f"{count} dead job(s) of {args.queue} are ready again")
                return 0
            now = datetime.now(UTC)
            print(f"{'queue':<20} {'status':<8} {'jobs':>8} {'oldest ready (s)':>17}")
            for depth in await queue_depths(database):
                oldest = (
                    ""
                    if depth.oldest_run_at is None or depth.status.value != "ready"
                    else (f"{max(0.0, (now - depth.oldest_run_at).total_seconds()):.1f}")
                )
                print(f"{depth.queue:<20} {depth.status.value:<8} {depth.count:>8} {oldest:>17}")
            return 0
        finally:
            await database.stop()

    return asyncio.run(run())


def _work(args: argparse.Namespace) -> int:
    """Run the workers until SIGTERM or SIGINT, then stop them gracefully (ADR 0023)."""
    import asyncio
    import signal

    from tally.bootstrap import Tally

    overrides = {
        name: value
        for name, value in (("database_url", args.database_url), ("log_format", args.log_format))
        if value is not None
    }
    settings = Settings(**overrides)
    if (refusal := schema_refusal(settings.database_url)) is not None:  # one line, not a traceback
        print(f"tally worker: {refusal}", file=sys.stderr)
        return 1
    tally = Tally(settings, announce_root_key=False)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await tally.start(api=False)
        try:
            await stopping.wait()
        finally:
            await tally.stop()

    asyncio.run(run())
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    overrides = {
        name: value
        for name, value in (
            ("host", args.host),
            ("port", args.port),
            ("database_url", args.database_url),
            ("log_format", args.log_format),
            ("workers", args.workers),
        )
        if value is not None
    }
    settings = Settings(**overrides)
    if (refusal := schema_refusal(settings.database_url)) is not None:  # one line, not a traceback
        print(f"tally serve: {refusal}", file=sys.stderr)
        return 1
    from tally.api.connections import ConnectionLimits, http_protocol

    limits = ConnectionLimits(settings.max_header_bytes, settings.header_read_timeout_ms / 1000)
    server: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "log_config": None,  # Tally's logging (observability.logging) formats uvicorn's lines too
        "access_log": False,  # Tally writes its own access line, with the request id
        "server_header": False,
        # httptools, with the header-size and header-time bounds uvicorn lacks (api/connections.py).
        "http": http_protocol(limits),
        "timeout_keep_alive": settings.keep_alive_seconds,
        # Only h11 reads this; set all the same, so that no HTTP implementation runs unbounded.
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
    if settings.workers == 1:
        from tally.bootstrap import build_app

        uvicorn.run(build_app(settings), **server)
        return 0
    return _serve_workers(settings.workers, overrides, server)


def _serve_workers(workers: int, overrides: dict[str, Any], server: dict[str, Any]) -> int:
    """Run ``workers`` processes; their metrics meet in a private directory, removed at exit.

    Each worker builds its app from the environment (``bootstrap.app_from_environment``), so the
    command line's overrides are handed down as ``TALLY_*`` variables. prometheus-client picks its
    multiprocess mode from ``PROMETHEUS_MULTIPROC_DIR`` when a worker imports it; a directory left
    by an earlier run would add that run's counts, hence a fresh one every time.
    """
    import uvicorn

    for name, value in overrides.items():
        os.environ[f"TALLY_{name.upper()}"] = str(value)
    with tempfile.TemporaryDirectory(prefix="tally-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        uvicorn.run("tally.bootstrap:app_from_environment", factory=True, workers=workers, **server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
