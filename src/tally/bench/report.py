"""The bench's report: a table for the terminal and ``results.json`` for machines.

Each Tally figure is read against its database's ceiling from the same run (``ceilings``):
transfers per second over the ceiling's. A run fails (``Report.failed``) when any request got a
5xx answer or a transport error; 4xx answers and refusals are shown but are the workload's to
explain.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tally
from tally.bench.ceilings import YARDSTICKS
from tally.bench.databases import SERVER_ENV, DatabaseResult
from tally.bench.loops import Measurement
from tally.bench.options import BenchOptions
from tally.bench.results import PERCENTILES, Measured

NOTES = (
    "Server: TALLY_LOG_LEVEL=WARNING and TALLY_RATE_LIMIT=off, everything else default: this measures "
    "the service, not the volume of its access log; one key drives all the load. "
    "TALLY_JOB_SCHEDULE_SECONDS=1: the server runs its scheduled jobs' due periods at its start, as "
    "one up for a day has; the window of a daily job is measured apart (docs/performance.md).",
    "The load generator runs on the same machine as the server and shares its CPUs.",
    "Open loop: latency from each request's intended send time (no coordinated omission); its "
    "clients are the connections it took, the most requests in flight at once.",
    "achieved/s counts answers over the time from the window's start to the last answer.",
    "P99.9 is shown only with at least 10,000 samples.",
    "Timeline (results.json, and the second chart of latency.html): each measurement's requests by "
    "the half second they were (meant to be) sent in, with their failures and P50/P99/max.",
)


@dataclass(frozen=True)
class Row:
    """One measurement with its yardstick: the ceiling it is read against, if any."""

    measurement: Measurement
    ceiling: Measured | None

    @property
    def measured(self) -> Measured:
        return self.measurement.measured

    @property
    def ratio(self) -> float | None:
        if self.ceiling is None or self.ceiling.units_per_second <= 0:
            return None
        return self.measurement.transfers_per_second / self.ceiling.units_per_second

    def failed(self) -> bool:
        return any(_is_failure(status) for status in self.measured.statuses)


@dataclass
class Report:
    options: BenchOptions
    databases: list[DatabaseResult]
    started_at: datetime

    @property
    def rows(self) -> list[Row]:
        found = []
        for result in self.databases:
            for measurement in result.measurements:
                yardstick = YARDSTICKS.get(measurement.measured.scenario)
                ceiling = None if yardstick is None else result.ceilings.get(yardstick)
                found.append(Row(measurement, ceiling))
        return found

    @property
    def failed(self) -> bool:
        return any(row.failed() for row in self.rows)

    def as_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine(self.databases),
            "settings": {**self.options.as_json(), "server_env": SERVER_ENV},
            "notes": list(NOTES),
            "failed": self.failed,
            "ceilings": [
                {**ceiling.as_json(), "yardstick": yardstick}
                for result in self.databases
                for yardstick, ceiling in result.ceilings.items()
            ],
            "measurements": [
                {
                    **row.measured.as_json(),
                    "transfers_per_second": round(row.measurement.transfers_per_second, 1),
                    "ceiling_units_per_second": None
                    if row.ceiling is None
                    else round(row.ceiling.units_per_second, 1),
                    "ratio_to_ceiling": None if row.ratio is None else round(row.ratio, 3),
                }
                for row in self.rows
            ],
        }

    def table(self) -> str:
        """The terminal table: one line per measurement, then one per ceiling."""
        header = ["scenario", "database", "mode", "clients", "intended/s", "achieved/s", "transfers/s"]
        header += ["of ceiling", *(f"P{p:g} ms" for p in PERCENTILES), "max ms", "errors"]
        lines = [_cells(row) for row in self.rows]
        for result in self.databases:
            for yardstick, ceiling in result.ceilings.items():
                lines.append(_ceiling_cells(yardstick, ceiling))
        return _align([header, *lines])


def machine(databases: Sequence[DatabaseResult]) -> dict[str, Any]:
    """Where the run happened: CPUs, platform, Python, database versions, the code's git commit."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        **{f"{result.database}_version": result.version for result in databases},
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The commit of the checkout Tally runs from (``+dirty`` with local changes), if it is one."""
    git = shutil.which("git")
    checkout = Path(tally.__file__).resolve().parents[2]
    if git is None or not (checkout / ".git").exists():
        return None
    head = subprocess.run(  # noqa: S603 - git found on PATH, fixed arguments
        [git, "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return None
    status = subprocess.run(  # noqa: S603
        [git, "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def errors_by_code(measured: Measured) -> str:
    """``"409 insufficient_funds: 3, error ConnectionClosed: 1"``, or ``"-"`` without any."""
    if not measured.statuses:
        return "no request in the window"  # e.g. requests slower than the whole window
    failures = sorted((status, count) for status, count in measured.statuses.items() if status[0] != "2")
    return ", ".join(f"{status}: {count}" for status, count in failures) or "-"


def _is_failure(status: str) -> bool:
    return status.startswith(("5", "error "))


def _cells(row: Row) -> list[str]:
    measured = row.measured
    transfers = row.measurement.transfers_per_second
    ratio = "-" if row.ratio is None else f"{row.ratio:.0%}"
    return [
        measured.scenario,
        measured.database,
        measured.mode,
        str(measured.clients),
        _number(measured.intended_rate),
        _number(measured.achieved_rate),
        _number(transfers) if transfers else "-",
        ratio,
        *_latencies(measured),
        errors_by_code(measured),
    ]


def _ceiling_cells(yardstick: str, ceiling: Measured) -> list[str]:
    return [
        f"ceiling {yardstick}",
        ceiling.database,
        ceiling.mode,
        str(ceiling.clients),
        _number(ceiling.intended_rate),
        _number(ceiling.achieved_rate),
        _number(ceiling.units_per_second),
        "100%",
        *_latencies(ceiling),
        errors_by_code(ceiling),
    ]


def _latencies(measured: Measured) -> list[str]:
    values = [measured.percentile_ms(percentile) for percentile in PERCENTILES]
    return [_millis(value) for value in [*values, measured.max_ms()]]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _millis(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _align(lines: list[list[str]]) -> str:
    """Left-align the first three columns and the last, right-align the numbers between."""
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    last = len(widths) - 1
    out = []
    for line in lines:
        cells = [
            cell.ljust(width) if column < 3 or column == last else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
