"""Daily statements in SQL: computed from entries, stored once per (account, day), read by range."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, bindparam, case, func, insert, select, text

from tally.domain.accounts import Direction, EntryKind
from tally.services.statement_ports import DayStatement
from tally.store import tables as t
from tally.store.codec import to_micros
from tally.store.repositories.base import SqlRepository

_e = t.entries
_s = t.statements
_r = t.job_runs

STATEMENTS_JOB = "statements"  # the job whose finished runs make a day's statements complete

# The day's entries through ix_entries_created_at_account_pk (an index-only range of one day).
_on_day = and_(_e.c.created_at >= bindparam("start"), _e.c.created_at < bindparam("end"))
_accounts_of_day = (
    select(_e.c.account_pk)
    .where(_on_day, _e.c.account_pk > bindparam("after"))
    .group_by(_e.c.account_pk)
    .order_by(_e.c.account_pk)
    .limit(bindparam("limit"))
)
_count_of_day = select(func.count(func.distinct(_e.c.account_pk))).where(_on_day)
# SQLite would rather walk ix_entries_account_pk_created_at_pk in account order, to skip sorting,
# and so read every entry of every later account; SQLAlchemy renders no index hint for SQLite, so
# its statements name the index themselves (an error, not a silent scan, should it ever go).
_BY_DAY = (
    "FROM entries INDEXED BY ix_entries_created_at_account_pk "
    "WHERE created_at >= :start AND created_at < :end"
)
_accounts_of_day_sqlite = text(
    f"SELECT account_pk {_BY_DAY} AND account_pk > :after "
    "GROUP BY account_pk ORDER BY account_pk LIMIT :limit"
)
_count_of_day_sqlite = text(f"SELECT count(DISTINCT account_pk) {_BY_DAY}")


def _last_posting_before(moment: str) -> ScalarSelect[Any]:
    """The ``posted_after`` of the outer row's account's last posting before ``moment`` (a bind
    name): one backwards step on ix_entries_account_pk_created_at_pk per account."""
    inner = _e.alias("last_posting")
    return (
        select(inner.c.posted_after)
        .where(
            inner.c.account_pk == _e.c.account_pk,
            inner.c.kind == EntryKind.POSTING.value,
            inner.c.created_at < bindparam(moment),
        )
        .order_by(inner.c.created_at.desc(), inner.c.pk.desc())
        .limit(1)
        .scalar_subquery()
    )


def _sum_of(direction: Direction) -> ColumnElement[Any]:
    return func.sum(case((_e.c.direction == direction.value, _e.c.amount), else_=0))


_day_sums = (
    select(
        _e.c.account_pk,
        _sum_of(Direction.DEBIT).label("debits"),
        _sum_of(Direction.CREDIT).label("credits"),
        func.count().label("postings"),
        func.coalesce(_last_posting_before("start"), 0).label("opening"),
        _last_posting_before("end").label("closing"),
    )
    .where(
        _e.c.account_pk.in_(bindparam("pks", expanding=True)),
        _e.c.kind == EntryKind.POSTING.value,
        _on_day,
    )
    .group_by(_e.c.account_pk)
    .order_by(_e.c.account_pk)
)
_insert = insert(_s)
_of_account = (
    select(_s)
    .where(
        _s.c.account_pk == bindparam("account_pk"),
        _s.c.day >= bindparam("first"),
        _s.c.day <= bindparam("last"),
    )
    .order_by(_s.c.day)
)
# Periods are YYYY-MM-DD text, so the primary key (job, period) serves the range in day order.
_finished = (
    select(_r.c.period)
    .where(
        _r.c.job == STATEMENTS_JOB,
        _r.c.period >= bindparam("first"),
        _r.c.period <= bindparam("last"),
        _r.c.status == "finished",
    )
    .order_by(_r.c.period)
    .limit(bindparam("limit"))
)
_posted_before = (
    select(_e.c.posted_after)
    .where(
        _e.c.account_pk == bindparam("account_pk"),
        _e.c.kind == EntryKind.POSTING.value,
        _e.c.created_at < bindparam("at"),
    )
    .order_by(_e.c.created_at.desc(), _e.c.pk.desc())
    .limit(1)
)


class SqlStatementRepository(SqlRepository):
    async def accounts_with_entries(
        self, start: datetime, end: datetime, *, after_pk: int | None, limit: int
    ) -> list[int]:
        params = {"start": to_micros(start), "end": to_micros(end), "after": after_pk or 0, "limit": limit}
        query = _accounts_of_day if self._postgres else _accounts_of_day_sqlite
        return list((await self._conn.execute(query, params)).scalars())

    async def count_accounts_with_entries(self, start: datetime, end: datetime) -> int:
        params = {"start": to_micros(start), "end": to_micros(end)}
        query = _count_of_day if self._postgres else _count_of_day_sqlite
        return int((await self._conn.execute(query, params)).scalar_one())

    async def compute(
        self, account_pks: Sequence[int], day: date, start: datetime, end: datetime
    ) -> list[DayStatement]:
        if not account_pks:
            return []
        params = {"pks": list(account_pks), "start": to_micros(start), "end": to_micros(end)}
        rows = (await self._conn.execute(_day_sums, params)).all()
        return [
            DayStatement(
                account_pk=row.account_pk,
                day=day,
                opening_balance=int(row.opening),
                closing_balance=int(row.closing),
                debits=int(row.debits),
                credits=int(row.credits),
                postings=int(row.postings),
            )
            for row in rows
        ]

    async def add(self, statements: Sequence[DayStatement]) -> None:
        if not statements:
            return
        self._tx.mark_written()
        # A plain INSERT: an existing (account, day) raises an integrity error and rolls the step
        # back. The run's checkpoint is what prevents a second insert; reaching this error is a bug.
        await self._conn.execute(
            _insert,
            [
                {
                    "account_pk": s.account_pk,
                    "day": s.day.isoformat(),
                    "opening_balance": s.opening_balance,
                    "closing_balance": s.closing_balance,
                    "debits": s.debits,
                    "credits": s.credits,
                    "postings": s.postings,
                }
                for s in statements
            ],
        )

    async def of_account(self, account_pk: int, first: date, last: date) -> list[DayStatement]:
        params = {"account_pk": account_pk, "first": first.isoformat(), "last": last.isoformat()}
        return [
            DayStatement(
                account_pk=row.account_pk,
                day=date.fromisoformat(row.day),
                opening_balance=row.opening_balance,
                closing_balance=row.closing_balance,
                debits=row.debits,
                credits=row.credits,
                postings=row.postings,
            )
            for row in (await self._conn.execute(_of_account, params)).all()
        ]

    async def finished_days(self, first: date, last: date, limit: int) -> list[date]:
        params = {"first": first.isoformat(), "last": last.isoformat(), "limit": limit}
        return [date.fromisoformat(p) for p in (await self._conn.execute(_finished, params)).scalars()]

    async def posted_before(self, account_pk: int, at: datetime) -> int:
        params = {"account_pk": account_pk, "at": to_micros(at)}
        found = (await self._conn.execute(_posted_before, params)).scalar()
        return int(found) if found is not None else 0
