"""What every SQL repository shares: the connection of its transaction and write tracking."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Dialect, Executable, Result

from tally.services.ports import Page

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
    def mark_written(self) -> None: ...
    def saw_event(self, position: int) -> None: ...
    def locked(self, changed_at: Iterable[int]) -> None: ...
    def queued(self, queue: str) -> None: ...


class SqlRepository:
    __slots__ = ("_conn", "_tx")

    def __init__(self, conn: SqlConnection, tx: WriteTracker) -> None:
        self._conn = conn
        self._tx = tx


def page_of(
    rows: Sequence[R], limit: int, convert: Callable[[R], T], position: Callable[[R], int]
) -> Page[T]:
    """A page from ``limit + 1`` fetched rows: the extra row only tells that another page exists."""
    more = len(rows) > limit
    kept = rows[:limit]
    return Page([convert(row) for row in kept], position(kept[-1]) if more else None)
