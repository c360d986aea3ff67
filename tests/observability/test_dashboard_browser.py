"""The live dashboard in a real browser: headless Chromium against a real ``tally serve``.

Invariants, in plain words:
- opened with ``?token=``, the page authenticates its polls with the ops token and takes the token
  out of the address bar;
- while traffic flows, the charts draw lines from live data, the route table lists the routes
  that were called (by template), and the statement, transfer and rejection tables fill in;
- the page loads nothing but its own script and style, and logs no error (a Content-Security-
  Policy violation would be one).

A screenshot is saved as ``test-output/dashboard.png`` (git-ignored), for a person to look at.
Chromium and chromedriver come from Debian (``scripts/system-packages.sh``); without them the test
is skipped on a developer machine and fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support import ROOT, Server, bearer, idem, start_server

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "test-output" / "dashboard.png"
OPS_TOKEN = f"ops-{uuid.uuid4().hex}"


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium or chromedriver is missing: scripts/system-packages.sh installs them")
        pytest.skip("headless Chromium is not installed (Debian packages chromium, chromium-driver)")
    return browser, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    browser_path, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def ops_server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path, {"TALLY_OPS_TOKEN": OPS_TOKEN})
    try:
        yield running
    finally:
        running.stop()


class Traffic:
    """A ledger with two accounts, and bursts of transfers, reads, rejections and unknown routes."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        ledger = client.post("/v1/ledgers", json={"name": "dashboard"}, headers=ROOT).json()["id"]
        key = client.post(f"/v1/ledgers/{ledger}/keys", json={"name": "w", "scopes": ["write"]}, headers=ROOT)
        self.write = bearer(key.json()["key"])
        client.post(
            "/v1/accounts",
            json={"id": "world", "currency": "USD", "normal_balance": "debit", "min_balance": None},
            headers=self.write,
        )
        client.post("/v1/accounts", json={"id": "alice", "currency": "USD"}, headers=self.write)

    def burst(self) -> None:
        for amount in (100, 250, 10**12):  # the last one is refused: insufficient funds
            body = {"debit_account_id": "alice" if amount > 10**6 else "world", "credit_account_id": "alice"}
            if amount > 10**6:
                body["credit_account_id"] = "world"
            self.client.post(
                "/v1/transfers", json={**body, "amount": amount}, headers={**self.write, **idem()}
            )
        self.client.get("/v1/accounts/alice", headers=self.write)
        self.client.get("/v1/accounts/nobody", headers=self.write)
        self.client.get("/v1/nowhere")


_STATE = """
const points = (selector) => Number((document.querySelector(selector) || {dataset: {}}).dataset.points || 0);
const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr:not(.empty)`)].map((tr) => tr.innerText);
return {
  status: document.getElementById("status").dataset.state,
  rate: points('#chart-rate path[data-series="req/s"]'),
  errors: points('#chart-errors path.series'),
  p99: points('#chart-latency path[data-series="P99"]'),
  routes: rows("routes"),
  statements: rows("statements"),
  transfers: rows("transfers"),
  rejections: rows("rejections"),
  pools: rows("pools"),
  href: window.location.href,
};
"""


def _ready(state: dict[str, Any]) -> bool:
    return (
        state["status"] == "live"
        and state["rate"] >= 2
        and state["p99"] >= 2
        and any("/v1/transfers" in row for row in state["routes"])
        and len(state["statements"]) >= 3
        and any("created" in row for row in state["transfers"])
        and any("insufficient_funds" in row for row in state["rejections"])
    )


def test_the_dashboard_shows_live_traffic_in_a_real_browser(browser: Any, ops_server: Server) -> None:
    browser.get(f"{ops_server.base_url}/dashboard?token={OPS_TOKEN}")
    with httpx.Client(base_url=ops_server.base_url, timeout=10) as client:
        traffic = Traffic(client)
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            traffic.burst()
            state = browser.execute_script(_STATE)
            if _ready(state):
                break
            time.sleep(0.3)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    assert _ready(state), state
    assert OPS_TOKEN not in state["href"]
    assert all("{" not in row or "}" in row for row in state["routes"])  # templates, whole
    assert not any("alice" in row or "nobody" in row for row in state["routes"])
    assert [row for row in state["pools"] if row.startswith(("writer", "reader"))]
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_the_dashboard_without_the_token_says_so_and_shows_no_data(browser: Any, ops_server: Server) -> None:
    browser.get(f"{ops_server.base_url}/dashboard")
    # The page itself is refused: a problem document, not the dashboard.
    assert "unauthenticated" in browser.page_source
    assert "chart-rate" not in browser.page_source
