"""The SQLite ceilings: Tally's transfer transaction on plain ``sqlite3``, with no HTTP and no services.

``sqlite_single`` runs, one transaction per transfer, the statements that one
``POST /v1/transfers`` with an Idempotency-Key runs on the SQLite adapter, on Tally's own schema
(made by ``tally.store.migrations.ensure_schema``, as the adapter makes it) and with the same
pragmas (WAL, ``synchronous=FULL``): ``BEGIN IMMEDIATE``; the catch-up read of the newest event; the
idempotency lookup; both accounts with their balances; the two balance updates (one prepared
statement, executed for both); the transfer; its two legs; its two entries; its
``transfer.created`` event; the idempotency record with the 201 reply; ``COMMIT``.

``sqlite_batch`` writes the same rows for ``batch`` transfers per transaction, as one
``POST /v1/transfers/batch`` does (one idempotency record holding every result, one event per
transfer), but with one statement per table per batch: the database's batched ceiling.

``write_transfer`` and ``write_batch`` are those statements inside an open transaction, for
``scripts/bench_db_floor.py``, which serves them over HTTP.

Both run between two random distinct accounts of ``accounts`` credit-normal, unbounded accounts
opened in the file first, and check no business rule: the ceiling is the database's work alone.
A committed transaction counts as ``"201"``, what the API answers for it; its latency, from the
first statement to the commit's return, goes into the histogram. Neither takes part in any
warm-up of the HTTP scenarios: ``warmup`` seconds of transactions are run unrecorded first.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine

from tally.bench.results import Measured, record
from tally.domain.ids import new_id
from tally.store.migrations import ensure_schema

CREATED = "201"
CURRENCY = "USD"
RETENTION_MICROS = 24 * 3600 * 1_000_000  # idempotency records are kept a day (services.idempotency)

_LAST_EVENT = "SELECT pk, created_at FROM events WHERE pk = (SELECT max(pk) FROM events)"
_KEY = (
    "SELECT ledger_id, key, fingerprint, status, body, created_at, keep_until FROM idempotency_keys"
    " WHERE ledger_id = ? AND key = ?"
)
# The accounts with their balances, as ``SqlAccountRepository.lock`` reads them on SQLite.
_ACCOUNTS = (
    "SELECT a.pk, a.ledger_id, a.id, a.name, a.currency, a.normal_balance, a.min_balance,"
    " a.max_balance, a.status, a.metadata, a.request_hash, a.created_at, b.posted, b.pending_debits,"
    " b.pending_credits, b.version,"
    " CASE WHEN b.updated_at > a.updated_at THEN b.updated_at ELSE a.updated_at END AS updated_at"
    " FROM accounts AS a JOIN account_balances AS b ON b.account_pk = a.pk"
    " WHERE a.ledger_id = ? AND a.id IN ({})"
)
_SAVE_BALANCE = (
    "UPDATE account_balances SET posted = ?, pending_debits = 0, pending_credits = 0, version = ?,"
    " updated_at = ? WHERE account_pk = ?"
)
_INSERT_TRANSFER = (
    "INSERT INTO transfers (ledger_id, id, status, description, metadata, reverses_pk, reversed_amount,"
    " held_amount, expires_at, request_hash, created_at, posted_at)"
    " VALUES (?, ?, 'posted', NULL, '{}', NULL, 0, NULL, NULL, ?, ?, ?) RETURNING pk"
)
_INSERT_TRANSFER_AT = (  # the same, with the pk given
    "INSERT INTO transfers (pk, ledger_id, id, status, description, metadata, reverses_pk,"
    " reversed_amount, held_amount, expires_at, request_hash, created_at, posted_at)"
    " VALUES (?, ?, ?, 'posted', NULL, '{}', NULL, 0, NULL, NULL, ?, ?, ?)"
)
_INSERT_LEG = (
    "INSERT INTO transfer_legs (transfer_pk, position, account_pk, direction, amount) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_ENTRY = (
    "INSERT INTO entries (account_pk, transfer_pk, kind, direction, amount, posted_after,"
    " pending_debits_after, pending_credits_after, account_version, created_at)"
    " VALUES (?, ?, 'posting', ?, ?, ?, 0, 0, ?, ?)"
)
_EVENT = (
    "INSERT INTO events (id, ledger_id, type, data, request_id, created_at, xid) VALUES (?, ?, ?, ?, ?, ?, 0)"
)
_INSERT_EVENT = f"{_EVENT} RETURNING pk"
_INSERT_KEY = (
    "INSERT INTO idempotency_keys (ledger_id, key, fingerprint, status, body, created_at, keep_until)"
    " VALUES (?, ?, ?, 201, ?, ?, ?)"
)


@dataclass
class BookAccount:
    pk: int
    id: str
    posted: int = 0
    version: int = 0


@dataclass(frozen=True)
class Move:
    """One transfer's legs and amount, and the id it is created under."""

    id: str
    debit: BookAccount
    credit: BookAccount
    amount: int


class Books:
    """The open file, its ledger and accounts, and a write clock that never goes back."""

    def __init__(self, path: Path, accounts: int) -> None:
        if path.exists():
            raise FileExistsError(f"{path} exists: a ceiling runs on a fresh file")
        engine = create_engine(f"sqlite+pysqlite:///{path}")
        try:
            with engine.begin() as conn:
                ensure_schema(conn)  # the head schema, as the adapter creates it
        finally:
            engine.dispose()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            self.db.execute(f"PRAGMA {pragma}")
        self._last = 0
        self.ledger = new_id("led")
        self.accounts = self._open(accounts)
        self.by_id = {account.id: account for account in self.accounts}
        self.random = random.Random()  # noqa: S311 - picks accounts, not secrets

    def now(self) -> int:
        self._last = max(time.time_ns() // 1000, self._last + 1)
        return self._last

    def pick(self) -> tuple[BookAccount, BookAccount]:
        debit, credit = self.random.sample(self.accounts, 2)
        return debit, credit

    def moves(self, count: int) -> list[Move]:
        return [Move(new_id("tr"), *self.pick(), self.random.randint(1, 1000)) for _ in range(count)]

    @contextmanager
    def write(self, key: str) -> Iterator[None]:
        """A write transaction as the adapter opens it, with the idempotency lookup of ``key``.

        The key is always fresh (nothing stored under it), so the block always runs.
        """
        self.begin()
        try:
            self.look_up(key)
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def begin(self) -> None:
        """Open a write transaction as the adapter does, with its catch-up with other processes."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(_LAST_EVENT).fetchone()

    def look_up(self, key: str) -> None:
        """The idempotency lookup of ``key`` (always fresh here: nothing is stored under it)."""
        self.db.execute(_KEY, (self.ledger, key)).fetchone()

    def lock(self, moves: list[Move]) -> None:
        """Read the accounts of ``moves`` with their balances (SQLite's write lock is held)."""
        ids = sorted({account.id for move in moves for account in (move.debit, move.credit)})
        query = _ACCOUNTS.format(", ".join("?" * len(ids)))
        self.db.execute(query, (self.ledger, *ids)).fetchall()

    def _open(self, count: int) -> list[BookAccount]:
        now = self.now()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            "INSERT INTO ledgers (id, name, created_at) VALUES (?, 'ceiling', ?)", (self.ledger, now)
        )
        opened = []
        for number in range(count):
            account_id = f"a{number:05d}"
            row = self.db.execute(
                "INSERT INTO accounts (ledger_id, id, name, currency, normal_balance, min_balance,"
                " max_balance, status, metadata, request_hash, created_at, updated_at)"
                " VALUES (?, ?, NULL, ?, 'credit', NULL, NULL, 'open', '{}', ?, ?, ?) RETURNING pk",
                (self.ledger, account_id, CURRENCY, _digest(account_id), now, now),
            ).fetchone()
            opened.append(BookAccount(row[0], account_id))
        self.db.executemany(
            "INSERT INTO account_balances (account_pk, posted, pending_debits, pending_credits, version,"
            " updated_at) VALUES (?, 0, 0, 0, 0, ?)",
            [(account.pk, now) for account in opened],
        )
        self.db.execute("COMMIT")
        return opened


def _digest(text: str) -> bytes:
    """A SHA-256, the size of the request hashes and fingerprints Tally stores."""
    return hashlib.sha256(text.encode()).digest()


def _iso(micros: int) -> str:
    seconds, fraction = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:06d}Z"


def _view(move: Move, micros: int) -> dict[str, Any]:
    """The transfer as ``services.views.transfer_view`` shows a posted simple transfer."""
    at = _iso(micros)
    legs = [(move.debit, "debit"), (move.credit, "credit")]
    return {
        "id": move.id,
        "status": "posted",
        "legs": [
            {"account_id": a.id, "direction": side, "amount": move.amount, "currency": CURRENCY}
            for a, side in legs
        ],
        "debit_account_id": move.debit.id,
        "credit_account_id": move.credit.id,
        "amount": move.amount,
        "currency": CURRENCY,
        "description": None,
        "metadata": {},
        "reverses": None,
        "reversed_amount": 0,
        "held_amount": None,
        "expires_at": None,
        "created_at": at,
        "posted_at": at,
    }


def _apply(move: Move) -> None:
    """Move the balances: a debit lowers a credit-normal account, a credit raises it."""
    move.debit.posted -= move.amount
    move.credit.posted += move.amount
    move.debit.version += 1
    move.credit.version += 1


def _single(books: Books) -> None:
    """One transfer, statement for statement as ``POST /v1/transfers`` runs it on SQLite."""
    key, request_id = uuid.uuid4().hex, f"req_{uuid.uuid4().hex}"  # as a client and the middleware
    (move,) = books.moves(1)
    with books.write(key):
        write_transfer(books, move, key, request_id)


def write_transfer(books: Books, move: Move, key: str, request_id: str) -> dict[str, Any]:
    """One transfer's statements after its idempotency lookup, in the open write transaction;
    returns the transfer's view (its reply)."""
    db, ledger = books.db, books.ledger
    books.lock([move])
    now = books.now()
    _apply(move)
    db.executemany(
        _SAVE_BALANCE,
        [(a.posted, a.version, now, a.pk) for a in sorted((move.debit, move.credit), key=lambda a: a.pk)],
    )
    (transfer_pk,) = db.execute(_INSERT_TRANSFER, (ledger, move.id, _digest(key), now, now)).fetchone()
    db.executemany(_INSERT_LEG, _legs(transfer_pk, move))
    db.executemany(_INSERT_ENTRY, _entries(transfer_pk, move, now))
    view = _view(move, now)
    event = (new_id("evt"), ledger, "transfer.created", _event_data(view), request_id, now)
    db.execute(_INSERT_EVENT, event).fetchone()
    db.execute(
        _INSERT_KEY, (ledger, key, _digest(key + "!"), orjson.dumps(view), now, now + RETENTION_MICROS)
    )
    return view


def _batch(books: Books, size: int) -> None:
    """``size`` transfers in one transaction, one statement per table (``executemany``).

    The transfers' pks are chosen here, after the highest one, rather than read back one insert at
    a time: under SQLite's write lock no other writer can take them.
    """
    key, request_id = uuid.uuid4().hex, f"req_{uuid.uuid4().hex}"
    moves = books.moves(size)
    with books.write(key):
        write_batch(books, moves, key, request_id)


def write_batch(books: Books, moves: list[Move], key: str, request_id: str) -> bytes:
    """A batch's statements after its idempotency lookup, in the open write transaction; returns
    its reply, as stored under ``key``."""
    db, ledger = books.db, books.ledger
    books.lock(moves)
    now = books.now()
    (highest,) = db.execute("SELECT coalesce(max(pk), 0) FROM transfers").fetchone()
    transfers, legs, entries, events, results = [], [], [], [], []
    touched: dict[int, BookAccount] = {}
    for index, move in enumerate(moves):
        transfer_pk = highest + 1 + index
        _apply(move)  # in order: each entry carries the balance after its own transfer
        touched[move.debit.pk], touched[move.credit.pk] = move.debit, move.credit
        transfers.append((transfer_pk, ledger, move.id, _digest(f"{key}/{index}"), now, now))
        legs += _legs(transfer_pk, move)
        entries += _entries(transfer_pk, move, now)
        view = _view(move, now)
        events.append((new_id("evt"), ledger, "transfer.created", _event_data(view), request_id, now))
        results.append({"index": index, "status": "created", "transfer": view})
    db.executemany(_SAVE_BALANCE, [(a.posted, a.version, now, pk) for pk, a in sorted(touched.items())])
    db.executemany(_INSERT_TRANSFER_AT, transfers)
    db.executemany(_INSERT_LEG, legs)
    db.executemany(_INSERT_ENTRY, entries)
    db.executemany(_EVENT, events)
    reply = orjson.dumps({"results": results})
    db.execute(_INSERT_KEY, (ledger, key, _digest(key + "!"), reply, now, now + RETENTION_MICROS))
    return reply


def _legs(transfer_pk: int, move: Move) -> list[tuple[Any, ...]]:
    return [
        (transfer_pk, 0, move.debit.pk, "debit", move.amount),
        (transfer_pk, 1, move.credit.pk, "credit", move.amount),
    ]


def _entries(transfer_pk: int, move: Move, now: int) -> list[tuple[Any, ...]]:
    return [
        (a.pk, transfer_pk, side, move.amount, a.posted, a.version, now)
        for a, side in ((move.debit, "debit"), (move.credit, "credit"))
    ]


def _event_data(view: dict[str, Any]) -> str:
    return orjson.dumps(view, option=orjson.OPT_SORT_KEYS).decode()  # as store.codec.dump_json


def _measure(
    path: Path, accounts: int, transact: Callable[[Books], None], measured: Measured, warmup: float
) -> Measured:
    """Open the books, run ``transact`` back to back for ``warmup`` then ``measured.seconds``."""
    books = Books(path, accounts)
    try:
        until = time.perf_counter() + warmup
        while time.perf_counter() < until:
            transact(books)
        started = time.perf_counter()
        until = started + measured.seconds
        while (begun := time.perf_counter()) < until:
            transact(books)
            record(measured.histogram, time.perf_counter() - begun)
            measured.statuses[CREATED] += 1
        measured.seconds = time.perf_counter() - started
    finally:
        books.db.close()
    return measured


async def sqlite_single(path: Path, accounts: int, seconds: float, *, warmup: float = 0.0) -> Measured:
    """The single-transfer ceiling on a new SQLite file at ``path`` (which must not exist)."""
    measured = Measured("ceiling-single", "sqlite", "closed", 1, seconds)
    # One thread runs the whole loop: the ceiling has no event loop hop per statement.
    return await asyncio.to_thread(_measure, path, accounts, _single, measured, warmup)


async def sqlite_batch(
    path: Path, accounts: int, seconds: float, batch: int = 1000, *, warmup: float = 0.0
) -> Measured:
    """The batched ceiling, ``batch`` transfers per transaction, on a new SQLite file at ``path``."""

    measured = Measured("ceiling-batch", "sqlite", "closed", 1, seconds, units_per_request=batch)
    transact = functools.partial(_batch, size=batch)
    return await asyncio.to_thread(_measure, path, accounts, transact, measured, warmup)
