"""Transfers and their legs in SQL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
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
_by_ids = _with_reversed.where(
    _t.c.ledger_id == bindparam("ledger_id"), _t.c.id.in_(bindparam("ids", expanding=True))
)
_by_id_for_update = _by_id.with_for_update(of=_t, key_share=True)
_by_pk = _with_reversed.where(_t.c.pk == bindparam("pk"))
_by_pk_for_update = _by_pk.with_for_update(of=_t, key_share=True)
# On PostgreSQL many rows in one statement (SQLAlchemy's "insertmanyvalues"); RETURNING's order is
# not promised then, so each pk is matched by the transfer's id. SQLite needs no RETURNING (ADR 0045).
_insert = insert(_t).returning(_t.c.pk, _t.c.id)
_insert_sqlite = insert(_t)
_insert_legs = insert(_l)
_save = (
    update(_t)
    .where(_t.c.pk == bindparam("t_pk"))
    .values(
        status=bindparam("t_status"),
        posted_at=bindparam("t_posted_at"),
        held_amount=bindparam("t_held_amount"),
        reversed_amount=bindparam("t_reversed_amount"),
    )
)
_save_leg = (
    update(_l)
    .where(_l.c.transfer_pk == bindparam("l_transfer_pk"), _l.c.position == bindparam("l_position"))
    .values(amount=bindparam("l_amount"))
)
_legs_of = (
    select(_l.c.transfer_pk, _a.c.id, _l.c.direction, _l.c.amount, _a.c.currency)
    .join(_a, _a.c.pk == _l.c.account_pk)
    .where(_l.c.transfer_pk.in_(bindparam("pks", expanding=True)))
    .order_by(_l.c.transfer_pk, _l.c.position)
)


def _status_at(status: TransferStatus, now: int) -> Any:
    """The status as read at ``now``: a pending transfer whose ``expires_at`` has come is expired."""
    due = and_(_t.c.status == TransferStatus.PENDING.value, _t.c.expires_at <= now)
    if status is TransferStatus.PENDING:
        return and_(_t.c.status == status.value, or_(_t.c.expires_at.is_(None), _t.c.expires_at > now))
    if status is TransferStatus.EXPIRED:
        return or_(_t.c.status == status.value, due)
    return _t.c.status == status.value


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
        held_amount=m["held_amount"],
    )


def _row(transfer: Transfer, reverses_pk: int | None) -> dict[str, Any]:
    return {
        "ledger_id": transfer.ledger_id,
        "id": transfer.id,
        "status": transfer.status.value,
        "description": transfer.description,
        "metadata": dump_json(transfer.metadata),
        "reverses_pk": reverses_pk,
        "reversed_amount": transfer.reversed_amount,
        "held_amount": transfer.held_amount,
        "expires_at": maybe_to_micros(transfer.expires_at),
        "request_hash": transfer.request_hash,
        "created_at": to_micros(transfer.created_at),
        "posted_at": maybe_to_micros(transfer.posted_at),
    }


def _leg_rows(transfer: Transfer, account_pks: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "transfer_pk": transfer.pk,
            "position": position,
            "account_pk": account_pks[leg.account_id],
            "direction": leg.direction.value,
            "amount": leg.amount,
        }
        for position, leg in enumerate(transfer.legs)
    ]


class SqlTransferRepository(SqlRepository):
    async def add(
        self, transfer: Transfer, account_pks: dict[str, int], *, reverses_pk: int | None = None
    ) -> Transfer:
        [added] = await self._add([(transfer, account_pks)], reverses_pk)
        return added

    async def add_many(self, transfers: Sequence[tuple[Transfer, dict[str, int]]]) -> list[Transfer]:
        return await self._add(transfers, None) if transfers else []

    async def _add(
        self, transfers: Sequence[tuple[Transfer, dict[str, int]]], reverses_pk: int | None
    ) -> list[Transfer]:
        self._tx.mark_written()
        rows = [_row(transfer, reverses_pk) for transfer, _ in transfers]
        if self._postgres:
            by_id = {row.id: row.pk for row in await self._conn.execute(_insert, rows)}
            pks: Sequence[int] = [by_id[transfer.id] for transfer, _ in transfers]
        else:
            pks = await self._sqlite_added(_insert_sqlite, rows)
        added = [
            (transfer.stored_as(pk), account_pks)
            for (transfer, account_pks), pk in zip(transfers, pks, strict=True)
        ]
        await self._conn.execute(
            _insert_legs, [leg for transfer, account_pks in added for leg in _leg_rows(transfer, account_pks)]
        )
        return [transfer for transfer, _ in added]

    async def get(self, ledger_id: str, transfer_id: str) -> Transfer | None:
        return await self._one(_by_id, {"ledger_id": ledger_id, "id": transfer_id})

    async def get_many(self, ledger_id: str, transfer_ids: Sequence[str]) -> dict[str, Transfer]:
        rows = (await self._conn.execute(_by_ids, {"ledger_id": ledger_id, "ids": list(transfer_ids)})).all()
        legs = await self._legs([row.pk for row in rows])
        return {row.id: _transfer(row, legs[row.pk]) for row in rows}

    async def lock(self, ledger_id: str, transfer_id: str) -> Transfer | None:
        # FOR UPDATE on PostgreSQL; on SQLite the write transaction already holds the database lock.
        params = {"ledger_id": ledger_id, "id": transfer_id}
        return await self._one(self._locking(_by_id_for_update, _by_id), params)

    async def lock_by_pk(self, pk: int) -> Transfer | None:
        return await self._one(self._locking(_by_pk_for_update, _by_pk), {"pk": pk})

    async def save(self, transfer: Transfer) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            _save,
            {
                "t_pk": transfer.pk,
                "t_status": transfer.status.value,
                "t_posted_at": maybe_to_micros(transfer.posted_at),
                "t_held_amount": transfer.held_amount,
                "t_reversed_amount": transfer.reversed_amount,
            },
        )

    async def save_leg_amounts(self, transfer: Transfer) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            _save_leg,
            [
                {"l_transfer_pk": transfer.pk, "l_position": position, "l_amount": leg.amount}
                for position, leg in enumerate(transfer.legs)
            ],
        )

    def _locking(self, for_update: Any, plain: Any) -> Any:
        return plain if self._conn.dialect.name == "sqlite" else for_update

    async def _one(self, query: Any, params: dict[str, Any]) -> Transfer | None:
        row = (await self._conn.execute(query, params)).first()
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
        now: datetime,
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
            query = query.where(_status_at(status, to_micros(now)))
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
