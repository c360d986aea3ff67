"""The SQLite ceiling under Tally, and how close Tally's own layers come to it, in one run.

1. raw: Tally's transfer transaction with plain ``sqlite3``, no service layer;
2. services: the same transfers through ``IdempotentExecutor`` + ``create_transfer`` on the SQLite
   adapter (domain, services, repositories, SQLAlchemy Core), with no HTTP.

The same statements and rows as one ``POST /v1/transfers`` (catch-up read, idempotency lookup,
account lock, two balance updates, transfer, two legs, two entries, outbox event, idempotency
record) on Tally's own schema, in one ``BEGIN IMMEDIATE`` … ``COMMIT`` each, one after another.
Compare both with ``bench_sequential.py`` (over HTTP) to see what each layer costs.

    .venv/bin/python scripts/bench_ceiling.py [--transfers 3000] [--synchronous FULL|NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from tally.domain.accounts import Bounds, Direction, NormalBalance
from tally.domain.errors import TallyError
from tally.domain.transfers import LegRequest, TransferRequest
from tally.services.accounts import OpenAccount, open_account
from tally.services.idempotency import IdempotencyKey, IdempotentExecutor
from tally.services.ledgers import create_ledger
from tally.services.ports import StoredReply, Transaction
from tally.services.transfers import create_transfer
from tally.services.views import transfer_view
from tally.store.sqlite import SqliteDatabase

EVENT = '{"data": "' + "x" * 400 + '"}'  # about the size of a transfer.created event
REPLY = ('{"data": "' + "x" * 480 + '"}').encode()  # about the size of a stored 201 reply


def transfer(db: sqlite3.Connection, i: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.execute("SELECT pk, created_at FROM events WHERE pk = (SELECT max(pk) FROM events)").fetchone()
    db.execute("SELECT * FROM idempotency_keys WHERE ledger_id = 'l' AND key = ?", (str(i),)).fetchone()
    db.execute("SELECT * FROM accounts WHERE ledger_id = 'l' AND id IN ('s', 'd')").fetchall()
    db.executemany(
        "UPDATE accounts SET posted = ?, pending_debits = 0, pending_credits = 0,"
        " version = version + 1, updated_at = ? WHERE pk = ?",
        [(-i, i, 1), (i, i, 2)],
    )
    (transfer_pk,) = db.execute(
        "INSERT INTO transfers (ledger_id, id, status, description, metadata, reversed_amount,"
        " expires_at, request_hash, created_at, posted_at)"
        " VALUES ('l', ?, 'posted', NULL, '{}', 0, NULL, ?, ?, ?) RETURNING pk",
        (uuid.uuid4().hex, b"h" * 32, i, i),
    ).fetchone()
    db.executemany(
        "INSERT INTO transfer_legs VALUES (?, ?, ?, ?, 1)",
        [(transfer_pk, 0, 1, "debit"), (transfer_pk, 1, 2, "credit")],
    )
    db.executemany(
        "INSERT INTO entries (account_pk, transfer_pk, kind, direction, amount, posted_after,"
        " pending_debits_after, pending_credits_after, account_version, created_at)"
        " VALUES (?, ?, 'posting', ?, 1, ?, 0, 0, ?, ?)",
        [(1, transfer_pk, "debit", -i, i, i), (2, transfer_pk, "credit", i, i, i)],
    )
    db.execute(
        "INSERT INTO events (id, ledger_id, type, data, request_id, created_at)"
        " VALUES (?, 'l', 'transfer.created', ?, NULL, ?) RETURNING pk",
        (uuid.uuid4().hex, EVENT, i),
    ).fetchone()
    db.execute(
        "INSERT INTO idempotency_keys VALUES ('l', ?, ?, 201, ?, ?, ?)",
        (str(i), b"f" * 32, REPLY, i, i),
    )
    db.execute("COMMIT")


async def create_schema(path: Path) -> None:
    database = SqliteDatabase(f"sqlite:///{path}")
    await database.start()
    await database.stop()


async def through_services(path: Path, synchronous: str, warmup: int, count: int) -> float:
    """Seconds for ``count`` transfers through the service layer, as the route runs them."""
    database = SqliteDatabase(f"sqlite:///{path}", synchronous=synchronous)
    await database.start()
    executor = IdempotentExecutor(database)
    async with database.write() as tx:
        ledger = await create_ledger(tx, "bench")
        for account_id, side in (("s", NormalBalance.DEBIT), ("d", NormalBalance.CREDIT)):
            command = OpenAccount("USD", id=account_id, normal_balance=side, bounds=Bounds(None, None))
            await open_account(tx, ledger.id, command, request_hash=account_id.encode(), request_id=None)
    request = TransferRequest(
        legs=(LegRequest("s", Direction.DEBIT, 1), LegRequest("d", Direction.CREDIT, 1)), simple=True
    )

    async def action(tx: Transaction) -> StoredReply:
        created, _ = await create_transfer(tx, ledger.id, request, request_hash=b"h", request_id="r")
        return StoredReply(201, orjson.dumps(transfer_view(created)))

    def refuse(error: TallyError) -> StoredReply:
        raise error

    async def run(n: int) -> None:
        for _ in range(n):
            key = IdempotencyKey(uuid.uuid4().hex, b"f" * 32)
            await executor.run(ledger.id, key, action, refuse)

    await run(warmup)
    started = time.perf_counter()
    await run(count)
    elapsed = time.perf_counter() - started
    await database.stop()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ceiling.db"
        asyncio.run(create_schema(path))
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={args.synchronous}")
        db.execute("INSERT INTO ledgers VALUES ('l', 'l', 0)")
        for account in ("s", "d"):
            db.execute(
                "INSERT INTO accounts (ledger_id, id, currency, normal_balance, status, metadata,"
                " posted, pending_debits, pending_credits, version, created_at, updated_at)"
                " VALUES ('l', ?, 'USD', 'credit', 'open', '{}', 0, 0, 0, 0, 0, 0)",
                (account,),
            )
        for i in range(args.warmup):
            transfer(db, i)
        started = time.perf_counter()
        for i in range(args.warmup, args.warmup + args.transfers):
            transfer(db, i)
        raw = time.perf_counter() - started
        db.close()
        services = asyncio.run(
            through_services(Path(directory) / "services.db", args.synchronous, args.warmup, args.transfers)
        )
    rows = []
    for name, elapsed in (("raw sqlite3", raw), ("tally services, no HTTP", services)):
        rows.append(
            {
                "layer": name,
                "synchronous": args.synchronous,
                "transfers": args.transfers,
                "transfers_per_second": round(args.transfers / elapsed, 1),
                "ms_per_transfer": round(elapsed / args.transfers * 1000, 3),
                "share_of_ceiling": round(raw / elapsed, 3),
            }
        )
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
