"""Every access pattern is served by an index (docs/data-model.md).

A workload drives every route of the API, including filters, cursors and ``as_of``; every SQL
statement the store sends is captured with its parameters and run through SQLite's
``EXPLAIN QUERY PLAN``. A plan step that scans a whole table fails the test, so a new query without
an index fails here without anyone listing it first.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from tally.api.app import create_app
from tally.bootstrap import Tally
from tally.jobs.idempotency import PurgeIdempotencyKeys
from tally.jobs.runs import new_owner, run_batch_job
from tally.jobs.statements import StatementsJob
from tally.services.events import events_after
from tally.services.holds import expire_due_holds
from tests.pg_cluster import require_postgres
from tests.support import (
    BACKENDS,
    LIFESPAN_SECONDS,
    ROOT,
    LedgerKeys,
    idem,
    new_ledger,
    open_account,
    settings_for,
    transfer,
)

# The access patterns of docs/data-model.md whose index is not the only one that could answer:
# the statement (matched by a fragment of its SQL) must search through the named index columns.
EXPECTED = [
    ("lock a transfer's accounts", "accounts.id IN (", "(ledger_id=? AND id=?)"),
    ("authenticate a key", "api_keys.secret_hash = ?", "(secret_hash=?)"),
    ("balance as of a moment", "entries.created_at <= ?", "(account_pk=? AND created_at<?)"),
    ("entries of an account", "FROM entries JOIN transfers", "ix_entries_account_pk_kind_pk"),
    ("due holds on accounts", "holds.account_pk IN (", "ix_holds_account_pk_expires_at"),
    ("holds due for the sweeper", "ORDER BY holds.expires_at", "ix_holds_expires_at"),
    ("transfers of an account", "transfer_legs.account_pk = ?", "ix_transfer_legs_account_pk"),
    ("idempotency record", "WHERE idempotency_keys.ledger_id =", "(ledger_id=? AND key=?)"),
    ("next hold expiry of an account", "min(holds.expires_at)", "ix_holds_account_pk_expires_at"),
    ("the feed's tail", "ORDER BY events.xid DESC", "ix_events_xid_pk"),
    # The feed resumes at its position: both columns sought, not the first only (read from the start).
    (
        "feed positions",
        "SELECT events.xid, events.pk \nFROM events \nWHERE events.xid = ?",
        "(xid=? AND pk>?)",
    ),
    ("a ledger's feed after a position", "events.ledger_id = ? AND events.xid = ?", "(ledger_id=? AND xid=?"),
    (
        "the dispatcher's feed keys after its position",
        "SELECT events.xid, events.pk, events.ledger_id, events.type \nFROM events \nWHERE events.xid = ?",
        "(xid=? AND pk>?)",
    ),
    ("events by pk", "WHERE events.pk IN (", "INTEGER PRIMARY KEY"),
    ("usage of a key", "FROM key_usage", "(key_id=?)"),
    ("accounts with entries on a day", "AND account_pk > ?", "ix_entries_created_at_account_pk"),
    ("an account's statements by day", "FROM statements", "(account_pk=? AND day>? AND day<?)"),
    ("the days whose statements are done", "job_runs.period >= ?", "(job=? AND period>? AND period<?)"),
    ("purge expired idempotency keys", "idempotency_keys.keep_until <", "ix_idempotency_keys_keep_until"),
    ("a job's latest runs", "FROM job_runs", "(job=?"),
    ("a ledger's audit trail", "FROM audit_events", "ix_audit_events_ledger_id_pk"),
]


def _full_scans(plan: list[tuple[Any, ...]]) -> list[str]:
    details = [str(row[3]) for row in plan]
    # "SCAN 2 CONSTANT ROWS" reads the VALUES list of a many-row INSERT, and "SCAN CONSTANT ROW" a
    # SELECT without FROM (``last_insert_rowid()``): neither reads a table.
    tables = [d for d in details if "CONSTANT ROWS" not in d and d != "SCAN CONSTANT ROW"]
    return [d for d in tables if d.startswith("SCAN ") and "USING" not in d]


async def _workload(client: httpx.AsyncClient) -> LedgerKeys:
    ledger = await new_ledger(client)
    other = await new_ledger(client, "other")
    world = await open_account(client, ledger.write, normal_balance="debit", min_balance=None)
    names = [(await open_account(client, ledger.write, id=f"acct-{i}"))["id"] for i in range(3)]
    await open_account(client, other.write, id="acct-0")
    for i in range(6):
        await transfer(client, ledger.write, world["id"], names[i % 3], 100 + i)
    legs = [
        {"account_id": names[0], "direction": "debit", "amount": 10},
        {"account_id": names[1], "direction": "credit", "amount": 5},
        {"account_id": names[2], "direction": "credit", "amount": 5},
    ]
    await client.post("/v1/transfers", json={"legs": legs}, headers={**ledger.write, **idem()})
    replay = {**ledger.write, **idem("again")}
    body = {"debit_account_id": names[0], "credit_account_id": names[1], "amount": 1}
    for _ in range(2):
        await client.post("/v1/transfers", json=body, headers=replay)
    await transfer(client, ledger.write, names[0], names[1], 10**9)  # insufficient funds
    await client.post("/v1/transfers", json={**body, "id": "t-1"}, headers={**ledger.write, **idem()})
    await client.post("/v1/transfers", json={**body, "id": "t-1"}, headers={**ledger.write, **idem()})
    await _holds_and_reversals(client, ledger.write, names)
    await client.patch(f"/v1/accounts/{names[2]}", json={"metadata": {"a": 1}}, headers=ledger.write)
    await client.patch(f"/v1/accounts/{names[2]}", json={"status": "frozen"}, headers=ledger.write)
    first = (await client.get("/v1/transfers?limit=1", headers=ledger.read)).json()
    reads = [
        f"/v1/accounts/{names[0]}",
        "/v1/accounts?limit=2",
        "/v1/accounts?currency=USD&limit=2",
        "/v1/accounts?status=frozen",
        "/v1/accounts?currency=USD&status=open",
        f"/v1/accounts/{names[0]}/balance",
        f"/v1/accounts/{names[0]}/balance?as_of={first['data'][0]['created_at']}",
        f"/v1/accounts/{names[0]}/entries?limit=2",
        f"/v1/transfers?cursor={first['next_cursor']}",
        f"/v1/transfers?account_id={names[0]}&limit=2",
        "/v1/transfers?status=posted",
        "/v1/transfers?status=pending",
        "/v1/transfers?status=expired",
        f"/v1/transfers/{first['data'][0]['id']}",
    ]
    for path in reads:
        response = await client.get(path, headers=ledger.read)
        assert response.status_code == 200, (path, response.text)
        cursor = response.json().get("next_cursor")
        if cursor:
            sep = "&" if "?" in path else "?"
            assert (await client.get(f"{path}{sep}cursor={cursor}", headers=ledger.read)).is_success
    for types in ("", "&type=transfer.created"):  # the ledger's feed, from its start and then on
        page = (await client.get(f"/v1/events?limit=2{types}", headers=ledger.read)).json()
        more = await client.get(f"/v1/events?limit=2{types}&after={page['next_cursor']}", headers=ledger.read)
        assert more.status_code == 200, more.text
    keys = await client.get(f"/v1/ledgers/{ledger.ledger_id}/keys", headers=ledger.admin)
    key_id = keys.json()["data"][-1]["id"]
    rotate = f"/v1/ledgers/{ledger.ledger_id}/keys/{keys.json()['data'][-2]['id']}/rotate"
    assert (await client.post(rotate, json={}, headers=ledger.admin)).status_code == 201
    assert (
        await client.delete(f"/v1/ledgers/{ledger.ledger_id}/keys/{key_id}", headers=ROOT)
    ).status_code == 204
    await _audit_trail(client, ledger)
    return ledger


async def _audit_trail(client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    """The trail's pages both ways, and of one action (ADR 0036)."""
    lists: list[dict[str, str | int]] = [
        {"limit": 2},
        {"limit": 2, "order": "oldest"},
        {"action": "key.created", "limit": 1},
    ]
    for params in lists:
        page = (await client.get("/v1/audit-events", params=params, headers=ledger.admin)).json()
        assert page["next_cursor"], page
        more = {**params, "cursor": page["next_cursor"]}
        assert (await client.get("/v1/audit-events", params=more, headers=ledger.admin)).is_success


async def _key_usage(client: httpx.AsyncClient, ledger_id: str) -> None:
    keys = (await client.get(f"/v1/ledgers/{ledger_id}/keys", headers=ROOT)).json()["data"]
    usage = await client.get(f"/v1/ledgers/{ledger_id}/keys/{keys[0]['id']}/usage", headers=ROOT)
    assert usage.status_code == 200, usage.text


async def _holds_and_reversals(client: httpx.AsyncClient, write: dict[str, str], names: list[str]) -> None:
    def hold(amount: int, **extra: Any) -> dict[str, Any]:
        return {
            "debit_account_id": names[0],
            "credit_account_id": names[1],
            "amount": amount,
            "pending": True,
            **extra,
        }

    async def post(path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await client.post(path, json=body, headers={**write, **idem()})
        assert response.is_success, response.text
        result: dict[str, Any] = response.json()
        return result

    soon = (datetime.now(UTC) + timedelta(milliseconds=200)).isoformat()
    await post("/v1/transfers", hold(1, expires_at=soon))
    first = await post("/v1/transfers", hold(3))
    second = await post("/v1/transfers", hold(2))
    await post(f"/v1/transfers/{first['id']}/post", {"amount": 2})
    await post(f"/v1/transfers/{second['id']}/void")
    await post(f"/v1/transfers/{first['id']}/reverse", {"amount": 1})
    await post("/v1/transfers/batch", {"transfers": [hold(1), hold(1, id="b-1")], "atomic": True})
    await asyncio.sleep(0.3)  # the first hold is due now: reads see it expired, writes sweep it
    assert (await client.get("/v1/transfers?status=expired", headers=write)).json()["data"]
    await post(
        "/v1/transfers", hold(1, expires_at=(datetime.now(UTC) + timedelta(milliseconds=50)).isoformat())
    )


async def _batch_job_runs(tally: Tally) -> None:
    """A batch job run, its re-run and ``tally jobs list``'s read (ADR 0032)."""
    job = PurgeIdempotencyKeys(batch=10)
    period = job.period(None, datetime.now(UTC))
    lease = timedelta(seconds=30)
    for owner in ("a:1:a", "b:2:b"):  # the second finds the run finished
        await run_batch_job(tally.database, job, period, owner=owner, lease=lease, progress=None)
    async with tally.database.read() as tx:
        assert await tx.job_runs.recent(job.name, 3)


# Lookups in the database's own catalog (the schema check at start, the schema phase each process
# looks at every second, ADR 0031 and 0034) read a handful of rows of the dictionary, not Tally's data.
_CATALOG = re.compile(r"sqlite_master|pragma_table_info|pg_catalog|pg_attribute|to_regclass|alembic_version")


async def _daily_statements(tally: Tally, client: httpx.AsyncClient, ledger: LedgerKeys) -> None:
    """The ``statements`` job on the day of the workload (its queries), then the endpoint's reads."""
    reader = {**ledger.write, "Tally-Consistency": "strong"}  # the read key was revoked by then
    newest = (await client.get("/v1/transfers?limit=1", headers=reader)).json()["data"][0]
    day, lease = newest["created_at"][:10], timedelta(seconds=30)
    await run_batch_job(tally.database, StatementsJob(2), day, owner=new_owner(), lease=lease, progress=None)
    response = await client.get(f"/v1/accounts/acct-0/statements?from={day}&to={day}", headers=reader)
    assert [s["date"] for s in response.json()["data"]] == [day], response.text


async def _statements_of_the_workload(tmp_path: Path) -> dict[str, Any]:
    """Every statement the store sent while the workload ran, with the parameters of its first run."""
    tally = Tally(
        settings_for(
            tmp_path,
            hold_sweep_seconds=3600.0,  # the test sweeps itself
            cache_invalidation="outbox",  # the feed's tail and pages, as other processes' caches read them
            cache_invalidation_poll_ms=20,
        )
    )
    seen: dict[str, Any] = {}

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in {"SELECT", "UPDATE", "DELETE", "INSERT"} and not _CATALOG.search(statement):
            seen.setdefault(statement, parameters)

    for engine in tally.database.engines:
        event.listen(engine, "before_cursor_execute", capture)
    app = create_app(tally)
    async with LifespanManager(app, **LIFESPAN_SECONDS) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tally") as client:
            ledger = await _workload(client)
            await asyncio.sleep(0.1)
            await tally.key_usage.flush(tally.database)  # the write-behind of key usage
            await _key_usage(client, ledger.ledger_id)
            if BACKENDS.name == "postgresql":
                BACKENDS.cluster().wait_for_replay()  # the sweeper looks on a replica first
            assert await expire_due_holds(tally.database) == 1  # the sweeper's own queries
            await _daily_statements(tally, client, ledger)
            await _batch_job_runs(tally)
            # The webhook dispatcher, to the feed's end and on from there (ADR 0044): its key reads
            # from the start and after a position, and the store of its position.
            dispatcher = tally.webhooks.dispatcher
            while await dispatcher.dispatch():
                pass
            await dispatcher.store_position()
            # Events of another process, read as the outbox invalidation reads them (its own it skips).
            _, others = await events_after(tally.database, None, ["transfer.created"], 10, skip=())
            assert others
    assert len(seen) >= 15, "the workload should reach every repository query"
    return seen


async def test_every_query_of_the_api_is_served_by_an_index(tmp_path: Path) -> None:
    seen = await _statements_of_the_workload(tmp_path)
    connection = sqlite3.connect(tmp_path / "tally.db")
    try:
        plans = {}
        for statement, parameters in seen.items():
            params = parameters[0] if isinstance(parameters, list) else parameters
            rows = connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            plans[statement] = rows
    finally:
        connection.close()
    failures = {statement: scans for statement, rows in plans.items() if (scans := _full_scans(rows))}
    assert not failures, failures
    for pattern, fragment, index in EXPECTED:
        matching = [(s, rows) for s, rows in plans.items() if fragment in s]
        assert matching, f"the workload never ran '{pattern}'"
        for statement, rows in matching:
            assert any(index in str(row[3]) for row in rows), (pattern, statement, rows)


async def test_every_query_is_served_by_an_index_on_postgresql(tmp_path: Path) -> None:
    """The same workload on PostgreSQL: ``EXPLAIN`` with sequential scans priced out
    (``enable_seqscan = off``, so a tiny table cannot hide a missing index) shows none."""
    require_postgres()
    BACKENDS.name = "postgresql"
    try:
        seen = await _statements_of_the_workload(tmp_path)
        url, _ = BACKENDS.urls(tmp_path)
        database = url.rsplit("/", 1)[1]
        plans: dict[str, Any] = {}
        dsn = BACKENDS.cluster().primary.dsn(database)
        with psycopg.connect(dsn) as connection:
            connection.execute("SET enable_seqscan = off")
            for statement, parameters in seen.items():
                if "pg_" in statement or "information_schema" in statement:
                    continue  # the schema check and the adapter's own catalogue queries
                params = parameters[0] if isinstance(parameters, list) else parameters
                explain = f"EXPLAIN (FORMAT JSON) {statement}"
                plans[statement] = connection.execute(explain.encode(), params).fetchone()[0]  # type: ignore[index]
            connection.rollback()
    finally:
        BACKENDS.finish()
    assert len(plans) >= 15
    failures = {statement: scans for statement, plan in plans.items() if (scans := _seq_scans(plan))}
    assert not failures, failures
    locks = [s for s in plans if "FOR NO KEY UPDATE" in s]
    assert locks, "account and transfer locks are FOR NO KEY UPDATE (ADR 0020)"


def _seq_scans(plan: Any) -> list[str]:
    """Tables a JSON plan reads with a sequential scan."""
    found: list[str] = []
    stack = [node["Plan"] for node in plan]
    while stack:
        node = stack.pop()
        if node.get("Node Type") == "Seq Scan":
            found.append(node.get("Relation Name", "?"))
        stack.extend(node.get("Plans", []))
    return found


@pytest.mark.parametrize(
    ("plan", "scans"),
    [
        ([(2, 0, 0, "SCAN accounts")], ["SCAN accounts"]),
        ([(2, 0, 0, "SEARCH accounts USING INDEX ix (ledger_id=?)")], []),
        ([(2, 0, 0, "SCAN accounts USING COVERING INDEX ix")], []),
        ([(2, 0, 0, "SCAN 2 CONSTANT ROWS")], []),
        ([(2, 0, 0, "SCAN CONSTANT ROW")], []),
    ],
)
def test_a_plan_step_without_an_index_counts_as_a_full_scan(
    plan: list[tuple[Any, ...]], scans: list[str]
) -> None:
    assert _full_scans(plan) == scans
