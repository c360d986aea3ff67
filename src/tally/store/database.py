"""The unit of work over SQL: one ``SqlTransaction`` per database transaction, and the factory.

``open_database`` picks the adapter from the URL. Every adapter hands out ``SqlTransaction``
objects whose repositories run SQLAlchemy Core statements on one connection.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tally.services.ports import (
    AccountRepository,
    ApiKeyRepository,
    EntryRepository,
    EventRepository,
    HoldRepository,
    IdempotencyRepository,
    InstanceRepository,
    LedgerRepository,
    TransferRepository,
)
from tally.store.codec import from_micros
from tally.store.repositories.accounts import SqlAccountRepository
from tally.store.repositories.base import SqlConnection
from tally.store.repositories.entries import (
    SqlEntryRepository,
    SqlEventRepository,
    SqlIdempotencyRepository,
)
from tally.store.repositories.holds import SqlHoldRepository
from tally.store.repositories.ledgers import (
    SqlApiKeyRepository,
    SqlInstanceRepository,
    SqlLedgerRepository,
)
from tally.store.repositories.transfers import SqlTransferRepository


class SqlTransaction:
    """The unit of work of one database transaction (implements ``services.ports.Transaction``)."""

    def __init__(self, conn: SqlConnection, now: Callable[[], int]) -> None:
        self.connection = conn  # for statements outside the repositories (jobs, plan checks)
        self._now = now
        self._at: datetime | None = None
        self._wrote = False
        self.last_event = 0
        self.ledgers: LedgerRepository = SqlLedgerRepository(conn, self)
        self.keys: ApiKeyRepository = SqlApiKeyRepository(conn, self)
        self.accounts: AccountRepository = SqlAccountRepository(conn, self)
        self.transfers: TransferRepository = SqlTransferRepository(conn, self)
        self.holds: HoldRepository = SqlHoldRepository(conn, self)
        self.entries: EntryRepository = SqlEntryRepository(conn, self)
        self.idempotency: IdempotencyRepository = SqlIdempotencyRepository(conn, self)
        self.events: EventRepository = SqlEventRepository(conn, self)
        self.instance: InstanceRepository = SqlInstanceRepository(conn, self)

    @property
    def wrote(self) -> bool:
        return self._wrote

    def mark_written(self) -> None:
        self._wrote = True

    def saw_event(self, position: int) -> None:
        self.last_event = max(self.last_event, position)

    async def now(self) -> datetime:
        if self._at is None:
            self._at = from_micros(self._now())
        return self._at
