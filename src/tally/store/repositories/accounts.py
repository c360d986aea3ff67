"""Accounts in SQL, in whichever shape the schema holds their balances (ADR 0034).

Until the backfill of ``account_balances`` has finished, balances are read and written as columns of
``accounts`` (the ``_old`` statements); from then on, and after the contract step, in
``account_balances`` (the statements on ``t.accounts`` joined with ``t.account_balances``).
``BalanceShape.uses_new_table`` picks one per statement; the schema's triggers keep the other side
equal while both exist.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, case, column, func, insert, select, table, text, update

from tally.domain.accounts import Account, AccountStatus, Balance, Bounds, NormalBalance
from tally.services.ports import Page
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, load_json, to_micros
from tally.store.repositories.base import SqlRepository, page_of

_a = t.accounts
_b = t.account_balances
_ATTRIBUTES = [c.name for c in _a.columns]
_BALANCES = ["posted", "pending_debits", "pending_credits", "version"]


class SchemaNotExpanded(RuntimeError):
    """The backfill ran against a schema that has no ``account_balances`` yet."""


# The accounts table as it was before the balances moved (revision 0000_baseline).
_old = table("accounts", *(column(name) for name in [*_ATTRIBUTES, *_BALANCES]))


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
# The account as the API sees it changed when its attributes or its balances last did.
_updated_at = case((_b.c.updated_at > _a.c.updated_at, _b.c.updated_at), else_=_a.c.updated_at)
_new_columns = (
    *(c for c in _a.columns if c.name != "updated_at"),
    *(_b.c[name] for name in _BALANCES),
    _updated_at.label("updated_at"),
)
_NEW = select(*_new_columns).select_from(_a.join(_b, _b.c.account_pk == _a.c.pk))
_OLD = select(*_old.columns).select_from(_old)


def _by_id(base: Select[Any], accounts: Any) -> Select[Any]:
    return base.where(accounts.c.ledger_id == bindparam("ledger_id"), accounts.c.id == bindparam("id"))


def _many_by_id(base: Select[Any], accounts: Any) -> Select[Any]:
    ids: Any = bindparam("ids", expanding=True)
    return base.where(accounts.c.ledger_id == bindparam("ledger_id"), accounts.c.id.in_(ids))


_insert_old = insert(_old).returning(_old.c.pk)
_insert_new = insert(_a).returning(_a.c.pk)
_by_id_old, _by_id_new = _by_id(_OLD, _old), _by_id(_NEW, _a)
_many_old, _many_new = _many_by_id(_OLD, _old), _many_by_id(_NEW, _a)
# Row locks in pk order (see lock()), FOR NO KEY UPDATE. The new shape locks both rows of each
# account: under READ COMMITTED a row read only through the join would come from the snapshot the
# statement began with, before the lock wait, and a transfer that waited for another one on the
# same account would compute from the balances before it. A locked row is read again at its latest
# version once the lock is granted.
_lock_old = _many_old.order_by(_old.c.pk).with_for_update(key_share=True)
_lock_new = _many_new.order_by(_a.c.pk).with_for_update(key_share=True)
_scan_old = _OLD.where(_old.c.pk > bindparam("after")).order_by(_old.c.pk).limit(bindparam("limit"))
_scan_new = _NEW.where(_a.c.pk > bindparam("after")).order_by(_a.c.pk).limit(bindparam("limit"))
# Balance updates go through one prepared shape, executed for all touched accounts at once.
_balance_values: dict[str, Any] = {
    "posted": bindparam("b_posted"),
    "pending_debits": bindparam("b_pending_debits"),
    "pending_credits": bindparam("b_pending_credits"),
    "version": bindparam("b_version"),
    "updated_at": bindparam("b_updated_at"),
}
_save_balance_old = update(_old).where(_old.c.pk == bindparam("b_pk")).values(_balance_values)
_save_balance_new = update(_b).where(_b.c.account_pk == bindparam("b_pk")).values(_balance_values)
# The backfill: rows a write has already put into the new table are newer than the copy, so they stay.
_BACKFILL_BATCH = text(
    "SELECT count(*), max(pk) FROM (SELECT pk FROM accounts WHERE pk > :after ORDER BY pk LIMIT :limit) AS b"
)
_BACKFILL = text(
    "INSERT INTO account_balances (account_pk, posted, pending_debits, pending_credits, version, updated_at)"
    " SELECT pk, posted, pending_debits, pending_credits, version, updated_at FROM accounts"
    " WHERE pk > :after AND pk <= :last"
    " ON CONFLICT (account_pk) DO NOTHING"
)


class SqlAccountRepository(SqlRepository):
    @property
    def _new(self) -> bool:
        return self._tx.balance_shape.uses_new_table

    async def add(self, account: Account) -> Account:
        self._tx.mark_written()
        attributes = {
            "ledger_id": account.ledger_id,
            "id": account.id,
            "name": account.name,
            "currency": account.currency,
            "normal_balance": account.normal_balance.value,
            "min_balance": account.bounds.min_balance,
            "max_balance": account.bounds.max_balance,
            "status": account.status.value,
            "metadata": dump_json(account.metadata),
            "request_hash": account.request_hash,
            "created_at": to_micros(account.created_at),
            "updated_at": to_micros(account.updated_at),
        }
        balances = {
            "posted": account.balance.posted,
            "pending_debits": account.balance.pending_debits,
            "pending_credits": account.balance.pending_credits,
            "version": account.version,
        }
        if self._new:
            pk = (await self._conn.execute(_insert_new, attributes)).scalar_one()
            # While the old columns exist a trigger has already added the row (with their defaults).
            values = {**balances, "updated_at": attributes["updated_at"]}
            row = self._upsert(_b).values(account_pk=pk, **values)
            await self._conn.execute(row.on_conflict_do_update(index_elements=[_b.c.account_pk], set_=values))
        else:
            pk = (await self._conn.execute(_insert_old, {**attributes, **balances})).scalar_one()
        added = replace(account, pk=pk)
        self._tx.changed([added])
        return added

    async def get(self, ledger_id: str, account_id: str) -> Account | None:
        query = _by_id_new if self._new else _by_id_old
        row = (await self._conn.execute(query, {"ledger_id": ledger_id, "id": account_id})).first()
        return None if row is None else account_from_row(row)

    async def lock(self, ledger_id: str, account_ids: Sequence[str]) -> dict[str, Account]:
        # On PostgreSQL, FOR NO KEY UPDATE in pk order: every writer takes account row locks in one
        # order, so two transfers over the same accounts never deadlock, and the KEY SHARE locks
        # that inserting legs and entries takes through their foreign keys never conflict with it
        # (ADR 0020). SQLite has no row locks (its write transaction holds the database's write
        # lock), and an ORDER BY there would steer its planner off the (ledger_id, id) index.
        new = self._new
        if self._conn.dialect.name == "sqlite":
            query = _many_new if new else _many_old
        else:
            query = _lock_new if new else _lock_old
        params = {"ledger_id": ledger_id, "ids": list(account_ids)}
        rows = (await self._conn.execute(query, params)).all()
        self._tx.locked(row.updated_at for row in rows)
        return {row.id: account_from_row(row) for row in rows}

    async def save_balances(self, accounts: Sequence[Account], at: datetime) -> None:
        self._tx.mark_written()
        self._tx.changed(replace(a, updated_at=at) for a in accounts)
        micros = to_micros(at)
        await self._conn.execute(
            _save_balance_new if self._new else _save_balance_old,
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
        # Only attributes: the same columns in every shape of the schema.
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
        accounts: Any = _a if self._new else _old
        query = (_NEW if self._new else _OLD).where(accounts.c.ledger_id == ledger_id)
        if currency is not None:
            query = query.where(accounts.c.currency == currency)
        if status is not None:
            query = query.where(accounts.c.status == status.value)
        if after is not None:
            query = query.where(accounts.c.pk > after)
        rows = (await self._conn.execute(query.order_by(accounts.c.pk).limit(limit + 1))).all()
        return page_of(rows, limit, account_from_row, lambda row: row.pk)

    async def scan(self, after_pk: int | None, limit: int) -> builtins.list[Account]:
        query = _scan_new if self._new else _scan_old
        rows = (await self._conn.execute(query, {"after": after_pk or 0, "limit": limit})).all()
        return [account_from_row(row) for row in rows]

    async def count(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(_a))).scalar_one())

    async def backfill_balances(self, after_pk: int | None, limit: int) -> tuple[int, int | None]:
        shape = self._tx.balance_shape
        if not shape.new_table:
            raise SchemaNotExpanded(
                "account_balances does not exist yet: run `tally db upgrade` first, then the backfill."
            )
        if not shape.old_columns:
            return 0, None  # contracted: the table is all there is
        self._tx.mark_written()
        params = {"after": after_pk or 0, "limit": limit}
        batch: Any = (await self._conn.execute(_BACKFILL_BATCH, params)).one()
        visited, last = batch
        if last is None:
            return 0, None
        await self._conn.execute(_BACKFILL, {"after": params["after"], "last": last})
        return int(visited), int(last)
