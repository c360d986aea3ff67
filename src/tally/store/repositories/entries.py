"""Entries (the append-only postings), the idempotency records and the outbox in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, insert, select

from tally.domain.accounts import Balance, Direction
from tally.domain.ids import new_id
from tally.services.ports import (
    BalanceAt,
    Entry,
    IdempotencyRecord,
    NewEntry,
    NewEvent,
    Page,
    StoredReply,
)
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, to_micros
from tally.store.repositories.base import SqlRepository, page_of

_e = t.entries


def _entry(row: Row[tuple[object, ...]]) -> Entry:
    m = row._mapping
    return Entry(
        pk=m["pk"],
        account_pk=m["account_pk"],
        transfer_id=m["transfer_id"],
        direction=Direction(m["direction"]),
        amount=m["amount"],
        posted_after=m["posted_after"],
        pending_debits_after=m["pending_debits_after"],
        pending_credits_after=m["pending_credits_after"],
        account_version=m["account_version"],
        created_at=from_micros(m["created_at"]),
    )


class SqlEntryRepository(SqlRepository):
    async def add(self, transfer_pk: int, entries: Sequence[NewEntry], at: datetime) -> None:
        self._tx.mark_written()
        micros = to_micros(at)
        await self._conn.execute(
            insert(_e),
            [
                {
                    "account_pk": e.account_pk,
                    "transfer_pk": transfer_pk,
                    "direction": e.direction.value,
                    "amount": e.amount,
                    "posted_after": e.balance_after.posted,
                    "pending_debits_after": e.balance_after.pending_debits,
                    "pending_credits_after": e.balance_after.pending_credits,
                    "account_version": e.account_version,
                    "created_at": micros,
                }
                for e in entries
            ],
        )

    async def list(self, account_pk: int, *, before: int | None, limit: int) -> Page[Entry]:
        query = (
            select(*_e.c, t.transfers.c.id.label("transfer_id"))
            .join(t.transfers, t.transfers.c.pk == _e.c.transfer_pk)
            .where(_e.c.account_pk == account_pk)
        )
        if before is not None:
            query = query.where(_e.c.pk < before)
        rows = (await self._conn.execute(query.order_by(_e.c.pk.desc()).limit(limit + 1))).all()
        return page_of(rows, limit, _entry, lambda row: row.pk)

    async def balance_at(self, account_pk: int, at: datetime) -> BalanceAt | None:
        row = (
            await self._conn.execute(
                select(
                    _e.c.posted_after,
                    _e.c.pending_debits_after,
                    _e.c.pending_credits_after,
                    _e.c.account_version,
                )
                .where(_e.c.account_pk == account_pk, _e.c.created_at <= to_micros(at))
                .order_by(_e.c.created_at.desc(), _e.c.pk.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        return BalanceAt(Balance(row[0], row[1], row[2]), row[3])


_k = t.idempotency_keys


class SqlIdempotencyRepository(SqlRepository):
    async def get(self, ledger_id: str, key: str) -> IdempotencyRecord | None:
        row = (
            await self._conn.execute(
                select(_k).where(_k.c.ledger_id == ledger_id, _k.c.key == key)
            )
        ).first()
        if row is None:
            return None
        return IdempotencyRecord(
            row.ledger_id,
            row.key,
            row.fingerprint,
            StoredReply(row.status, row.body),
            from_micros(row.created_at),
        )

    async def add(self, record: IdempotencyRecord, *, keep_until: datetime) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            insert(_k).values(
                ledger_id=record.ledger_id,
                key=record.key,
                fingerprint=record.fingerprint,
                status=record.reply.status,
                body=record.reply.body,
                created_at=to_micros(record.created_at),
                keep_until=to_micros(keep_until),
            )
        )


class SqlEventRepository(SqlRepository):
    async def add(self, event: NewEvent, at: datetime) -> int:
        self._tx.mark_written()
        pk: int = (
            await self._conn.execute(
                insert(t.events)
                .values(
                    id=new_id("evt"),
                    ledger_id=event.ledger_id,
                    type=event.type,
                    data=dump_json(event.data),
                    request_id=event.request_id,
                    created_at=to_micros(at),
                )
                .returning(t.events.c.pk)
            )
        ).scalar_one()
        self._tx.saw_event(pk)
        return pk
