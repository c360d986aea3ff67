"""``GET /v1/accounts/{id}/statements``: the days whose ``statements`` run finished, as a continuous
series (quiet days filled in), paged oldest first; bad ranges are 422, another ledger's account 404,
and a day not computed yet is absent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tally.bootstrap import Tally
from tally.jobs.runs import new_owner, run_batch_job
from tally.jobs.statements import StatementsJob
from tally.store.codec import to_micros
from tests.support import LedgerKeys, new_ledger, open_account, serving_in_process, settings_for, transfer

STRONG = {"Tally-Consistency": "strong"}  # the job wrote behind the client's consistency token
D1, D2, D3 = date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)


@dataclass
class Setup:
    client: httpx.AsyncClient
    ledger: LedgerKeys
    other: LedgerKeys

    async def statements(
        self, query: str, account: str = "alice", ledger: LedgerKeys | None = None
    ) -> httpx.Response:
        headers = {**(ledger or self.ledger).read, **STRONG}
        return await self.client.get(f"/v1/accounts/{account}/statements?{query}", headers=headers)


async def _date_new_entries(tally: Tally, day: date) -> None:
    start = to_micros(datetime(day.year, day.month, day.day, tzinfo=UTC))
    async with tally.database.write() as tx:
        await tx.connection.execute(
            text("UPDATE entries SET created_at = :start + pk WHERE created_at > :recent"),
            {"start": start, "recent": to_micros(datetime(2025, 12, 31, tzinfo=UTC))},
        )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """alice is paid 100 on D1, has a quiet D2, pays 30 on D3; D1–D3 are computed, D4 is not."""
    tally = Tally(settings_for(tmp_path, hold_sweep_seconds=3600.0, job_schedule=[]))
    async with serving_in_process(tally, tokens=False) as client:
        ledger, other = await new_ledger(client), await new_ledger(client, "other")
        world = await open_account(client, ledger.write, normal_balance="debit", min_balance=None)
        for name in ("alice", "bob"):
            await open_account(client, ledger.write, id=name)
        await open_account(client, other.write, id="stranger")
        assert (await transfer(client, ledger.write, world["id"], "alice", 100)).is_success
        await _date_new_entries(tally, D1)
        assert (await transfer(client, ledger.write, "alice", "bob", 30)).is_success
        await _date_new_entries(tally, D3)
        for day in (D1, D2, D3):
            await run_batch_job(
                    tally.database, StatementsJob(), day.isoformat(),
                    owner=new_owner(), lease=timedelta(seconds=30), progress=None,
                )  # fmt: skip
        yield Setup(client, ledger, other)


def _days(response: httpx.Response) -> list[tuple[str, int, int, int, int, int]]:
    assert response.status_code == 200, response.text
    return [
        (s["date"], s["opening_balance"], s["closing_balance"], s["debits"], s["credits"], s["postings"])
        for s in response.json()["data"]
    ]


async def test_finished_days_come_as_a_continuous_series_oldest_first(setup: Setup) -> None:
    response = await setup.statements("from=2025-02-28&to=2025-03-04")
    assert _days(response) == [  # Feb 28 and Mar 4 were never computed: absent
        ("2025-03-01", 0, 100, 0, 100, 1),
        ("2025-03-02", 100, 100, 0, 0, 0),  # quiet: carries the balance
        ("2025-03-03", 100, 70, 30, 0, 1),
    ]
    first = response.json()["data"][0]
    assert (first["account_id"], first["currency"]) == ("alice", "USD")
    assert response.json()["next_cursor"] is None
    assert _days(await setup.statements("from=2025-03-02&to=2025-03-02", account="bob")) == [
        ("2025-03-02", 0, 0, 0, 0, 0)  # no posting before or on the day
    ]


async def test_pages_follow_the_cursor_without_skipping_a_day(setup: Setup) -> None:
    first = await setup.statements("from=2025-03-01&to=2025-03-03&limit=2")
    assert [d[0] for d in _days(first)] == ["2025-03-01", "2025-03-02"]
    cursor = first.json()["next_cursor"]
    assert cursor
    second = await setup.statements(f"from=2025-03-01&to=2025-03-03&limit=2&cursor={cursor}")
    assert _days(second) == [("2025-03-03", 100, 70, 30, 0, 1)]  # opens where the last page closed
    assert second.json()["next_cursor"] is None


BAD_QUERIES = [
    "to=2025-03-03",  # from is required
    "from=2025-03-01",  # to is required
    "from=2025-03-03&to=2025-03-01",  # backwards
    "from=2024-01-01&to=2025-01-01",  # 367 days
    "from=yesterday&to=2025-03-01",
    "from=2025-03-01&to=2025-03-03&cursor=nonsense",
    "from=2025-03-01&to=2025-03-03&limit=0",
]


async def test_a_bad_range_or_cursor_is_a_validation_error(setup: Setup) -> None:
    for query in BAD_QUERIES:
        response = await setup.statements(query)
        assert response.status_code == 422, (query, response.text)
        assert response.json()["code"] == "validation_error", query


async def test_an_account_of_another_ledger_is_not_found(setup: Setup) -> None:
    response = await setup.statements("from=2025-03-01&to=2025-03-03", account="stranger")
    assert response.status_code == 404, response.text
    assert (
        await setup.statements("from=2025-03-01&to=2025-03-01", account="stranger", ledger=setup.other)
    ).is_success
