"""The unit of work over SQL: one ``SqlTransaction`` per database transaction, and the factory.

The composition root (``bootstrap.open_database``) picks the adapter from the URL
(``store.sqlite`` or ``store.postgres``). Every adapter hands out ``SqlTransaction`` objects whose
repositories run SQLAlchemy Core statements on one connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime

from tally.domain.accounts import Account
from tally.domain.errors import TransientConflict
from tally.services.audit import AuditRepository
from tally.services.batch_ports import TransferBatchRepository
from tally.services.job_run_ports import JobRunRepository
from tally.services.ports import (
    AccountRepository,
    ApiKeyRepository,
    Committed,
    EntryRepository,
    EventRepository,
    EventsListener,
    HoldRepository,
    IdempotencyRepository,
    InstanceRepository,
    LedgerRepository,
    TransferRepository,
)
from tally.services.queue_ports import InboxRepository, JobRepository
from tally.services.statement_ports import ReconciliationRepository, StatementRepository
from tally.services.webhook_ports import DeliveryRepository, WebhookRepository
from tally.store.balance_shape import BalanceShape
from tally.store.codec import from_micros, to_micros
from tally.store.repositories.accounts import SqlAccountRepository
from tally.store.repositories.audit import SqlAuditRepository
from tally.store.repositories.base import SqlConnection
from tally.store.repositories.batches import SqlTransferBatchRepository
from tally.store.repositories.entries import SqlEntryRepository, SqlIdempotencyRepository
from tally.store.repositories.events import SqlEventRepository
from tally.store.repositories.holds import SqlHoldRepository
from tally.store.repositories.job_runs import SqlJobRunRepository
from tally.store.repositories.jobs import SqlInboxRepository, SqlJobRepository
from tally.store.repositories.ledgers import (
    SqlApiKeyRepository,
    SqlInstanceRepository,
    SqlLedgerRepository,
)
from tally.store.repositories.reconciliation import SqlReconciliationRepository
from tally.store.repositories.statements import SqlStatementRepository
from tally.store.repositories.transfers import SqlTransferRepository
from tally.store.repositories.webhooks import SqlDeliveryRepository, SqlWebhookRepository


class SqlTransaction:
    """The unit of work of one database transaction (implements ``services.ports.Transaction``)."""

    def __init__(
        self, conn: SqlConnection, now: Callable[[], Awaitable[int]], shape: BalanceShape | None = None
    ) -> None:
        self.connection = conn  # for statements outside the repositories (jobs, plan checks)
        self.balance_shape = shape or BalanceShape()  # the adapter's view of the schema (ADR 0034)
        self._now = now
        self._at: datetime | None = None
        self._wrote = False
        self.event_pks: list[int] = []  # of the events this transaction added
        self.queues: set[str] = set()  # queues this transaction added jobs to (wake-ups after commit)
        # What a cache may hold that this transaction changed: told to the commit listener (ADR 0027).
        self.changed_accounts: dict[int, Account] = {}
        self.revoked_keys: list[bytes] = []
        self.ledgers: LedgerRepository = SqlLedgerRepository(conn, self)
        self.keys: ApiKeyRepository = SqlApiKeyRepository(conn, self)
        self.accounts: AccountRepository = SqlAccountRepository(conn, self)
        self.transfers: TransferRepository = SqlTransferRepository(conn, self)
        self.holds: HoldRepository = SqlHoldRepository(conn, self)
        self.entries: EntryRepository = SqlEntryRepository(conn, self)
        self.idempotency: IdempotencyRepository = SqlIdempotencyRepository(conn, self)
        self.events: EventRepository = SqlEventRepository(conn, self)
        self.instance: InstanceRepository = SqlInstanceRepository(conn, self)
        self.jobs: JobRepository = SqlJobRepository(conn, self)
        self.inbox: InboxRepository = SqlInboxRepository(conn, self)
        self.webhooks: WebhookRepository = SqlWebhookRepository(conn, self)
        self.deliveries: DeliveryRepository = SqlDeliveryRepository(conn, self)
        self.batches: TransferBatchRepository = SqlTransferBatchRepository(conn, self)
        self.statements: StatementRepository = SqlStatementRepository(conn, self)
        self.reconciliation: ReconciliationRepository = SqlReconciliationRepository(conn, self)
        self.job_runs: JobRunRepository = SqlJobRunRepository(conn, self)
        self.audit: AuditRepository = SqlAuditRepository(conn, self)

    @property
    def wrote(self) -> bool:
        return self._wrote

    def mark_written(self) -> None:
        self._wrote = True

    def queued(self, queue: str) -> None:
        self.queues.add(queue)

    def changed(self, accounts: Iterable[Account]) -> None:
        for account in accounts:
            self.changed_accounts[account.pk] = account

    def committed(self, covers: int) -> Committed | None:
        """What the commit listener hears of this transaction, ``None`` when nothing cached changed."""
        if not (self.changed_accounts or self.revoked_keys):
            return None
        return Committed(tuple(self.changed_accounts.values()), tuple(self.revoked_keys), covers)

    def saw_events(self, pks: Sequence[int]) -> None:
        self.event_pks.extend(pks)

    def locked(self, changed_at: Iterable[int]) -> None:
        """Rows were locked that last changed at ``changed_at`` (microseconds).

        A write reads its time after its locks (``services.postings.lock_accounts``), so a row that
        changed at or after a time already fixed means this transaction fixed it before waiting
        behind that change; dating its entries then would put them before the change they follow.
        The transaction is run again instead (ADR 0020).
        """
        if self._at is not None and max(changed_at, default=0) >= to_micros(self._at):
            raise TransientConflict("Another transaction changed a locked row after this one's time.")

    async def now(self) -> datetime:
        if self._at is None:
            self._at = from_micros(await self._now())
        return self._at


@contextmanager
def telling(listener: EventsListener | None, events: Sequence[int]) -> Iterator[None]:
    """Around a COMMIT: ``events`` told to ``listener`` before it is sent, so that no reader of the
    feed can meet them first, and again if it raises (``Database.listen_to_commits``). A listener's
    own error never fails the write."""
    if listener is None or not events:
        yield
        return
    with suppress(Exception):
        listener.committing(events)
    try:
        yield
    except BaseException:
        with suppress(Exception):
            listener.abandoned(events)
        raise
