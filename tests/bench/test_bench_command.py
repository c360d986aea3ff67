"""``tally bench`` end to end, on SQLite with tiny settings: a real `tally serve`, every scenario.

Invariants, in plain words:
- the command exits 0 and writes results.json and latency.html to ``--out``, and the server's log;
- results.json has every scenario (single in both loops), each with statuses, answers (achieved
  rate above 0), no 5xx and no transport error, and the SQLite ceilings with the ratios read
  against them;
- each measurement of the load generator has a timeline whose slices count every request it counted;
- the page draws a line per measurement and ceiling by percentile, and a line per measurement of
  the load generator over the run;
- the work directory with the databases is gone afterwards.

No figure is asserted: speed lives in the benchmark, not in the suite.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tally.cli import main

pytestmark = pytest.mark.server


def test_tally_bench_on_sqlite_measures_every_scenario_with_no_server_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    options = ["--database", "sqlite", "--seconds", "1", "--warmup", "0.2", "--accounts", "300"]
    options += ["--clients", "2", "--hot-clients", "4", "--batch-size", "100", "--rate", "50"]
    options += ["--out", str(out)]

    status = main(["bench", *options])

    printed = capsys.readouterr()
    assert status == 0, printed.out + printed.err
    assert sorted(path.name for path in out.iterdir()) == [
        "latency.html",
        "results.json",
        "server-sqlite.log",
    ]
    document = orjson.loads((out / "results.json").read_bytes())
    assert document["failed"] is False
    ran = [(row["scenario"], row["mode"]) for row in document["measurements"]]
    assert ran == [
        ("single", "closed"),
        ("single", "open"),
        ("hot", "closed"),
        ("batch", "closed"),
        ("reads", "closed"),
        ("mix", "closed"),
    ]
    for row in document["measurements"]:
        assert row["database"] == "sqlite"
        assert row["statuses"], row["scenario"]
        assert row["achieved_rate"] > 0, row
        assert not [s for s in row["statuses"] if s.startswith(("5", "error "))], row["statuses"]
        slices = row["timeline"]["slices"]
        assert sum(point["requests"] for point in slices) == row["requests"], row["scenario"]
    assert [ceiling["yardstick"] for ceiling in document["ceilings"]] == ["single", "batch"]
    ratios = {row["scenario"]: row["ratio_to_ceiling"] for row in document["measurements"]}
    assert ratios["single"] > 0
    assert ratios["reads"] is None
    page = (out / "latency.html").read_text()
    by_percentile, over_the_run = page.split("P99 over the run")
    assert by_percentile.count("<polyline") == 8  # six measurements and two ceilings
    assert over_the_run.count("<polyline") == 6  # the six measurements
    assert "single" in printed.out.splitlines()[1]
