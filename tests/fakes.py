"""In-memory implementations of ``tally.services.ports`` for unit tests: dicts and lists, no SQL.

A write transaction works on a deep copy of the committed state and replaces it only when its
``async with`` block ends cleanly, so an exception rolls every repository back at once. Writes are
serialised by one ``asyncio.Lock``, like the SQL adapter's writer. Time comes from an injected clock.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar, cast

from tally.domain.accounts import Account, AccountStatus, Balance, EntryKind
from tally.domain.keys import ApiKey, Ledger
from tally.domain.transfers import Transfer, TransferStatus
from tally.services.audit import AuditAction, AuditEvent, AuditRepository
from tally.services.ports import (
    AccountRepository,
    ApiKeyRepository,
    BalanceAt,
    CommitListener,
    Entry,
    EntryRepository,
    Event,
    EventKey,
    EventRepository,
    EventsListener,
    FeedPosition,
    HeldLeg,
    HoldRepository,
    IdempotencyRecord,
    IdempotencyRepository,
    InstanceRepository,
    LedgerRepository,
    NewEntry,
    NewEvent,
    Page,
    TransferRepository,
)

if TYPE_CHECKING:
    from tally.services.batch_ports import TransferBatchRepository
    from tally.services.job_run_ports import JobRunRepository
    from tally.services.ports import Database, Transaction
    from tally.services.queue_ports import InboxRepository, JobRepository
    from tally.services.statement_ports import ReconciliationRepository, StatementRepository
    from tally.services.webhook_ports import DeliveryRepository, WebhookRepository

T = TypeVar("T")
Clock = Callable[[], datetime]
ONE_MICROSECOND = timedelta(microseconds=1)


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event: NewEvent
    created_at: datetime


@dataclass
class State:
    """Everything the fake database holds; rows are keyed by their surrogate ``pk``."""

    next_pk: int = 1
    last_write_at: datetime | None = None
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    keys: dict[int, ApiKey] = field(default_factory=dict)
    accounts: dict[int, Account] = field(default_factory=dict)
    transfers: dict[int, Transfer] = field(default_factory=dict)
    transfer_accounts: dict[int, set[int]] = field(default_factory=dict)
    holds: dict[tuple[int, int], HeldLeg] = field(default_factory=dict)
    key_usage: dict[tuple[str, str], int] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    idempotency: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)
    keep_until: dict[tuple[str, str], datetime] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)
    instance: dict[str, bytes] = field(default_factory=dict)
    consumers: dict[str, FeedPosition] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)

    def take_pk(self) -> int:
        pk = self.next_pk
        self.next_pk += 1
        return pk


def _page(items: Iterable[T], limit: int, position: Callable[[T], int]) -> Page[T]:
    rows = list(items)
    kept = rows[:limit]
    return Page(kept, position(kept[-1]) if len(rows) > limit else None)


class _Repository:
    def __init__(self, tx: FakeTransaction) -> None:
        self._state = tx.state
        self._written = tx.mark_written


class FakeLedgerRepository(_Repository):
    async def add(self, ledger: Ledger) -> None:
        self._written()
        self._state.ledgers[ledger.id] = ledger

    async def get(self, ledger_id: str) -> Ledger | None:
        return self._state.ledgers.get(ledger_id)


class FakeApiKeyRepository(_Repository):
    async def add(self, key: ApiKey) -> None:
        self._written()
        self._state.keys[self._state.take_pk()] = key

    async def by_hash(self, secret_hash: bytes) -> ApiKey | None:
        return next((k for k in self._state.keys.values() if k.secret_hash == secret_hash), None)

    async def get(self, ledger_id: str, key_id: str) -> ApiKey | None:
        return next(
            (k for k in self._state.keys.values() if (k.ledger_id, k.id) == (ledger_id, key_id)), None
        )

    async def list(self, ledger_id: str, *, after: int | None, limit: int) -> Page[ApiKey]:
        rows = [(pk, k) for pk, k in sorted(self._state.keys.items()) if k.ledger_id == ledger_id]
        page = _page([row for row in rows if after is None or row[0] > after], limit, lambda row: row[0])
        return Page([k for _, k in page.items], page.next_after)

    def _update(self, ledger_id: str | None, key_id: str, change: Callable[[ApiKey], ApiKey]) -> None:
        self._written()
        for pk, key in self._state.keys.items():
            if key.id == key_id and ledger_id in (None, key.ledger_id):
                self._state.keys[pk] = change(key)

    async def revoke(self, ledger_id: str, key_id: str, at: datetime) -> None:
        self._update(ledger_id, key_id, lambda key: replace(key, revoked_at=at))

    async def expire(self, ledger_id: str, key_id: str, at: datetime) -> None:
        def expiring(key: ApiKey) -> ApiKey:
            return replace(key, expires_at=at if key.expires_at is None else min(key.expires_at, at))

        self._update(ledger_id, key_id, expiring)

    async def touch(self, key_id: str, at: datetime) -> None:
        self._update(None, key_id, lambda key: replace(key, last_used_at=at))

    async def count_usage(self, key_id: str, day: str, requests: int) -> None:
        self._written()
        self._state.key_usage[key_id, day] = self._state.key_usage.get((key_id, day), 0) + requests

    async def usage(self, key_id: str) -> Sequence[tuple[str, int]]:
        return sorted((day, n) for (key, day), n in self._state.key_usage.items() if key == key_id)


class FakeAccountRepository(_Repository):
    async def add(self, account: Account) -> Account:
        if await self.get(account.ledger_id, account.id) is not None:
            raise ValueError(f"duplicate account id {account.id}")  # the SQL unique constraint
        self._written()
        stored = replace(account, pk=self._state.take_pk())
        self._state.accounts[stored.pk] = stored
        return stored

    async def get(self, ledger_id: str, account_id: str) -> Account | None:
        rows = self._state.accounts.values()
        return next((a for a in rows if (a.ledger_id, a.id) == (ledger_id, account_id)), None)

    async def lock(self, ledger_id: str, account_ids: Sequence[str]) -> dict[str, Account]:
        rows = sorted(self._state.accounts.items())  # pk order, as the SQL adapter locks
        return {a.id: a for _, a in rows if a.ledger_id == ledger_id and a.id in account_ids}

    async def save_balances(self, accounts: Sequence[Account], at: datetime) -> None:
        self._written()
        for a in accounts:
            stored = self._state.accounts[a.pk]
            self._state.accounts[a.pk] = replace(stored, balance=a.balance, version=a.version, updated_at=at)

    async def save(self, account: Account) -> None:
        self._written()
        a, stored = account, self._state.accounts[account.pk]
        stored = replace(stored, name=a.name, metadata=a.metadata, status=a.status, bounds=a.bounds)
        self._state.accounts[a.pk] = replace(stored, updated_at=a.updated_at)

    async def list(
        self,
        ledger_id: str,
        *,
        currency: str | None,
        status: AccountStatus | None,
        after: int | None,
        limit: int,
    ) -> Page[Account]:
        rows = (
            a
            for _, a in sorted(self._state.accounts.items())
            if a.ledger_id == ledger_id
            and currency in (None, a.currency)
            and status in (None, a.status)
            and (after is None or a.pk > after)
        )
        return _page(rows, limit, lambda a: a.pk)

    async def scan(self, after_pk: int | None, limit: int) -> builtins.list[Account]:
        rows = sorted(self._state.accounts.items())
        return [a for pk, a in rows if after_pk is None or pk > after_pk][:limit]

    async def count(self) -> int:
        return len(self._state.accounts)

    async def backfill_balances(self, after_pk: int | None, limit: int) -> tuple[int, int | None]:
        # In memory there is one shape: nothing to copy, whatever the batch.
        return 0, None


class FakeTransferRepository(_Repository):
    async def add(
        self, transfer: Transfer, account_pks: dict[str, int], *, reverses_pk: int | None = None
    ) -> Transfer:
        if await self.get(transfer.ledger_id, transfer.id) is not None:
            raise ValueError(f"duplicate transfer id {transfer.id}")
        self._written()
        stored = replace(transfer, pk=self._state.take_pk())
        self._state.transfers[stored.pk] = stored
        self._state.transfer_accounts[stored.pk] = {account_pks[leg.account_id] for leg in transfer.legs}
        return stored

    async def add_many(self, transfers: Sequence[tuple[Transfer, dict[str, int]]]) -> list[Transfer]:
        return [await self.add(transfer, account_pks) for transfer, account_pks in transfers]

    async def get_many(self, ledger_id: str, transfer_ids: Sequence[str]) -> dict[str, Transfer]:
        found = [await self.get(ledger_id, transfer_id) for transfer_id in transfer_ids]
        return {transfer.id: transfer for transfer in found if transfer is not None}

    async def get(self, ledger_id: str, transfer_id: str) -> Transfer | None:
        rows = self._state.transfers.values()
        return next((t for t in rows if (t.ledger_id, t.id) == (ledger_id, transfer_id)), None)

    async def lock(self, ledger_id: str, transfer_id: str) -> Transfer | None:
        return await self.get(ledger_id, transfer_id)  # writes are serialised: locked already

    async def lock_by_pk(self, pk: int) -> Transfer | None:
        return self._state.transfers.get(pk)

    async def save(self, transfer: Transfer) -> None:
        self._written()
        stored = self._state.transfers[transfer.pk]
        self._state.transfers[transfer.pk] = replace(transfer, legs=stored.legs)

    async def save_leg_amounts(self, transfer: Transfer) -> None:
        self._written()
        stored = self._state.transfers[transfer.pk]
        self._state.transfers[transfer.pk] = replace(stored, legs=transfer.legs)

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
        rows = (
            t
            for pk, t in sorted(self._state.transfers.items(), reverse=True)
            if t.ledger_id == ledger_id
            and (account_pk is None or account_pk in self._state.transfer_accounts[pk])
            and status in (None, t.seen_at(now).status)
            and (before is None or pk < before)
        )
        return _page(rows, limit, lambda t: t.pk)


class FakeEntryRepository(_Repository):
    async def add_many(self, entries: Sequence[tuple[int, Sequence[NewEntry]]], at: datetime) -> None:
        for transfer_pk, of_transfer in entries:
            self._add(transfer_pk, of_transfer, at)

    def _add(self, transfer_pk: int, entries: Sequence[NewEntry], at: datetime) -> None:
        self._written()
        transfer_id = self._state.transfers[transfer_pk].id
        for new in entries:
            after = new.balance_after
            posting = (
                self._state.take_pk(),
                new.account_pk,
                transfer_id,
                new.kind,
                new.direction,
                new.amount,
            )
            balance = (after.posted, after.pending_debits, after.pending_credits, new.account_version)
            self._state.entries.append(Entry(*posting, *balance, at))

    async def list(self, account_pk: int, *, before: int | None, limit: int) -> Page[Entry]:
        rows = (
            e
            for e in reversed(self._state.entries)
            if e.account_pk == account_pk
            and e.kind is EntryKind.POSTING
            and (before is None or e.pk < before)
        )
        return _page(rows, limit, lambda e: e.pk)

    async def balance_at(self, account_pk: int, at: datetime) -> BalanceAt | None:
        found = [e for e in self._state.entries if e.account_pk == account_pk and e.created_at <= at]
        if not found:
            return None
        last = max(found, key=lambda e: (e.created_at, e.pk))
        balance = Balance(last.posted_after, last.pending_debits_after, last.pending_credits_after)
        return BalanceAt(balance, last.account_version)


class FakeHoldRepository(_Repository):
    async def add(self, legs: Sequence[HeldLeg]) -> None:
        self._written()
        for leg in legs:
            self._state.holds[leg.transfer_pk, leg.account_pk] = leg

    async def remove(self, transfer_pk: int) -> None:
        self._written()
        for slot in [slot for slot in self._state.holds if slot[0] == transfer_pk]:
            del self._state.holds[slot]

    async def due(self, account_pks: Sequence[int], at: datetime) -> list[HeldLeg]:
        return [
            leg
            for leg in self._state.holds.values()
            if leg.account_pk in account_pks and leg.expires_at is not None and leg.expires_at <= at
        ]

    async def expiring(self, at: datetime, limit: int) -> list[int]:
        due = sorted(
            (leg.expires_at, leg.transfer_pk)
            for leg in self._state.holds.values()
            if leg.expires_at is not None and leg.expires_at <= at
        )
        return list(dict.fromkeys(pk for _, pk in due))[:limit]

    async def next_expiry(self, account_pk: int, after: datetime) -> datetime | None:
        later = [
            leg.expires_at
            for leg in self._state.holds.values()
            if leg.account_pk == account_pk and leg.expires_at is not None and leg.expires_at > after
        ]
        return min(later, default=None)


class FakeIdempotencyRepository(_Repository):
    async def get(self, ledger_id: str, key: str) -> IdempotencyRecord | None:
        return self._state.idempotency.get((ledger_id, key))

    async def get_many(self, ledger_id: str, keys: Sequence[str]) -> dict[str, IdempotencyRecord]:
        found = ((key, self._state.idempotency.get((ledger_id, key))) for key in keys)
        return {key: record for key, record in found if record is not None}

    async def add(self, record: IdempotencyRecord, *, keep_until: datetime) -> None:
        await self.add_many([record], keep_until=keep_until)

    async def add_many(self, records: Sequence[IdempotencyRecord], *, keep_until: datetime) -> None:
        slots = [(record.ledger_id, record.key) for record in records]
        if len(set(slots)) < len(slots) or any(slot in self._state.idempotency for slot in slots):
            raise ValueError(f"duplicate idempotency key among {slots}")  # the SQL primary key
        self._written()
        for slot, record in zip(slots, records, strict=True):
            self._state.idempotency[slot] = record
            self._state.keep_until[slot] = keep_until

    async def count_expired(self, before: datetime) -> int:
        return sum(1 for until in self._state.keep_until.values() if until < before)

    async def purge(self, before: datetime, limit: int) -> int:
        expired = sorted((until, slot) for slot, until in self._state.keep_until.items() if until < before)
        for _, slot in expired[:limit]:
            self._written()
            del self._state.idempotency[slot], self._state.keep_until[slot]
        return len(expired[:limit])


class FakeEventRepository(_Repository):
    """The outbox in one list; one writer at a time, so the feed is simply in pk order."""

    async def add(self, event: NewEvent, at: datetime) -> int:
        self._written()
        position = self._state.take_pk()
        self._state.events.append(StoredEvent(position, copy.deepcopy(event), at))
        return position

    async def add_many(self, events: Sequence[NewEvent], at: datetime) -> None:
        for event in events:
            await self.add(event, at)

    def _event(self, stored: StoredEvent) -> Event:
        e = stored.event
        return Event(
            stored.position,
            f"evt_{stored.position}",
            e.ledger_id,
            e.type,
            copy.deepcopy(e.data),
            e.request_id,
            stored.created_at,
            FeedPosition(0, stored.position),
        )

    async def position_of(self, event_id: str) -> tuple[str, FeedPosition] | None:
        found = [s for s in self._state.events if f"evt_{s.position}" == event_id]
        return (found[0].event.ledger_id, FeedPosition(0, found[0].position)) if found else None

    async def feed(
        self, ledger_id: str | None, after: FeedPosition | None, types: Sequence[str] | None, limit: int
    ) -> list[Event]:
        events = [
            self._event(s)
            for s in self._state.events
            if (ledger_id is None or s.event.ledger_id == ledger_id)
            and (after is None or FeedPosition(0, s.position) > after)
            and (not types or s.event.type in types)
        ]
        return events[:limit]

    async def positions(
        self, after: FeedPosition | None, types: Sequence[str] | None, limit: int
    ) -> list[FeedPosition]:
        return [event.position for event in await self.feed(None, after, types, limit)]

    async def keys(self, after: FeedPosition | None, limit: int) -> list[EventKey]:
        return [EventKey(e.position, e.ledger_id, e.type) for e in await self.feed(None, after, None, limit)]

    async def get_many(self, pks: Sequence[int]) -> list[Event]:
        wanted = set(pks)
        return [self._event(s) for s in self._state.events if s.position in wanted]

    async def tail(self) -> FeedPosition | None:
        return FeedPosition(0, self._state.events[-1].position) if self._state.events else None

    async def get(self, pk: int) -> Event | None:
        return next((self._event(s) for s in self._state.events if s.position == pk), None)

    async def consumer_position(self, consumer: str) -> FeedPosition | None:
        return self._state.consumers.get(consumer)

    async def advance(self, consumer: str, position: FeedPosition) -> None:
        self._written()
        stored = self._state.consumers.get(consumer)
        self._state.consumers[consumer] = position if stored is None else max(stored, position)


class NoQueue:
    """The fake database has no job queue, inbox, webhooks, queued batches or batch job runs: the use
    cases of those are tested on SQLite and PostgreSQL (tests/integration, tests/api). Any use fails
    loudly."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> object:
        raise AssertionError(f"the fake database has no {self._name} ({attribute} was called)")


class FakeInstanceRepository(_Repository):
    async def get(self, name: str) -> bytes | None:
        return self._state.instance.get(name)

    async def put_if_absent(self, name: str, value: bytes) -> bytes:
        if name not in self._state.instance:
            self._written()
            self._state.instance[name] = value
        return self._state.instance[name]


class FakeAuditRepository(_Repository):
    async def add(self, event: AuditEvent) -> None:
        self._written()
        self._state.audit.append(replace(event, pk=self._state.take_pk()))

    async def list(
        self, ledger_id: str, *, action: AuditAction | None, after: int | None, newest_first: bool, limit: int
    ) -> Page[AuditEvent]:
        found = [e for e in self._state.audit if e.ledger_id == ledger_id and action in (None, e.action)]
        if newest_first:
            found = [e for e in reversed(found) if after is None or e.pk < after]
        else:
            found = [e for e in found if after is None or e.pk > after]
        return _page(found, limit, lambda e: e.pk)


class FakeTransaction:
    """Implements ``services.ports.Transaction`` over one private copy of the state."""

    def __init__(self, state: State, clock: Clock, *, read_only: bool) -> None:
        self.state = state
        self._clock = clock
        self._read_only = read_only
        self._at: datetime | None = None
        self._wrote = False
        self.ledgers: LedgerRepository = FakeLedgerRepository(self)
        self.keys: ApiKeyRepository = FakeApiKeyRepository(self)
        self.accounts: AccountRepository = FakeAccountRepository(self)
        self.transfers: TransferRepository = FakeTransferRepository(self)
        self.holds: HoldRepository = FakeHoldRepository(self)
        self.entries: EntryRepository = FakeEntryRepository(self)
        self.idempotency: IdempotencyRepository = FakeIdempotencyRepository(self)
        self.events: EventRepository = FakeEventRepository(self)
        self.instance: InstanceRepository = FakeInstanceRepository(self)
        self.audit: AuditRepository = FakeAuditRepository(self)
        self.jobs = cast("JobRepository", NoQueue("jobs"))
        self.inbox = cast("InboxRepository", NoQueue("inbox"))
        self.webhooks = cast("WebhookRepository", NoQueue("webhooks"))
        self.deliveries = cast("DeliveryRepository", NoQueue("deliveries"))
        self.batches = cast("TransferBatchRepository", NoQueue("batches"))
        self.job_runs = cast("JobRunRepository", NoQueue("job_runs"))
        self.statements = cast("StatementRepository", NoQueue("statements"))
        self.reconciliation = cast("ReconciliationRepository", NoQueue("reconciliation"))

    @property
    def wrote(self) -> bool:
        return self._wrote

    def mark_written(self) -> None:
        if self._read_only:
            raise RuntimeError("a read transaction tried to write")
        self._wrote = True

    async def now(self) -> datetime:
        # Fixed for the transaction and never behind an earlier commit (the port's contract).
        if self._at is None:
            last = self.state.last_write_at
            self._at = self._clock()
            if last is not None and self._at <= last:
                self._at = last + ONE_MICROSECOND if not self._read_only else last
        return self._at


class FakeDatabase:
    """Implements ``services.ports.Database``; ``state`` is the committed state, for assertions."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or FakeClock()
        self.state = State()
        self.commits = 0
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[FakeTransaction]:
        async with self._write_lock:
            tx = FakeTransaction(copy.deepcopy(self.state), self.clock, read_only=False)
            yield tx
            # Reached only when the block ended cleanly: commit by swapping in the working copy.
            if tx.wrote:
                tx.state.last_write_at = await tx.now()
            self.state = tx.state
            self.commits += 1

    @asynccontextmanager
    async def read(self) -> AsyncIterator[FakeTransaction]:
        yield FakeTransaction(copy.deepcopy(self.state), self.clock, read_only=True)

    def background_read(self) -> AbstractAsyncContextManager[FakeTransaction]:
        return self.read()

    def position(self) -> str:
        return str(self.state.events[-1].position if self.state.events else 0)

    @property
    def primary_up(self) -> bool:
        return True

    def token_key(self, token: str) -> int:
        return int(token)

    def read_covers(self) -> int | None:
        return int(self.position())

    def listen_to_commits(self, listener: CommitListener, events: EventsListener | None = None) -> None:
        raise NotImplementedError("the fakes serve use-case tests, which have no cache")


if TYPE_CHECKING:
    # mypy --strict proves the fakes satisfy the ports they stand in for.
    def _is_a_database(database: FakeDatabase) -> Database:
        return database

    def _is_a_transaction(tx: FakeTransaction) -> Transaction:
        return tx
