"""The open holds in SQL (``tables.holds``), one row per leg."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, func, insert, select

from tally.domain.accounts import Direction
from tally.services.ports import HeldLeg
from tally.store import tables as t
from tally.store.codec import maybe_from_micros, maybe_to_micros, to_micros
from tally.store.repositories.base import SqlRepository

_h = t.holds

# Statements are built once (SQLAlchemy then reuses their compiled form) and take bound values.
_insert = insert(_h)
_remove = delete(_h).where(_h.c.transfer_pk == bindparam("transfer_pk"))
# Served by ix_holds_account_pk_expires_at: a range per account, usually empty.
_due_on = select(_h).where(
    _h.c.account_pk.in_(bindparam("account_pks", expanding=True)), _h.c.expires_at <= bindparam("at")
)
# Served by ix_holds_expires_at, oldest expiry first.
_expiring = (
    select(_h.c.transfer_pk)
    .where(_h.c.expires_at <= bindparam("at"))
    .order_by(_h.c.expires_at, _h.c.transfer_pk)
    .limit(bindparam("rows"))
)

# Served by ix_holds_account_pk_expires_at: the first expiry in one account's range.
_next_expiry = select(func.min(_h.c.expires_at)).where(
    _h.c.account_pk == bindparam("account_pk"), _h.c.expires_at > bindparam("after")
)


class SqlHoldRepository(SqlRepository):
    async def add(self, legs: Sequence[HeldLeg]) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            _insert,
            [
                {
                    "transfer_pk": leg.transfer_pk,
                    "account_pk": leg.account_pk,
                    "direction": leg.direction.value,
                    "amount": leg.amount,
                    "expires_at": maybe_to_micros(leg.expires_at),
                }
                for leg in legs
            ],
        )

    async def remove(self, transfer_pk: int) -> None:
        self._tx.mark_written()
        await self._conn.execute(_remove, {"transfer_pk": transfer_pk})

    async def due(self, account_pks: Sequence[int], at: datetime) -> list[HeldLeg]:
        if not account_pks:
            return []
        rows = await self._conn.execute(_due_on, {"account_pks": list(account_pks), "at": to_micros(at)})
        return [
            HeldLeg(
                row.transfer_pk,
                row.account_pk,
                Direction(row.direction),
                row.amount,
                maybe_from_micros(row.expires_at),
            )
            for row in rows
        ]

    async def expiring(self, at: datetime, limit: int) -> list[int]:
        # A hold has a row per leg: ask for enough rows to find ``limit`` holds, then keep each once.
        rows = await self._conn.execute(_expiring, {"at": to_micros(at), "rows": limit * 4})
        return list(dict.fromkeys(row.transfer_pk for row in rows))[:limit]

    async def next_expiry(self, account_pk: int, after: datetime) -> datetime | None:
        found = await self._conn.execute(_next_expiry, {"account_pk": account_pk, "after": to_micros(after)})
        return maybe_from_micros(found.scalar())
