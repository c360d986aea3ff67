"""Sums over entries for the ``reconcile`` job: per account, and per currency over every ledger.

Sums are exact whatever their size: a day's or an account's turnover can pass the 64-bit range
that each amount and each balance stay within (ADR 0002), and SQLite's ``sum`` then fails with an
integer overflow. Each amount is summed in two 32-bit halves (high and low) that cannot overflow
before 2^31 rows, and the halves are joined in Python's unbounded integers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, literal_column, select

from tally.domain.accounts import Balance
from tally.services.ports import BalanceAt
from tally.services.statement_ports import CurrencyTotals, EntryTotals
from tally.store import tables as t
from tally.store.repositories.base import SqlRepository

_e = t.entries
_a = t.accounts
_LOW = 0xFFFFFFFF


def _halves(amount: ColumnElement[int]) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    # Inline constants: PostgreSQL has ``bigint >> integer`` only, not a bound bigint shift.
    high = amount.op(">>")(literal_column("32"))
    low = amount.op("&")(literal_column(str(_LOW)))
    return func.sum(high).label("high"), func.sum(low).label("low")


def _joined(high: Any, low: Any) -> int:
    return (int(high or 0) << 32) + int(low or 0)


_by_account = (
    select(_e.c.account_pk, _e.c.kind, _e.c.direction, *_halves(_e.c.amount))
    .where(_e.c.account_pk.in_(bindparam("pks", expanding=True)))
    .group_by(_e.c.account_pk, _e.c.kind, _e.c.direction)
)
_last = _e.alias("last_entry")
_last_entries = select(
    _a.c.pk,
    select(_last.c.pk)
    .where(_last.c.account_pk == _a.c.pk)
    .order_by(_last.c.created_at.desc(), _last.c.pk.desc())
    .limit(1)
    .scalar_subquery()
    .label("last_pk"),
).where(_a.c.pk.in_(bindparam("pks", expanding=True)))
_entries_by_pk = select(
    _e.c.pk,
    _e.c.account_pk,
    _e.c.posted_after,
    _e.c.pending_debits_after,
    _e.c.pending_credits_after,
    _e.c.account_version,
).where(_e.c.pk.in_(bindparam("entry_pks", expanding=True)))
_by_currency = (
    select(_a.c.currency, _e.c.kind, _e.c.direction, *_halves(_e.c.amount))
    .select_from(_e.join(_a, _a.c.pk == _e.c.account_pk))
    .group_by(_a.c.currency, _e.c.kind, _e.c.direction)
    .order_by(_a.c.currency)
)

_FIELDS = {
    ("posting", "debit"): "posting_debits",
    ("posting", "credit"): "posting_credits",
    ("hold", "debit"): "held_debits",
    ("hold", "credit"): "held_credits",
    ("release", "debit"): "released_debits",
    ("release", "credit"): "released_credits",
}


class SqlReconciliationRepository(SqlRepository):
    async def entry_totals(self, account_pks: Sequence[int]) -> dict[int, EntryTotals]:
        if not account_pks:
            return {}
        pks = list(account_pks)
        sums: dict[int, dict[str, Any]] = defaultdict(dict)
        for row in (await self._conn.execute(_by_account, {"pks": pks})).all():
            sums[row.account_pk][_FIELDS[(row.kind, row.direction)]] = _joined(row.high, row.low)
        last_pks = [
            row.last_pk
            for row in (await self._conn.execute(_last_entries, {"pks": pks})).all()
            if row.last_pk is not None
        ]
        if last_pks:
            for row in (await self._conn.execute(_entries_by_pk, {"entry_pks": last_pks})).all():
                balance = Balance(row.posted_after, row.pending_debits_after, row.pending_credits_after)
                sums[row.account_pk]["last"] = BalanceAt(balance, row.account_version)
        return {pk: EntryTotals(**values) for pk, values in sums.items()}

    async def currency_totals(self) -> list[CurrencyTotals]:
        sums: dict[str, dict[str, int]] = defaultdict(dict)
        for row in (await self._conn.execute(_by_currency)).all():
            sums[row.currency][_FIELDS[(row.kind, row.direction)]] = _joined(row.high, row.low)
        return [CurrencyTotals(currency, **values) for currency, values in sorted(sums.items())]
