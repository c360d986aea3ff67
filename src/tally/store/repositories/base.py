"""What every SQL repository shares: the connection of its transaction and write tracking."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Dialect, Executable, Insert, Result, Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tally.domain.accounts import Account
from tally.services.ports import Page
from tally.store.balance_shape import BalanceShape

_LAST_ROWID = select(func.last_insert_rowid())
R = TypeVar("R")
T = TypeVar("T")


class SqlConnection(Protocol):
    """What repositories need of a connection: SQLAlchemy Core execution, awaited.

    ``sqlalchemy.ext.asyncio.AsyncConnection`` has this shape, and so does the SQLite adapter in
    ``tally.store.sqlite``.
    """

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]: ...


class WriteTracker(Protocol):
    revoked_keys: list[bytes]  # secret hashes of keys this transaction revoked
    balance_shape: BalanceShape  # where account balances live in this schema (ADR 0034)

    def mark_written(self) -> None: ...
    def changed(self, accounts: Iterable[Account]) -> None: ...
    def saw_events(self, pks: Sequence[int]) -> None: ...
    def locked(self, changed_at: Iterable[int]) -> None: ...
    def queued(self, queue: str) -> None: ...


class SqlRepository:
    __slots__ = ("_conn", "_tx")

    def __init__(self, conn: SqlConnection, tx: WriteTracker) -> None:
        self._conn = conn
        self._tx = tx

    @property
    def _postgres(self) -> bool:
        return self._conn.dialect.name == "postgresql"

    def _upsert(self, table: Table) -> Any:
        """An ``INSERT`` of this dialect, which has ``on_conflict_do_nothing``/``_do_update``."""
        return (pg_insert if self._postgres else sqlite_insert)(table)

    async def _sqlite_added(self, insert: Insert, rows: Sequence[dict[str, Any]]) -> range:
        """Insert ``rows`` on SQLite, in order, without RETURNING; their pks, in the same order.

        A write holds the file's write lock, and SQLite gives a row inserted without a rowid one
        more than the table's largest (no table here is AUTOINCREMENT), so one statement's rows
        get consecutive pks, ending at ``last_insert_rowid()``. Without RETURNING an executemany
        runs on the prepared plans (``store.statement_plans``), not through SQLAlchemy's execution
        layer, which cost more CPU than the insert itself (ADR 0045).
        """
        await self._conn.execute(insert, list(rows))
        last: int = (await self._conn.execute(_LAST_ROWID)).scalar_one()
        return range(last - len(rows) + 1, last + 1)

    def _greatest(self, *values: Any) -> Any:
        """The larger of ``values`` in SQL: ``greatest`` on PostgreSQL, ``max`` on SQLite."""
        return (func.greatest if self._postgres else func.max)(*values)


def page_of(
    rows: Sequence[R], limit: int, convert: Callable[[R], T], position: Callable[[R], int]
) -> Page[T]:
    """A page from ``limit + 1`` fetched rows: the extra row only tells that another page exists."""
    more = len(rows) > limit
    kept = rows[:limit]
    return Page([convert(row) for row in kept], position(kept[-1]) if more else None)
