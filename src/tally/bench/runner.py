"""One run of ``tally bench``: every database in turn, then ``results.json`` and ``latency.html``.

The SQLite files live in a work directory under ``--out``, so on the disk the user chose, and are
removed at the end; the servers' logs stay. PostgreSQL (a durable primary and a streaming replica)
is started only when asked for, and stopped at the end.
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import orjson

from tally.bench.chart import Line, chart_html
from tally.bench.databases import DatabaseResult, bench_postgresql, bench_sqlite
from tally.bench.options import BenchOptions
from tally.bench.pgbench import PgbenchFailed
from tally.bench.report import NOTES, Report
from tally.bench.results import Measured
from tally.bench.setup import SetupError
from tally.harness.postgres import ClusterError, cluster, find_postgres
from tally.harness.tally_server import TallyServerError

# Why a bench could not run: no PostgreSQL or pgbench, a server that would not start, a setup
# request refused.
BENCH_ERRORS = (ClusterError, PgbenchFailed, TallyServerError, SetupError)


def run_bench(options: BenchOptions, progress: Callable[[str], None]) -> Report:
    """Run every database's ceilings and scenarios; write ``results.json`` and ``latency.html``."""
    if "postgresql" in options.databases:
        find_postgres()  # fail before the SQLite half has run, not after
    _allow_many_connections()
    options.out.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC)
    results: list[DatabaseResult] = []
    work = Path(tempfile.mkdtemp(prefix="work-", dir=options.out))  # the databases, on --out's disk
    try:
        with ExitStack() as stack:
            for database in options.databases:
                if database == "sqlite":
                    results.append(bench_sqlite(options, work, progress))
                else:
                    progress("postgresql: starting a durable primary and a streaming replica")
                    pg = stack.enter_context(cluster(durable=True))
                    results.append(bench_postgresql(options, pg, work, progress))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = Report(options, results, started_at)
    write_outputs(report)
    return report


def write_outputs(report: Report) -> None:
    out = report.options.out
    (out / "results.json").write_bytes(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2))
    lines = [Line(_label(row.measured), row.measured) for row in report.rows]
    lines += [
        Line(f"ceiling {yardstick} · {result.database}", ceiling, ceiling=True)
        for result in report.databases
        for yardstick, ceiling in result.ceilings.items()
    ]
    caption = "\n".join([report.table(), "", *NOTES])
    title = f"tally bench {report.started_at:%Y-%m-%d %H:%M} UTC: latency by percentile"
    (out / "latency.html").write_text(chart_html(lines, title=title, caption=caption))


class Progress:
    """Progress lines on standard error, with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", file=sys.stderr, flush=True)


def _label(measured: Measured) -> str:
    how = f"{measured.intended_rate:g}/s" if measured.mode == "open" else f"{measured.clients} clients"
    return f"{measured.scenario} {measured.mode} {how} · {measured.database}"


def _allow_many_connections() -> None:
    # The open loop may hold up to 10,000 connections; the soft limit on open files is often 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 32_768 if hard == resource.RLIM_INFINITY else min(hard, 32_768)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
