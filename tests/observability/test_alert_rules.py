"""The alert rules and the Grafana dashboard: valid, tested, and about metrics Tally has.

Invariants, in plain words:
- ``deploy/prometheus/alerts.yml`` passes ``promtool check rules``, and its unit tests
  (``alerts.test.yml``: cases that fire and cases that stay quiet, on synthetic series) pass
  ``promtool test rules``;
- every alert has a runbook section in ``docs/operations.md``, and its unit tests exercise it;
- every metric named in the rules and in ``deploy/grafana/tally.json`` is one Tally exports;
- the Grafana dashboard is valid JSON with a PromQL query in every panel.

promtool comes from Debian's ``prometheus`` package (``scripts/system-packages.sh``). Without it
the promtool tests are skipped on a developer machine, and fail in CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.observability.scrape import exported_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
GRAFANA = ROOT / "deploy" / "grafana" / "tally.json"
OPERATIONS = ROOT / "docs" / "operations.md"
_METRIC = re.compile(r"\b(tally_[a-z0-9_]+)\b")
_ALERT = re.compile(r"^\s*- alert: (\w+)\s*$", re.MULTILINE)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "promtool is missing: scripts/system-packages.sh installs Debian's prometheus package"
            )
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def known_metrics() -> set[str]:
    return exported_names()


def test_the_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_runbook_and_unit_tests_that_fire_it_and_keep_it_quiet() -> None:
    alerts = _ALERT.findall(RULES.read_text())
    assert len(alerts) >= 6
    runbook = OPERATIONS.read_text().lower()
    tests = RULE_TESTS.read_text()
    for alert in alerts:
        assert f"### {alert.lower()}" in runbook, f"docs/operations.md has no section for {alert}"
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", tests)
        assert "" in cases, f"no case where {alert} fires"
        assert " []" in cases, f"no case where {alert} stays quiet"


def test_the_rules_name_only_metrics_tally_exports() -> None:
    names = set(_METRIC.findall(RULES.read_text()))
    assert names - known_metrics() == set()


def test_the_grafana_dashboard_is_valid_and_queries_only_metrics_tally_exports() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["title"] == "Tally"
    panels = dashboard["panels"]
    assert len(panels) >= 10
    expressions = [target["expr"] for panel in panels for target in panel["targets"]]
    assert all(panel["targets"] for panel in panels)
    names = {name for expr in expressions for name in _METRIC.findall(expr)}
    assert names - known_metrics() == set()
    exported = {name for name in exported_names() if not name.endswith(("_count", "_sum"))}
    unused = {name.removesuffix("_bucket") for name in exported} - {
        name.removesuffix("_bucket").removesuffix("_count") for name in names
    }
    assert unused == set(), "every metric Tally exports should have a panel"
    assert len({panel["id"] for panel in panels}) == len(panels)
