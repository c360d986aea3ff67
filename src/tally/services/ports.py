"""The ports: what the use cases need from a database, as Protocols.

A ``Transaction`` is the unit of work: repositories that read and write inside one database
transaction. Only the ``Database`` that opened it commits it, when its ``async with`` block ends
without an error; no repository commits on its own.

Write transactions hold the database's write lock from their first statement (SQLite
``BEGIN IMMEDIATE``; PostgreSQL row locks taken in account ``pk`` order), so a check made inside
one stays true until commit.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from tally.domain.accounts import Account, AccountStatus, Balance, Direction, EntryKind
from tally.domain.keys import ApiKey, Ledger
from tally.domain.transfers import Transfer, TransferStatus

if TYPE_CHECKING:
    from tally.services.audit import AuditRepository
    from tally.services.batch_ports import TransferBatchRepository
    from tally.services.job_run_ports import JobRunRepository
    from tally.services.queue_ports import InboxRepository, JobRepository
    from tally.services.statement_ports import ReconciliationRepository, StatementRepository
    from tally.services.webhook_ports import DeliveryRepository, WebhookRepository

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; ``next_after`` is the position to continue from, ``None`` on the last."""

    items: list[T]
    next_after: int | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One movement of one account's balance: the append-only record its balance is the sum of.

    Postings move ``posted``; holds and releases move the pending sides (ADR 0014).
    """

    pk: int
    account_pk: int
    transfer_id: str
    kind: EntryKind
    direction: Direction
    amount: int
    posted_after: int
    pending_debits_after: int
    pending_credits_after: int
    account_version: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewEntry:
    account_pk: int
    kind: EntryKind
    direction: Direction
    amount: int
    balance_after: Balance
    account_version: int


@dataclass(frozen=True, slots=True)
class BalanceAt:
    """The balance parts and version after the last change at or before a moment."""

    balance: Balance
    version: int


@dataclass(frozen=True, slots=True)
class HeldLeg:
    """One leg of an open hold: what it holds on one account, and when it expires."""

    transfer_pk: int
    account_pk: int
    direction: Direction
    amount: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A response kept under an idempotency key, replayed byte for byte."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    ledger_id: str
    key: str
    fingerprint: bytes
    reply: StoredReply
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewEvent:
    ledger_id: str
    type: str
    data: dict[str, Any]
    request_id: str | None


class LedgerRepository(Protocol):
    async def add(self, ledger: Ledger) -> None: ...
    async def get(self, ledger_id: str) -> Ledger | None: ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None: ...
    async def by_hash(self, secret_hash: bytes) -> ApiKey | None: ...
    async def get(self, ledger_id: str, key_id: str) -> ApiKey | None: ...
    async def list(self, ledger_id: str, *, after: int | None, limit: int) -> Page[ApiKey]: ...
    async def revoke(self, ledger_id: str, key_id: str, at: datetime) -> None: ...
    async def expire(self, ledger_id: str, key_id: str, at: datetime) -> None:
        """Make the key expire at ``at``, or keep its expiry when that is earlier."""
        ...

    async def touch(self, key_id: str, at: datetime) -> None: ...
    async def count_usage(self, key_id: str, day: str, requests: int) -> None:
        """Add ``requests`` to the key's count for ``day`` (YYYY-MM-DD, UTC)."""
        ...

    async def usage(self, key_id: str) -> Sequence[tuple[str, int]]:
        """The key's ``(day, requests)``, oldest day first."""
        ...


class AccountRepository(Protocol):
    async def add(self, account: Account) -> Account:
        """Insert and return the account with its ``pk``."""
        ...

    async def get(self, ledger_id: str, account_id: str) -> Account | None: ...

    async def lock(self, ledger_id: str, account_ids: Sequence[str]) -> dict[str, Account]:
        """The accounts that exist among ``account_ids``, locked for update in ``pk`` order."""
        ...

    async def save_balances(self, accounts: Sequence[Account], at: datetime) -> None:
        """Write balances and versions of ``accounts``, in ``pk`` order."""
        ...

    async def save(self, account: Account) -> None:
        """Write name, metadata, status, bounds and ``updated_at``."""
        ...

    async def list(
        self,
        ledger_id: str,
        *,
        currency: str | None,
        status: AccountStatus | None,
        after: int | None,
        limit: int,
    ) -> Page[Account]: ...

    async def scan(self, after_pk: int | None, limit: int) -> builtins.list[Account]:
        """Up to ``limit`` accounts of every ledger, in ``pk`` order after ``after_pk`` (batch jobs)."""
        ...

    async def count(self) -> int:
        """How many accounts there are, in every ledger."""
        ...

    async def backfill_balances(self, after_pk: int | None, limit: int) -> tuple[int, int | None]:
        """Copy balances of up to ``limit`` accounts after ``after_pk`` into their new table, leaving
        rows already there; return (accounts visited, the last pk visited or ``None`` when done).
        Only meaningful while the schema is expanded (ADR 0034)."""
        ...


class TransferRepository(Protocol):
    async def add(
        self, transfer: Transfer, account_pks: dict[str, int], *, reverses_pk: int | None = None
    ) -> Transfer:
        """Insert the transfer and its legs; return it with its ``pk``."""
        ...

    async def add_many(self, transfers: Sequence[tuple[Transfer, dict[str, int]]]) -> list[Transfer]:
        """Insert transfers (none a reversal) and their legs, one statement per table; return them
        with their ``pk``, in order. Each comes with the pks of its legs' accounts, by account id."""
        ...

    async def get(self, ledger_id: str, transfer_id: str) -> Transfer | None:
        """The transfer as stored: a due hold still reads ``pending`` here (see ``Transfer.seen_at``)."""
        ...

    async def get_many(self, ledger_id: str, transfer_ids: Sequence[str]) -> dict[str, Transfer]:
        """Those of ``transfer_ids`` that exist, as ``get`` reads them, by id."""
        ...

    async def lock(self, ledger_id: str, transfer_id: str) -> Transfer | None:
        """The transfer, locked for update until the transaction ends."""
        ...

    async def lock_by_pk(self, pk: int) -> Transfer | None: ...

    async def save(self, transfer: Transfer) -> None:
        """Write status, ``posted_at``, ``held_amount`` and ``reversed_amount`` (not the legs)."""
        ...

    async def save_leg_amounts(self, transfer: Transfer) -> None:
        """Write the amount of every leg: after a partial post, the legs show what was posted."""
        ...

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
        """Newest first; ``status`` filters on the status as read at ``now`` (due holds are expired)."""
        ...


class HoldRepository(Protocol):
    """The open holds, one row per leg: the working set that expiry is decided from."""

    async def add(self, legs: Sequence[HeldLeg]) -> None: ...

    async def remove(self, transfer_pk: int) -> None:
        """Forget a hold that resolved (posted, voided or expired)."""
        ...

    async def due(self, account_pks: Sequence[int], at: datetime) -> list[HeldLeg]:
        """The legs on these accounts of holds whose ``expires_at`` is at or before ``at``."""
        ...

    async def expiring(self, at: datetime, limit: int) -> list[int]:
        """Transfer pks of holds due at ``at``, oldest expiry first, at most ``limit``."""
        ...

    async def next_expiry(self, account_pk: int, after: datetime) -> datetime | None:
        """The earliest expiry after ``after`` of an open hold on the account (until then, reads of
        it change only by a write)."""
        ...


class EntryRepository(Protocol):
    async def add_many(self, entries: Sequence[tuple[int, Sequence[NewEntry]]], at: datetime) -> None:
        """Append the entries of transfers, each given with its transfer's pk, in one statement."""
        ...

    async def list(self, account_pk: int, *, before: int | None, limit: int) -> Page[Entry]:
        """The postings of one account, newest first (holds and releases are not listed)."""
        ...

    async def balance_at(self, account_pk: int, at: datetime) -> BalanceAt | None:
        """The balance after the last entry at or before ``at``; ``None`` before the first."""
        ...


class IdempotencyRepository(Protocol):
    async def get(self, ledger_id: str, key: str) -> IdempotencyRecord | None: ...

    async def get_many(self, ledger_id: str, keys: Sequence[str]) -> dict[str, IdempotencyRecord]:
        """The records of those of ``keys`` that have one, by key."""
        ...

    async def add(self, record: IdempotencyRecord, *, keep_until: datetime) -> None: ...

    async def add_many(self, records: Sequence[IdempotencyRecord], *, keep_until: datetime) -> None:
        """Insert every record in one statement (a key already stored fails it: the primary key)."""
        ...

    async def count_expired(self, before: datetime) -> int:
        """How many records have a ``keep_until`` before ``before``."""
        ...

    async def purge(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` records whose ``keep_until`` is before ``before``, oldest first;
        how many."""
        ...


@dataclass(frozen=True, slots=True, order=True)
class FeedPosition:
    """Where an event stands in the feed: ordered by the writing transaction, then by pk (ADR 0024)."""

    xid: int
    pk: int


@dataclass(frozen=True, slots=True)
class EventKey:
    """An event's place in the feed and what it is about, without its data."""

    position: FeedPosition
    ledger_id: str
    type: str


@dataclass(frozen=True, slots=True)
class Event:
    pk: int
    id: str
    ledger_id: str
    type: str
    data: dict[str, Any]
    request_id: str | None
    created_at: datetime
    position: FeedPosition


class EventRepository(Protocol):
    async def add(self, event: NewEvent, at: datetime) -> int:
        """Append to the outbox; return the event's pk (on SQLite also its consistency token)."""
        ...

    async def add_many(self, events: Sequence[NewEvent], at: datetime) -> None:
        """Append events to the outbox in one statement."""
        ...

    async def position_of(self, event_id: str) -> tuple[str, FeedPosition] | None:
        """The ledger and feed position of an event, by id."""
        ...

    async def feed(
        self, ledger_id: str | None, after: FeedPosition | None, types: Sequence[str] | None, limit: int
    ) -> list[Event]:
        """Events after ``after`` in feed order (one ledger's, or all), of ``types`` when given.

        Only events whose transactions are older than every transaction still running are served,
        so an event can never appear later behind a position already handed out.
        """
        ...

    async def positions(
        self, after: FeedPosition | None, types: Sequence[str] | None, limit: int
    ) -> list[FeedPosition]:
        """The positions ``feed`` would serve (every ledger's), without reading the events."""
        ...

    async def keys(self, after: FeedPosition | None, limit: int) -> list[EventKey]:
        """What ``feed`` would serve (every ledger's, every type), as each event's position, ledger
        and type only: what the webhook dispatcher needs to know whether it concerns anyone."""
        ...

    async def get_many(self, pks: Sequence[int]) -> list[Event]:
        """The events of these pks, in feed order."""
        ...

    async def get(self, pk: int) -> Event | None: ...

    async def tail(self) -> FeedPosition | None:
        """The position of the newest event the feed serves now (``None``: it serves none)."""
        ...

    async def consumer_position(self, consumer: str) -> FeedPosition | None:
        """How far an internal feed consumer (the webhook dispatcher) has read."""
        ...

    async def advance(self, consumer: str, position: FeedPosition) -> None:
        """Record the consumer's new position (in the transaction of what it did with the events);
        a position behind the stored one changes nothing."""
        ...


class InstanceRepository(Protocol):
    """Settings of this Tally installation kept in the database, such as the root key's hash."""

    async def get(self, name: str) -> bytes | None: ...
    async def put_if_absent(self, name: str, value: bytes) -> bytes:
        """Store ``value`` unless a value exists; return the value that is stored."""
        ...


@dataclass(frozen=True, slots=True)
class Committed:
    """What a committed write changed that a cache may hold (ADR 0027).

    ``accounts`` as written (each with the ``updated_at`` of the write); ``revoked_keys`` the secret
    hashes of keys revoked. ``covers`` orders against ``Database.token_key``: these states include
    every write whose consistency token is at or below it, and no later write to the same rows.
    """

    accounts: tuple[Account, ...]
    revoked_keys: tuple[bytes, ...]
    covers: int


CommitListener = Callable[[Committed], Awaitable[None]]


class EventsListener(Protocol):
    """Hears the pks of the outbox events a commit writes (``Database.listen_to_commits``)."""

    def committing(self, events: Sequence[int]) -> None:
        """``events`` are about to be committed by this process: told before the COMMIT is sent,
        so that no reader of the feed can meet them first."""

    def abandoned(self, events: Sequence[int]) -> None:
        """The COMMIT of ``events`` failed: nothing of them was kept, and their pks may be given
        to another process's events (SQLite hands a freed rowid out again)."""


class Transaction(Protocol):
    jobs: JobRepository
    inbox: InboxRepository
    webhooks: WebhookRepository
    deliveries: DeliveryRepository
    batches: TransferBatchRepository
    ledgers: LedgerRepository
    keys: ApiKeyRepository
    accounts: AccountRepository
    transfers: TransferRepository
    holds: HoldRepository
    entries: EntryRepository
    idempotency: IdempotencyRepository
    events: EventRepository
    instance: InstanceRepository
    statements: StatementRepository
    reconciliation: ReconciliationRepository
    job_runs: JobRunRepository
    audit: AuditRepository

    @property
    def wrote(self) -> bool:
        """Whether any statement of this transaction changed a row."""
        ...

    async def now(self) -> datetime:
        """The database clock, fixed for the transaction and never behind an earlier commit."""
        ...


class Database(Protocol):
    def write(self) -> AbstractAsyncContextManager[Transaction, bool | None]:
        """A write transaction holding the write lock; commits when the block ends cleanly."""
        ...

    def read(self) -> AbstractAsyncContextManager[Transaction, bool | None]:
        """A read-only transaction on one consistent snapshot."""
        ...

    def background_read(self) -> AbstractAsyncContextManager[Transaction, bool | None]:
        """A read-only transaction on one consistent snapshot of the primary, for background work
        that reads much (a batch job's step): it holds no write lock, and its statements never hold
        the event loop (on SQLite they run in a worker thread; ADR 0044)."""
        ...

    def position(self) -> str:
        """A consistency token covering every write this process has committed."""
        ...

    @property
    def primary_up(self) -> bool:
        """Whether writes are believed to go through (PostgreSQL: the breaker is closed)."""
        ...

    def token_key(self, token: str) -> int:
        """A consistency token as a number that orders tokens; ``ValidationFailed`` when malformed."""
        ...

    def read_covers(self) -> int | None:
        """A ``token_key`` that the next ``read()`` is sure to include, or ``None`` when it may not
        (a read that may run on a replica)."""
        ...

    def listen_to_commits(self, listener: CommitListener, events: EventsListener | None = None) -> None:
        """Call ``listener`` after each write that changed accounts or revoked keys commits, before
        the write's block returns to its caller (so a response follows the listener's work).

        ``events`` hears the pks of the outbox events each commit writes before the COMMIT is sent,
        and again if it fails: a follower of the feed in this process never reads them as another
        process's, not even one whose read lands between the COMMIT and the writer's next turn
        on the event loop (ADR 0045, addendum)."""
        ...
