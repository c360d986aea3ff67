"""The bench's outputs: the table, results.json, the chart, and the options they come from.

Invariants, in plain words:
- each transfer figure is read against its database's ceiling: single, hot and mix against the
  single ceiling, batch against the batch ceiling; reads and a missing ceiling have no ratio;
- errors are listed by code; a run fails on a 5xx or a transport error, not on a 4xx or a refusal;
- results.json holds the machine, the settings, every ceiling and every measurement, with its
  histogram; the chart is one self-contained page with one line per measurement that has samples,
  its x axis marked by percentile up to the tail its samples resolve;
- the timeline shows every slice from the first to the last, a slice with no request included,
  each with its requests, its failures and the latencies of its answers; the chart draws it for
  the measurements that have one;
- options out of range are refused before anything runs.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tally.bench.chart import Line, chart_html, curve
from tally.bench.databases import DatabaseResult
from tally.bench.loops import Measurement
from tally.bench.options import BenchOptions
from tally.bench.report import Report, errors_by_code
from tally.bench.results import Measured, Timeline, record
from tally.cli import main


def measured(
    scenario: str, statuses: dict[str, int], *, seconds: float = 1.0, units: int = 1, mode: str = "closed"
) -> Measured:
    """A measurement whose answered requests took 1, 2, 3, ... ms."""
    result = Measured(scenario, "sqlite", mode, 4, seconds, units_per_request=units)
    result.statuses = Counter(statuses)
    for number in range(sum(statuses.values())):
        record(result.histogram, (number + 1) / 1000)
    return result


def report(out: Path, *extra: Measurement) -> Report:
    ceilings = {
        "single": measured("ceiling-single", {"201": 1000}),
        "batch": measured("ceiling-batch", {"201": 4}, units=1000),
    }
    measurements = [
        Measurement(measured("single", {"201": 500}), transfers=500),
        Measurement(measured("batch", {"200": 2}, units=1000), transfers=2000),
        Measurement(measured("reads", {"200": 800}), transfers=0),
        Measurement(measured("mix", {"200": 400, "201": 100}), transfers=100),
        *extra,
    ]
    result = DatabaseResult("sqlite", "3.40.1", out / "server.log", measurements, ceilings)
    return Report(BenchOptions(out=out), [result], datetime(2026, 1, 2, 3, 4, tzinfo=UTC))


def test_each_transfer_figure_is_a_ratio_of_its_databases_ceiling(tmp_path: Path) -> None:
    rows = {row.measured.scenario: row for row in report(tmp_path).rows}
    assert rows["single"].ratio == pytest.approx(0.5)
    assert rows["batch"].ratio == pytest.approx(0.5)  # 2,000 transfers/s of a 4,000 ceiling
    assert rows["mix"].ratio == pytest.approx(0.1)  # its transfers only, not its reads
    assert rows["reads"].ratio is None


def test_without_a_ceiling_there_is_no_ratio(tmp_path: Path) -> None:
    bench = report(tmp_path)
    bench.databases[0].ceilings.clear()
    assert all(row.ratio is None for row in bench.rows)
    assert "ceiling" not in bench.table().split("\n", 1)[1]


def test_the_table_has_a_line_per_measurement_and_per_ceiling(tmp_path: Path) -> None:
    lines = report(tmp_path).table().splitlines()
    assert lines[0].split()[:4] == ["scenario", "database", "mode", "clients"]
    assert [line.split()[0] for line in lines[1:]] == [
        "single",
        "batch",
        "reads",
        "mix",
        "ceiling",
        "ceiling",
    ]
    single = lines[1].split()
    assert single[5:8] == ["500", "500", "50%"]  # achieved/s, transfers/s, of ceiling


def test_errors_are_listed_by_code() -> None:
    statuses = {"201": 5, "409 insufficient_funds": 2, "error ConnectionClosed": 1}
    assert errors_by_code(measured("single", statuses)) == (
        "409 insufficient_funds: 2, error ConnectionClosed: 1"
    )
    assert errors_by_code(measured("single", {"201": 3})) == "-"
    assert errors_by_code(measured("batch", {})) == "no request in the window"


@pytest.mark.parametrize(
    ("status", "failed"),
    [("503 unavailable", True), ("504", True), ("error ConnectionResetError", True),
     ("409 insufficient_funds", False), ("refused in_flight_cap", False)],
)  # fmt: skip
def test_a_run_fails_on_a_5xx_or_a_transport_error_only(tmp_path: Path, status: str, failed: bool) -> None:
    extra = Measurement(measured("hot", {"201": 10, status: 1}), transfers=11)
    assert report(tmp_path, extra).failed is failed


def test_results_json_holds_the_machine_settings_ceilings_and_measurements(tmp_path: Path) -> None:
    document = orjson.loads(orjson.dumps(report(tmp_path).as_json()))
    assert document["machine"]["cpu_count"] >= 1
    assert document["machine"]["sqlite_version"] == "3.40.1"
    assert document["settings"]["accounts"] == 10_000
    assert document["settings"]["server_env"]["TALLY_RATE_LIMIT"] == "off"
    assert document["settings"]["server_env"]["TALLY_JOB_SCHEDULE_SECONDS"] == "1"  # jobs due at start
    assert [ceiling["yardstick"] for ceiling in document["ceilings"]] == ["single", "batch"]
    single = document["measurements"][0]
    assert single["scenario"] == "single"
    assert single["statuses"] == {"201": 500}
    assert single["ratio_to_ceiling"] == 0.5
    assert single["latency_ms"]["p50"] == pytest.approx(250, rel=0.01)
    assert single["histogram"]  # HdrHistogram's compressed form, to redraw or merge later
    assert document["failed"] is False


def test_a_curve_runs_from_the_median_side_to_the_maximum_without_going_down() -> None:
    points = curve(measured("single", {"201": 1000}))
    assert points[0][0] == 0
    decades, slowest = points[-1]
    assert decades == pytest.approx(3.0)  # log10(1000 samples)
    assert slowest == pytest.approx(1000, rel=0.01)  # the maximum, 1000 ms
    latencies = [ms for _, ms in points]
    assert latencies == sorted(latencies)


def test_the_chart_is_one_page_with_a_line_per_measurement_with_samples() -> None:
    lines = [
        Line("single <closed>", measured("single", {"201": 20_000})),
        Line("reads", measured("reads", {"200": 50})),
        Line("empty", measured("hot", {})),
        Line("ceiling single", measured("ceiling-single", {"201": 100}), ceiling=True),
    ]
    page = chart_html(lines, title="bench", caption="a & b")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<polyline") == 3
    assert "single &lt;closed&gt;" in page
    assert "empty" not in page
    assert "a &amp; b" in page
    assert ">99.99%<" in page  # 20,000 samples resolve the 99.99th percentile
    assert "<script" not in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_timeline_lists_every_slice_with_its_requests_failures_and_latencies() -> None:
    timeline = Timeline(slice_seconds=0.5)
    timeline.add(0.1, 0.005, failed=False)
    timeline.add(0.2, None, failed=True)  # no answer: counted, not timed
    timeline.add(0.3, 0.009, failed=True)  # an answer that is not a 2xx
    timeline.add(1.6, 0.040, failed=False)
    slices = timeline.as_json()
    assert [point["at_s"] for point in slices] == [0.0, 0.5, 1.0, 1.5]
    assert [point["requests"] for point in slices] == [3, 0, 0, 1]
    assert [point["errors"] for point in slices] == [2, 0, 0, 0]
    assert (slices[0]["p50_ms"], slices[0]["max_ms"]) == (5.0, 9.0)  # nearest rank: of two, the lower
    assert slices[1]["p99_ms"] is None  # nothing sent then: a stall of the sender shows as a gap
    assert slices[3]["p99_ms"] == 40.0


def test_the_chart_draws_the_p99_over_the_run_for_measurements_with_a_timeline() -> None:
    over_time = measured("single", {"201": 3}, mode="open")
    for at, latency in ((0.1, 0.004), (0.6, 0.300), (1.1, 0.005)):
        over_time.timeline.add(at, latency, failed=False)
    lines = [Line("open", over_time), Line("ceiling", measured("ceiling-single", {"201": 9}), ceiling=True)]
    page = chart_html(lines, title="bench")
    by_percentile, over_the_run = page.split("P99 over the run")
    assert by_percentile.count("<polyline") == 2
    assert over_the_run.count("<polyline") == 1  # the ceiling has no timeline
    points = over_the_run.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 3
    assert float(points[1].split(",")[1]) < float(points[0].split(",")[1])  # 300 ms sits higher


@pytest.mark.parametrize(
    "options",
    [
        {"scenarios": ("single", "nope")},
        {"databases": ("mysql",)},
        {"seconds": 0},
        {"rate": -1},
        {"clients": 0},
        {"hot_accounts": 1},
        {"accounts": 5, "hot_accounts": 10},
        {"batch_size": 1001},
        {"settings": (("PATH", "/usr/bin"),)},
    ],
)
def test_options_out_of_range_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each option says what is wrong in its own words
        BenchOptions(out=Path(), **options)  # type: ignore[arg-type]


def test_the_command_line_refuses_a_bad_option_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--database", "sqlite", "--hot-accounts", "1", "--out", str(tmp_path / "x")]) == 2
    assert "hot accounts" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["bench", "--scenario", "nope"])
    for setting in ("TALLY_SQLITE_GROUP_COMMIT", "HOME=/"):
        assert main(["bench", "--set", setting, "--out", str(tmp_path / "x")]) == 2
        assert "--set takes" in capsys.readouterr().err
