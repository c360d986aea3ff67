"""Accounts in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, update

from tally.domain.accounts import Account, AccountStatus, Balance, Bounds, NormalBalance
from tally.services.ports import Page
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, load_json, to_micros
from tally.store.repositories.base import SqlRepository, page_of

_a = t.accounts


def account_from_row(row: Row[Any]) -> Account:
    m = row._mapping
    return Account(
        pk=m["pk"],
        ledger_id=m["ledger_id"],
        id=m["id"],
        name=m["name"],
        currency=m["currency"],
        normal_balance=NormalBalance(m["normal_balance"]),
        bounds=Bounds(m["min_balance"], m["max_balance"]),
        status=AccountStatus(m["status"]),
        metadata=load_json(m["metadata"]),
        balance=Balance(m["posted"], m["pending_debits"], m["pending_credits"]),
        version=m["version"],
        created_at=from_micros(m["created_at"]),
        updated_at=from_micros(m["updated_at"]),
        request_hash=m["request_hash"],
    )


# Statements are built once (SQLAlchemy then reuses their compiled form) and take bound values.
_insert = insert(_a).returning(_a.c.pk)
_by_id = select(_a).where(_a.c.ledger_id == bindparam("ledger_id"), _a.c.id == bindparam("id"))
_many_by_id = select(_a).where(
    _a.c.ledger_id == bindparam("ledger_id"), _a.c.id.in_(bindparam("ids", expanding=True))
)
# Row locks in pk order (see lock()).
_many_by_id_for_update = _many_by_id.order_by(_a.c.pk).with_for_update(key_share=True)  # NO KEY UPDATE
# Balance updates go through one prepared shape, executed for all touched accounts at once.
_save_balance = (
    update(_a)
    .where(_a.c.pk == bindparam("b_pk"))
    .values(
        posted=bindparam("b_posted"),
        pending_debits=bindparam("b_pending_debits"),
        pending_credits=bindparam("b_pending_credits"),
        version=bindparam("b_version"),
        updated_at=bindparam("b_updated_at"),
    )
)


class SqlAccountRepository(SqlRepository):
    async def add(self, account: Account) -> Account:
        self._tx.mark_written()
        result = await self._conn.execute(
            _insert,
            {
                "ledger_id": account.ledger_id,
                "id": account.id,
                "name": account.name,
                "currency": account.currency,
                "normal_balance": account.normal_balance.value,
                "min_balance": account.bounds.min_balance,
                "max_balance": account.bounds.max_balance,
                "status": account.status.value,
                "metadata": dump_json(account.metadata),
                "posted": account.balance.posted,
                "pending_debits": account.balance.pending_debits,
                "pending_credits": account.balance.pending_credits,
                "version": account.version,
                "request_hash": account.request_hash,
                "created_at": to_micros(account.created_at),
                "updated_at": to_micros(account.updated_at),
            },
        )
        added = replace(account, pk=result.scalar_one())
        self._tx.changed([added])
        return added

    async def get(self, ledger_id: str, account_id: str) -> Account | None:
        row = (await self._conn.execute(_by_id, {"ledger_id": ledger_id, "id": account_id})).first()
        return None if row is None else account_from_row(row)

    async def lock(self, ledger_id: str, account_ids: Sequence[str]) -> dict[str, Account]:
        # On PostgreSQL, FOR NO KEY UPDATE in pk order: every writer takes account row locks in one
        # order, so two transfers over the same accounts never deadlock, and the KEY SHARE locks
        # that inserting legs and entries takes through their foreign keys never conflict with it
        # (ADR 0020). SQLite has no row locks (its write transaction holds the database's write
        # lock), and an ORDER BY there would steer its planner off the (ledger_id, id) index.
        query = _many_by_id if self._conn.dialect.name == "sqlite" else _many_by_id_for_update
        params = {"ledger_id": ledger_id, "ids": list(account_ids)}
        rows = (await self._conn.execute(query, params)).all()
        self._tx.locked(row.updated_at for row in rows)
        return {row.id: account_from_row(row) for row in rows}

    async def save_balances(self, accounts: Sequence[Account], at: datetime) -> None:
        self._tx.mark_written()
        self._tx.changed(replace(a, updated_at=at) for a in accounts)
        micros = to_micros(at)
        await self._conn.execute(
            _save_balance,
            [
                {
                    "b_pk": a.pk,
                    "b_posted": a.balance.posted,
                    "b_pending_debits": a.balance.pending_debits,
                    "b_pending_credits": a.balance.pending_credits,
                    "b_version": a.version,
                    "b_updated_at": micros,
                }
                for a in sorted(accounts, key=lambda a: a.pk)
            ],
        )

    async def save(self, account: Account) -> None:
        self._tx.mark_written()
        self._tx.changed([account])
        await self._conn.execute(
            update(_a)
            .where(_a.c.pk == account.pk)
            .values(
                name=account.name,
                metadata=dump_json(account.metadata),
                status=account.status.value,
                min_balance=account.bounds.min_balance,
                max_balance=account.bounds.max_balance,
                updated_at=to_micros(account.updated_at),
            )
        )

    async def list(
        self,
        ledger_id: str,
        *,
        currency: str | None,
        status: AccountStatus | None,
        after: int | None,
        limit: int,
    ) -> Page[Account]:
        query = select(_a).where(_a.c.ledger_id == ledger_id)
        if currency is not None:
            query = query.where(_a.c.currency == currency)
        if status is not None:
            query = query.where(_a.c.status == status.value)
        if after is not None:
            query = query.where(_a.c.pk > after)
        rows = (await self._conn.execute(query.order_by(_a.c.pk).limit(limit + 1))).all()
        return page_of(rows, limit, account_from_row, lambda row: row.pk)
