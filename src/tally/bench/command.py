"""``tally bench``: measure Tally against its database's own ceiling, in one run.

Writes ``results.json`` and ``latency.html`` to ``--out`` (and each server's log), prints the
table. Exit status: 0; 1 when a request got a 5xx answer or a transport error, or the bench could
not run (no PostgreSQL or pgbench, a server that would not start, a setup request refused);
2 bad options.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tally.bench.options import SCENARIOS, BenchOptions

EXIT_FAILED = 1
EXIT_USAGE = 2


def add_bench_command(commands: Any) -> None:
    """Add ``bench`` to the ``tally`` parser's subparsers."""
    defaults = BenchOptions(out=Path())
    bench = commands.add_parser(
        "bench", help="load-test a real tally serve on SQLite and PostgreSQL, next to their ceilings"
    )
    bench.add_argument(
        "--database", choices=["sqlite", "postgresql", "both"], default="both", help="default: both"
    )
    bench.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="repeat to choose several (default: all)",
    )
    number = {"type": float, "metavar": "SECONDS"}
    bench.add_argument("--seconds", **number, default=defaults.seconds, help="per measurement (%(default)s)")
    bench.add_argument(
        "--warmup", **number, default=defaults.warmup, help="before each measurement (%(default)s)"
    )
    bench.add_argument(
        "--accounts", type=int, default=defaults.accounts, help="accounts opened (%(default)s)"
    )
    bench.add_argument(
        "--hot-accounts", type=int, default=defaults.hot_accounts, help="accounts of `hot` (%(default)s)"
    )
    bench.add_argument(
        "--clients", type=int, default=defaults.clients, help="closed-loop clients (%(default)s)"
    )
    bench.add_argument(
        "--hot-clients",
        type=int,
        default=defaults.hot_clients,
        help="closed-loop clients of `hot` (%(default)s)",
    )
    bench.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="transfers per `batch` request (%(default)s)",
    )
    bench.add_argument(
        "--rate", type=float, default=defaults.rate, help="open-loop requests/s of `single` (%(default)s)"
    )
    bench.add_argument(
        "--workers", type=int, default=defaults.workers, help="tally serve workers (%(default)s)"
    )
    bench.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TALLY_NAME=VALUE",
        help="a setting for the servers measured, e.g. TALLY_SQLITE_GROUP_COMMIT=1 (repeatable)",
    )
    bench.add_argument("--out", type=Path, help="output directory (./bench-results/<timestamp>)")


def run_bench_command(args: argparse.Namespace) -> int:
    out = args.out or Path("bench-results") / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    try:
        options = BenchOptions(
            out=out,
            databases=("sqlite", "postgresql") if args.database == "both" else (args.database,),
            scenarios=tuple(dict.fromkeys(args.scenario)) if args.scenario else SCENARIOS,
            seconds=args.seconds,
            warmup=args.warmup,
            accounts=args.accounts,
            hot_accounts=args.hot_accounts,
            clients=args.clients,
            hot_clients=args.hot_clients,
            batch_size=args.batch_size,
            rate=args.rate,
            workers=args.workers,
            settings=tuple(_setting(text) for text in args.set),
        )
    except ValueError as error:
        print(f"tally bench: {error}", file=sys.stderr)
        return EXIT_USAGE
    # psycopg and the rest load only when the bench runs: ~0.3 s more on every `tally serve` otherwise.
    from tally.bench.runner import BENCH_ERRORS, Progress, run_bench  # noqa: PLC0415

    try:
        report = run_bench(options, Progress())
    except BENCH_ERRORS as error:
        print(f"tally bench: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(report.table())
    print(f"\n{options.out / 'results.json'}\n{options.out / 'latency.html'}")
    return EXIT_FAILED if report.failed else 0


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals:
        raise ValueError(f"--set takes NAME=VALUE, not {text!r}")
    return name, value
