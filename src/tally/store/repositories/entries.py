"""Entries (the append-only postings) and the idempotency records in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, tuple_

from tally.domain.accounts import Balance, Direction, EntryKind
from tally.services.ports import (
    BalanceAt,
    Entry,
    IdempotencyRecord,
    NewEntry,
    Page,
    StoredReply,
)
from tally.store import tables as t
from tally.store.codec import from_micros, to_micros
from tally.store.repositories.base import SqlRepository, page_of

_e = t.entries
_k = t.idempotency_keys

# Statements are built once (SQLAlchemy then reuses their compiled form) and take bound values.
_insert_entries = insert(_e)
_entries_of = (
    select(*_e.c, t.transfers.c.id.label("transfer_id"))
    .join(t.transfers, t.transfers.c.pk == _e.c.transfer_pk)
    .where(_e.c.account_pk == bindparam("account_pk"), _e.c.kind == EntryKind.POSTING.value)
)
_balance_at = (
    select(_e.c.posted_after, _e.c.pending_debits_after, _e.c.pending_credits_after, _e.c.account_version)
    .where(_e.c.account_pk == bindparam("account_pk"), _e.c.created_at <= bindparam("at"))
    .order_by(_e.c.created_at.desc(), _e.c.pk.desc())
    .limit(1)
)
_insert_key = insert(_k)
_key_by_name = select(_k).where(_k.c.ledger_id == bindparam("ledger_id"), _k.c.key == bindparam("key"))
_keys_by_name = select(_k).where(
    _k.c.ledger_id == bindparam("ledger_id"), _k.c.key.in_(bindparam("keys", expanding=True))
)


def _record(row: Any) -> IdempotencyRecord:
    reply = StoredReply(row.status, row.body)
    return IdempotencyRecord(row.ledger_id, row.key, row.fingerprint, reply, from_micros(row.created_at))


def _entry(row: Any) -> Entry:  # a Row of entries + transfer_id
    m = row._mapping
    return Entry(
        pk=m["pk"],
        account_pk=m["account_pk"],
        transfer_id=m["transfer_id"],
        kind=EntryKind(m["kind"]),
        direction=Direction(m["direction"]),
        amount=m["amount"],
        posted_after=m["posted_after"],
        pending_debits_after=m["pending_debits_after"],
        pending_credits_after=m["pending_credits_after"],
        account_version=m["account_version"],
        created_at=from_micros(m["created_at"]),
    )


class SqlEntryRepository(SqlRepository):
    async def add_many(self, entries: Sequence[tuple[int, Sequence[NewEntry]]], at: datetime) -> None:
        self._tx.mark_written()
        micros = to_micros(at)
        await self._conn.execute(
            _insert_entries,
            [
                {
                    "account_pk": e.account_pk,
                    "transfer_pk": transfer_pk,
                    "kind": e.kind.value,
                    "direction": e.direction.value,
                    "amount": e.amount,
                    "posted_after": e.balance_after.posted,
                    "pending_debits_after": e.balance_after.pending_debits,
                    "pending_credits_after": e.balance_after.pending_credits,
                    "account_version": e.account_version,
                    "created_at": micros,
                }
                for transfer_pk, of_transfer in entries
                for e in of_transfer
            ],
        )

    async def list(self, account_pk: int, *, before: int | None, limit: int) -> Page[Entry]:
        query = _entries_of
        if before is not None:
            query = query.where(_e.c.pk < before)
        result = await self._conn.execute(
            query.order_by(_e.c.pk.desc()).limit(limit + 1), {"account_pk": account_pk}
        )
        return page_of(result.all(), limit, _entry, lambda row: row.pk)

    async def balance_at(self, account_pk: int, at: datetime) -> BalanceAt | None:
        params = {"account_pk": account_pk, "at": to_micros(at)}
        row = (await self._conn.execute(_balance_at, params)).first()
        if row is None:
            return None
        balance = Balance(row.posted_after, row.pending_debits_after, row.pending_credits_after)
        return BalanceAt(balance, row.account_version)


class SqlIdempotencyRepository(SqlRepository):
    async def get(self, ledger_id: str, key: str) -> IdempotencyRecord | None:
        row = (await self._conn.execute(_key_by_name, {"ledger_id": ledger_id, "key": key})).first()
        return None if row is None else _record(row)

    async def get_many(self, ledger_id: str, keys: Sequence[str]) -> dict[str, IdempotencyRecord]:
        rows = await self._conn.execute(_keys_by_name, {"ledger_id": ledger_id, "keys": list(keys)})
        return {row.key: _record(row) for row in rows}

    async def add(self, record: IdempotencyRecord, *, keep_until: datetime) -> None:
        await self.add_many([record], keep_until=keep_until)

    async def add_many(self, records: Sequence[IdempotencyRecord], *, keep_until: datetime) -> None:
        self._tx.mark_written()
        until = to_micros(keep_until)
        await self._conn.execute(
            _insert_key,
            [
                {
                    "ledger_id": record.ledger_id,
                    "key": record.key,
                    "fingerprint": record.fingerprint,
                    "status": record.reply.status,
                    "body": record.reply.body,
                    "created_at": to_micros(record.created_at),
                    "keep_until": until,
                }
                for record in records
            ],
        )

    async def count_expired(self, before: datetime) -> int:
        query = select(func.count()).select_from(_k).where(_k.c.keep_until < to_micros(before))
        return int((await self._conn.execute(query)).scalar_one())

    async def purge(self, before: datetime, limit: int) -> int:
        # The oldest first through the keep_until index; the key pairs, not a range, are deleted, so
        # the statement touches exactly the rows the bounded select found.
        self._tx.mark_written()
        expired = (
            select(_k.c.ledger_id, _k.c.key)
            .where(_k.c.keep_until < to_micros(before))
            .order_by(_k.c.keep_until)
            .limit(limit)
        )
        statement = delete(_k).where(tuple_(_k.c.ledger_id, _k.c.key).in_(expired))
        result = await self._conn.execute(statement)
        return int(result.rowcount)  # type: ignore[attr-defined]
