"""``GET /metrics``: what it exposes, its bounded labels, its access rule, and multi-process serving.

Invariants, in plain words:
- request latency is a histogram per method, route template and status class, with a bucket edge
  at the 25 ms objective; requests and 5xx errors are counted;
- no label value ever holds an id, a key, an amount or any other value a client sent: routes are
  templates, statements are shapes, codes come from Tally's own problem table;
- statements are timed per shape and database role, and counted per request;
- business outcomes (transfers created, rejected, replayed; rejections by code) are counted from
  the responses alone;
- connection pools report their size, use and waits;
- with ``TALLY_OPS_TOKEN`` set, ``/metrics`` needs it as a Bearer token; ``/dashboard`` also takes
  ``?token=``; without it both are open; with metrics turned off both are 404;
- ``tally serve --workers 2`` exposes the sum over both workers from whichever one answers, and
  removes its private metrics directory when it stops.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from tally.observability.metrics import REQUEST_BUCKETS
from tests.observability.scrape import Sample, samples, total
from tests.support import (
    ROOT,
    LedgerKeys,
    asgi_client,
    assert_problem,
    bearer,
    funded_account,
    idem,
    new_ledger,
    open_account,
    settings_for,
    start_server,
    transfer,
)

STATEMENT = re.compile(r"^[a-z]+ [a-z0-9_-]+ [0-9a-f]{6}$|^other$")
ROUTE = re.compile(r"^(/[A-Za-z0-9_.{}-]*)+$|^unmatched$")


async def _traffic(client: httpx.AsyncClient, ledger: LedgerKeys) -> set[str]:
    """Successes, rejections, a replay, unknown routes; returns every id and value it sent."""
    account_id = f"acct-{uuid.uuid4().hex[:12]}"
    await funded_account(client, ledger, account_id, 1000)
    await open_account(client, ledger.write, id="shop-7731")
    created = await transfer(client, ledger.write, account_id, "shop-7731", 250)
    assert created.status_code == 201
    refused = await transfer(client, ledger.write, account_id, "shop-7731", 999_999)
    assert_problem(refused, 422, "insufficient_funds")
    body = {"debit_account_id": account_id, "credit_account_id": "shop-7731", "amount": 5}
    headers = {**ledger.write, **idem("metrics-replay")}
    first = await client.post("/v1/transfers", json=body, headers=headers)
    again = await client.post("/v1/transfers", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    await client.get(f"/v1/accounts/{account_id}", headers=ledger.read)
    await client.get("/v1/accounts/no-such-account-4242", headers=ledger.read)
    await client.get("/v1/nowhere/9999", headers=ledger.read)
    await client.get("/v1/accounts", headers=bearer("tally_key_not-a-real-key"))
    return {
        ledger.ledger_id,
        account_id,
        "shop-7731",
        "no-such-account-4242",
        "9999",
        "999999",
        created.json()["id"],
        first.json()["id"],
        "metrics-replay",
        "tally_key_",
    }


async def test_metrics_expose_request_histograms_by_route_template_and_never_an_id(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        sent = await _traffic(client, ledger)
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)

    routes = {s.labels["route"] for s in found if s.name == "tally_http_request_duration_seconds_count"}
    assert {"/v1/transfers", "/v1/accounts/{account_id}", "/v1/accounts", "unmatched"} <= routes
    assert all(ROUTE.fullmatch(route) for route in routes), routes
    edges = {s.labels["le"] for s in found if s.name == "tally_http_request_duration_seconds_bucket"}
    assert "0.025" in edges
    assert len(edges) == len(REQUEST_BUCKETS) + 1
    assert total(found, "tally_http_requests_total", route="/v1/transfers", status_class="2xx") >= 3
    assert total(found, "tally_http_requests_total", route="/v1/transfers", status_class="4xx") == 1
    assert total(found, "tally_http_request_duration_seconds_count", method="GET", status_class="4xx") >= 2

    leaks = [
        (s.name, value)
        for s in found
        for value in s.labels.values()
        if any(secret in value for secret in sent)
    ]
    assert leaks == []


async def test_statements_are_timed_per_shape_and_role_and_counted_per_request(tmp_path: Path) -> None:
    # No feed-following invalidation: a background read could hold a connection at the scrape.
    settings = settings_for(tmp_path, read_pool_size=3, cache_invalidation="off")
    async with asgi_client(settings) as client:
        ledger = await new_ledger(client)
        await _traffic(client, ledger)
        found = samples((await client.get("/metrics")).text)

    timed = [s for s in found if s.name == "tally_db_query_duration_seconds_count"]
    assert {s.labels["role"] for s in timed} == {"writer", "reader"}
    assert all(STATEMENT.fullmatch(s.labels["statement"]) for s in timed), timed
    shapes = {s.labels["statement"].rsplit(" ", 1)[0] for s in timed}
    assert {"select accounts", "update account_balances", "insert transfers", "insert entries"} <= shapes
    per_request = total(found, "tally_db_queries_per_request_count", method="POST", route="/v1/transfers")
    assert per_request >= 3
    assert total(found, "tally_db_queries_per_request_sum", method="POST", route="/v1/transfers") >= 3 * 5

    assert total(found, "tally_db_connections", role="reader") == 3
    assert total(found, "tally_db_connections", role="writer") == 1
    assert total(found, "tally_db_connections_in_use") == 0  # every transaction gave its connection back
    assert total(found, "tally_db_pool_wait_seconds_count", role="writer") >= 4
    assert total(found, "tally_db_pool_wait_seconds_count", role="reader") >= 2


async def test_business_outcomes_are_counted_from_the_responses(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        ledger = await new_ledger(client)
        await _traffic(client, ledger)
        found = samples((await client.get("/metrics")).text)

    assert total(found, "tally_transfers_total", operation="create", outcome="created") == 3
    assert total(found, "tally_transfers_total", operation="create", outcome="rejected") == 1
    assert total(found, "tally_transfers_total", operation="create", outcome="replayed") == 1
    assert total(found, "tally_idempotent_replays_total", route="/v1/transfers") == 1
    assert total(found, "tally_rejections_total", route="/v1/transfers", code="insufficient_funds") == 1
    assert total(found, "tally_rejections_total", route="/v1/accounts/{account_id}", code="not_found") == 1
    assert total(found, "tally_rejections_total", route="unmatched", code="not_found") == 1
    assert total(found, "tally_rejections_total", route="/v1/accounts", code="unauthenticated") == 1
    assert total(found, "tally_http_errors_total") == 0


async def test_a_slow_statement_is_counted_by_shape(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path, slow_query_ms=0)) as client:
        ledger = await new_ledger(client)
        await open_account(client, ledger.write, id="a")
        found = samples((await client.get("/metrics")).text)
    # At 0 ms every statement is slow: each shape timed is counted slow, and no other. (Not the
    # totals: the page is rendered off the loop, while the background loops run statements.)
    slow = {tuple(sorted(s.labels.items())) for s in found if s.name == "tally_db_slow_queries_total"}
    timed = {
        tuple(sorted(s.labels.items()))
        for s in found
        if s.name == "tally_db_query_duration_seconds_count" and s.value > 0
    }
    assert slow == timed
    assert len(timed) > 3


OPS_TOKEN = f"ops-{uuid.uuid4().hex}"


async def test_with_an_ops_token_metrics_and_the_dashboard_need_it(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path, ops_token=OPS_TOKEN)) as client:
        for path in ("/metrics", "/dashboard", "/dashboard/data"):
            assert_problem(await client.get(path), 401, "unauthenticated")
            assert_problem(await client.get(path, headers=bearer(OPS_TOKEN + "x")), 401, "unauthenticated")
            assert_problem(await client.get(path, headers=ROOT), 401, "unauthenticated")
            assert (await client.get(path, headers=bearer(OPS_TOKEN))).status_code == 200
        assert_problem(await client.get(f"/metrics?token={OPS_TOKEN}"), 401, "unauthenticated")
        assert (await client.get(f"/dashboard?token={OPS_TOKEN}")).status_code == 200
        assert (await client.get(f"/dashboard/data?token={OPS_TOKEN}")).status_code == 200
        assert (await client.get("/dashboard/assets/dashboard.js")).status_code == 200  # no data in it
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_without_an_ops_token_metrics_and_the_dashboard_are_open(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path)) as client:
        for path in ("/metrics", "/dashboard", "/dashboard/data"):
            assert (await client.get(path)).status_code == 200


async def test_with_metrics_turned_off_there_is_no_metrics_page_and_requests_still_work(
    tmp_path: Path,
) -> None:
    async with asgi_client(settings_for(tmp_path, metrics_enabled=False)) as client:
        for path in ("/metrics", "/dashboard", "/dashboard/data"):
            assert_problem(await client.get(path), 404, "not_found")
        ledger = await new_ledger(client)
        await _traffic(client, ledger)


@pytest.mark.server
def test_two_workers_expose_the_sum_of_both_and_clean_up_after_themselves(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    running = start_server(
        tmp_path, {"TALLY_WORKERS": "2", "TALLY_READ_POOL_SIZE": "3", "TMPDIR": str(scratch)}
    )
    try:
        assert [path.name for path in scratch.iterdir() if path.name.startswith("tally-metrics-")]
        for _ in range(40):
            # A new connection each time, so that the kernel may hand it to either worker.
            assert httpx.get(f"{running.base_url}/readyz", headers={"Connection": "close"}).status_code == 200
        scrapes: list[list[Sample]] = []
        for _ in range(8):
            response = httpx.get(f"{running.base_url}/metrics", headers={"Connection": "close"})
            scrapes.append(samples(response.text))
    finally:
        running.stop()
    for found in scrapes:
        # Each worker opened 1 writer and 3 readers: whichever answered, the sum is both workers'.
        assert total(found, "tally_db_connections", role="reader") == 6
        assert total(found, "tally_db_connections", role="writer") == 2
        assert total(found, "tally_http_requests_total", route="/readyz") == 40
        assert total(found, "tally_http_request_duration_seconds_count", route="/readyz") == 40
    assert not [path for path in scratch.iterdir() if path.name.startswith("tally-metrics-")]
