"""Transfers and their legs in SQL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import aliased

from tally.domain.accounts import Direction
from tally.domain.transfers import Leg, Transfer, TransferStatus
from tally.services.ports import Page
from tally.store import tables as t
from tally.store.codec import (
    dump_json,
    from_micros,
    load_json,
    maybe_from_micros,
    maybe_to_micros,
    to_micros,
)
from tally.store.repositories.base import SqlRepository, page_of

_t = t.transfers
_l = t.transfer_legs
_a = t.accounts
_reversed = aliased(_t)

# Statements are built once (SQLAlchemy then reuses their compiled form) and take bound values.
_with_reversed = select(*_t.c, _reversed.c.id.label("reverses_id")).outerjoin(
    _reversed, _reversed.c.pk == _t.c.reverses_pk
)
_by_id = _with_reversed.where(_t.c.ledger_id == bindparam("ledger_id"), _t.c.id == bindparam("id"))
_insert = insert(_t).returning(_t.c.pk)
_insert_legs = insert(_l)
_legs_of = (
    select(_l.c.transfer_pk, _a.c.id, _l.c.direction, _l.c.amount, _a.c.currency)
    .join(_a, _a.c.pk == _l.c.account_pk)
    .where(_l.c.transfer_pk.in_(bindparam("pks", expanding=True)))
    .order_by(_l.c.transfer_pk, _l.c.position)
)


def _transfer(row: Any, legs: tuple[Leg, ...]) -> Transfer:
    m = row._mapping
    return Transfer(
        pk=m["pk"],
        ledger_id=m["ledger_id"],
        id=m["id"],
        status=TransferStatus(m["status"]),
        legs=legs,
        description=m["description"],
        metadata=load_json(m["metadata"]),
        reverses=m["reverses_id"],
        reversed_amount=m["reversed_amount"],
        expires_at=maybe_from_micros(m["expires_at"]),
        created_at=from_micros(m["created_at"]),
        posted_at=maybe_from_micros(m["posted_at"]),
        request_hash=m["request_hash"],
    )


class SqlTransferRepository(SqlRepository):
    async def add(self, transfer: Transfer, account_pks: dict[str, int]) -> Transfer:
        self._tx.mark_written()
        result = await self._conn.execute(
            _insert,
            {
                "ledger_id": transfer.ledger_id,
                "id": transfer.id,
                "status": transfer.status.value,
                "description": transfer.description,
                "metadata": dump_json(transfer.metadata),
                "reversed_amount": transfer.reversed_amount,
                "expires_at": maybe_to_micros(transfer.expires_at),
                "request_hash": transfer.request_hash,
                "created_at": to_micros(transfer.created_at),
                "posted_at": maybe_to_micros(transfer.posted_at),
            },
        )
        pk: int = result.scalar_one()
        await self._conn.execute(
            _insert_legs,
            [
                {
                    "transfer_pk": pk,
                    "position": position,
                    "account_pk": account_pks[leg.account_id],
                    "direction": leg.direction.value,
                    "amount": leg.amount,
                }
                for position, leg in enumerate(transfer.legs)
            ],
        )
        return replace(transfer, pk=pk)

    async def get(self, ledger_id: str, transfer_id: str) -> Transfer | None:
        row = (await self._conn.execute(_by_id, {"ledger_id": ledger_id, "id": transfer_id})).first()
        if row is None:
            return None
        legs = await self._legs([row.pk])
        return _transfer(row, legs[row.pk])

    async def list(
        self,
        ledger_id: str,
        *,
        account_pk: int | None,
        status: TransferStatus | None,
        before: int | None,
        limit: int,
    ) -> Page[Transfer]:
        query = _with_reversed
        if account_pk is not None:
            # Served by ix_transfer_legs_account_pk_transfer_pk, newest first.
            query = query.join(_l, _l.c.transfer_pk == _t.c.pk).where(_l.c.account_pk == account_pk)
            position = _l.c.transfer_pk
        else:
            query = query.where(_t.c.ledger_id == ledger_id)
            position = _t.c.pk
        if status is not None:
            query = query.where(_t.c.status == status.value)
        if before is not None:
            query = query.where(position < before)
        rows = (await self._conn.execute(query.order_by(position.desc()).limit(limit + 1))).all()
        legs = await self._legs([row.pk for row in rows[:limit]])
        return page_of(rows, limit, lambda row: _transfer(row, legs[row.pk]), lambda row: row.pk)

    async def _legs(self, transfer_pks: Sequence[int]) -> dict[int, tuple[Leg, ...]]:
        if not transfer_pks:
            return {}
        found: defaultdict[int, list[Leg]] = defaultdict(list)
        rows = await self._conn.execute(_legs_of, {"pks": list(transfer_pks)})
        for row in rows:
            found[row.transfer_pk].append(Leg(row.id, Direction(row.direction), row.amount, row.currency))
        return {pk: tuple(legs) for pk, legs in found.items()}
