"""Webhooks: subscriptions, the dispatcher that turns events into deliveries, and the delivery job.

The path of an event to a subscriber (ADR 0025):

1. A change commits its event in the outbox (ADR 0023).
2. The **dispatcher** reads the feed of every ledger from its stored position (ADR 0024). For each
   event and each live subscription of its ledger to its type, created before it, it adds a
   delivery (unique per subscription and event) and queues a job on ``webhooks`` (deduplicated by
   ``dlv:<delivery pk>``), then stores the new position. A page is read in a background read (ADR
   0044); only a page that makes deliveries is written, its deliveries and its position in one
   transaction. The position past pages that make none is stored once per round of pages. A crash
   repeats at most one round, and a repeated page adds nothing.
3. The **delivery job** signs the event (Standard Webhooks) and POSTs it, at most
   ``max_per_second`` per subscription; records the attempt; and returns, or raises so that the
   worker retries with backoff, or buries the job after the last attempt, which the delivery
   records as ``dead``.

Deliveries are at least once: receivers dedupe on ``webhook-id``, the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from tally.domain.errors import DeadlineExceeded, NotFound, ValidationFailed
from tally.domain.ids import new_id
from tally.services import audit, webhook_signing
from tally.services.audit import Actor, AuditAction
from tally.services.deadline import current_deadline
from tally.services.ports import Database, Event, EventKey, FeedPosition, Page, Transaction
from tally.services.queue_ports import Job, NewJob
from tally.services.views import event_view
from tally.services.webhook_ports import Delivery, Webhook
from tally.services.worker import Defer, Permanent, Wakeups

QUEUE = "webhooks"
CONSUMER = "webhooks"  # the dispatcher's name in feed_positions
SLOTS = "webhooks.slot"  # inbox consumer: a deferred attempt that holds its rate-limit slot
PAGE = 100  # events per write transaction of the dispatcher
SCAN = 1000  # events whose ledgers and types the dispatcher looks at per read


class DeliveryFailed(Exception):
    """An attempt that got no 2xx: no response (refused destination, DNS, connect, timeout) or a
    non-2xx status. The message is recorded as the attempt's error."""


class Sealer(Protocol):
    """Encryption at rest of the signing secrets (``tally.secretbox``)."""

    def seal(self, secret: bytes, context: bytes) -> bytes: ...

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """``ValueError`` when the sealed secret does not open (another key, or altered)."""
        ...


class Destinations(Protocol):
    """Where webhooks may go (``tally.outbound``)."""

    async def refusal(self, url: str) -> str | None:
        """Why ``url`` may not receive webhooks, or ``None`` when it may."""
        ...


class Sender(Protocol):
    """One POST (``tally.outbound``): it checks the destination again, then sends."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """The response's status. ``DeliveryFailed`` when no response came back."""
        ...


class DeliveryObserver(Protocol):
    def attempted(self, attempt: Attempt) -> None:
        """After each attempt is recorded (logs, metrics)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    webhook_id: str
    delivery_id: str
    event_id: str
    number: int
    outcome: str  # delivered | retrying | dead
    status_code: int | None
    error: str | None
    seconds: float  # the attempt's own duration
    latency: float  # from the event's commit to the end of this attempt


# --- subscriptions -------------------------------------------------------------------------------


async def check_destination(destinations: Destinations, url: str) -> None:
    """422 on ``url`` when webhooks may not go there (a rule of the body, checked before the key)."""
    deadline = current_deadline()
    try:
        async with asyncio.timeout(None if deadline is None else max(0.0, deadline.remaining())):
            refusal = await destinations.refusal(url)
    except TimeoutError:
        raise DeadlineExceeded(
            "The budget ran out while checking the URL's host; nothing was applied."
        ) from None
    if refusal is not None:
        raise ValidationFailed.at(("body", "url"), refusal)


async def create_webhook(
    tx: Transaction,
    ledger_id: str,
    *,
    url: str,
    event_types: Sequence[str],
    max_per_second: int | None,
    sealer: Sealer,
    actor: Actor,
) -> tuple[Webhook, str]:
    """A subscription and its signing secret, which is shown this once and stored only sealed."""
    secret = webhook_signing.new_secret()
    webhook_id = new_id("wh")
    webhook = Webhook(
        pk=0,
        id=webhook_id,
        ledger_id=ledger_id,
        url=url,
        event_types=tuple(event_types),
        max_per_second=max_per_second,
        secret=sealer.seal(secret.encode(), webhook_id.encode()),
        created_at=await tx.now(),
        deleted_at=None,
    )
    added = await tx.webhooks.add(webhook)
    # The host only: a URL may carry a token in its path or query, and the trail keeps it forever.
    host = urlsplit(url).hostname
    details = {"host": host, "event_types": list(event_types), "max_per_second": max_per_second}
    await audit.record(
        tx,
        actor,
        AuditAction.WEBHOOK_CREATED,
        ledger_id=ledger_id,
        target=("webhook", webhook_id),
        details=details,
    )
    return added, secret


async def list_webhooks(
    database: Database, ledger_id: str, *, after: int | None, limit: int
) -> Page[Webhook]:
    async with database.read() as tx:
        return await tx.webhooks.list(ledger_id, after=after, limit=limit)


async def delete_webhook(tx: Transaction, ledger_id: str, webhook_id: str, actor: Actor) -> None:
    """Deliveries in flight are not sent any more; nothing is queued for it from now on."""
    if not await tx.webhooks.delete(ledger_id, webhook_id, await tx.now()):
        raise NotFound(f"Webhook {webhook_id} does not exist.")
    await audit.record(
        tx, actor, AuditAction.WEBHOOK_DELETED, ledger_id=ledger_id, target=("webhook", webhook_id)
    )


async def _webhook(tx: Transaction, ledger_id: str, webhook_id: str) -> Webhook:
    webhook = await tx.webhooks.get(ledger_id, webhook_id)
    if webhook is None:
        raise NotFound(f"Webhook {webhook_id} does not exist.")
    return webhook


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    delivery: Delivery
    event: Event | None
    attempts: Sequence[Mapping[str, Any]]


async def list_deliveries(
    database: Database,
    ledger_id: str,
    webhook_id: str,
    *,
    status: str | None,
    after: int | None,
    limit: int,
) -> Page[DeliveryRecord]:
    """A subscription's deliveries, oldest first, each with its event and its attempts."""
    async with database.read() as tx:
        webhook = await _webhook(tx, ledger_id, webhook_id)
        page = await tx.deliveries.list(webhook.pk, status=status, after=after, limit=limit)
        records = [
            DeliveryRecord(d, await tx.events.get(d.event_pk), await tx.deliveries.attempts(d.pk))
            for d in page.items
        ]
    return Page(records, page.next_after)


async def redrive(tx: Transaction, ledger_id: str, webhook_id: str, *, max_attempts: int) -> int:
    """Queue the subscription's dead deliveries again, with fresh attempts; how many.

    Each revived delivery gets a new job, deduplicated by ``dlv:<pk>:after:<attempts so far>``: two
    redrives racing queue one job, and a later redrive (after more failures) queues another.
    """
    webhook = await _webhook(tx, ledger_id, webhook_id)
    now = await tx.now()
    dead = await tx.deliveries.dead(webhook.pk)
    await tx.deliveries.revive(dead, now)
    queued = 0
    for pk in dead:
        delivery = await tx.deliveries.get(pk)
        tried = 0 if delivery is None else delivery.attempts
        job = NewJob(QUEUE, {"delivery": pk}, dedupe_key=f"dlv:{pk}:after:{tried}", max_attempts=max_attempts)
        if await tx.jobs.add(job, now) is not None:
            queued += 1
    return queued


# --- the dispatcher ------------------------------------------------------------------------------


class Dispatcher:
    """Reads the outbox of every ledger and queues one delivery per (subscription, event).

    Several processes may each run one: two of them reading the same page insert the same
    deliveries, and the unique (subscription, event) and the jobs' dedupe keys keep one of each.
    """

    def __init__(
        self,
        database: Database,
        wakeups: Wakeups,
        *,
        poll_seconds: float,
        max_attempts: int,
        on_error: Callable[[Exception], None] = lambda _: None,
    ) -> None:
        self._database = database
        self._wakeups = wakeups
        self._poll = poll_seconds
        self._max_attempts = max_attempts
        self._on_error = on_error
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._read_to: FeedPosition | None = None  # the position past the last page read
        self._stored: FeedPosition | None = None  # the last position this dispatcher stored

    async def dispatch(self) -> int:
        """Past the next events of the feed; how many (0: it is read to its end).

        The next ``SCAN`` events' positions, ledgers and types are read in a background read, with
        which of those (ledger, type) anyone subscribes to: on SQLite, writing each page of 100
        events that concern no subscription held the writer and the event loop ten times a second
        at 1,000 transfers/s (ADR 0044). If none does, only ``_read_to`` moves past them, and
        ``store_position`` writes it. Otherwise the next page is dispatched in a write transaction,
        which reads its events and their subscribers again and stores the position past it.
        """
        async with self._database.background_read() as tx:
            stored = await tx.events.consumer_position(CONSUMER)
            after = max((p for p in (stored, self._read_to) if p is not None), default=None)
            keys = await tx.events.keys(after, SCAN)
            if not keys:
                return 0
            subscribed = [key for key in _distinct(keys) if await tx.webhooks.subscribed(*key)]
        if not subscribed:
            self._read_to = keys[-1].position
            return len(keys)
        async with self._database.write() as tx:
            events = await tx.events.feed(None, after, None, PAGE)
            if events:
                await self._deliver(tx, events)
                await tx.events.advance(CONSUMER, events[-1].position)
        if events:
            self._read_to = self._stored = events[-1].position
        return len(events)

    async def store_position(self) -> None:
        """Store the position past the pages read since it was last stored, if any."""
        position = self._read_to
        if position is None or position == self._stored:
            return
        async with self._database.write() as tx:
            await tx.events.advance(CONSUMER, position)
        self._stored = position

    async def _deliver(self, tx: Transaction, events: Sequence[Event]) -> None:
        now = await tx.now()
        subscribers: dict[tuple[str, str], Sequence[Webhook]] = {}
        for event in events:
            key = (event.ledger_id, event.type)
            if key not in subscribers:
                subscribers[key] = await tx.webhooks.subscribed(*key)
            for webhook in subscribers[key]:
                # A subscription receives what happened after it was made, not the backlog.
                if event.created_at >= webhook.created_at:
                    await self._queue(tx, webhook, event, now)

    async def _queue(self, tx: Transaction, webhook: Webhook, event: Event, now: datetime) -> None:
        pk = await tx.deliveries.add(webhook.pk, event.pk, now)
        if pk is None:  # another dispatcher, or an earlier run of this page, queued it
            return
        job = NewJob(
            QUEUE,
            {"delivery": pk},
            request_id=event.request_id,
            dedupe_key=f"dlv:{pk}",
            max_attempts=self._max_attempts,
        )
        await tx.jobs.add(job, now)

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="tally-webhook-dispatcher")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            # Past the wait, wait_for cancels it: a page in flight rolls back, and is read again later.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, timeout=5.0)
            self._task = None

    async def run(self) -> None:
        """Dispatch until ``stop``: page after page until the feed is read to its end, then store
        the position and wait for more."""
        while not self._stopping.is_set():
            try:
                while await self.dispatch() and not self._stopping.is_set():
                    pass
                await self.store_position()
            except Exception as error:  # the database is away: try again at the next poll
                self._on_error(error)
            await self._pause()

    async def _pause(self) -> None:
        """Until a wake-up, ``stop``, or the polling interval (new events send no wake-up)."""
        waiting = asyncio.ensure_future(self._wakeups.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            stopping.cancel()


def _distinct(keys: Sequence[EventKey]) -> list[tuple[str, str]]:
    """The distinct (ledger, type) of ``keys``, in their order."""
    return list(dict.fromkeys((key.ledger_id, key.type) for key in keys))


# --- the delivery job ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Send:
    delivery: Delivery
    webhook: Webhook
    event: Event
    now: datetime


class _Unobserved:
    def attempted(self, attempt: Attempt) -> None:
        pass


class Deliverer:
    """The handler of the ``webhooks`` queue: one attempt of one delivery per run."""

    def __init__(
        self,
        database: Database,
        sender: Sender,
        sealer: Sealer,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self._database = database
        self._sender = sender
        self._sealer = sealer
        self._observer = observer or _Unobserved()

    async def __call__(self, job: Job) -> None:
        planned = await self._prepare(job)
        if planned is None:
            return
        if isinstance(planned, datetime):
            raise Defer(planned)  # its slot is reserved: the rerun at that time sends
        await self._send(job, planned)

    async def _prepare(self, job: Job) -> _Send | datetime | None:
        """What to send now; the time to come back at (rate limit); or nothing (already settled)."""
        async with self._database.write() as tx:
            now = await tx.now()
            delivery = await tx.deliveries.get(int(job.payload["delivery"]))
            if delivery is None:
                raise Permanent("the delivery does not exist")
            if delivery.status in ("delivered", "dead"):
                return None  # a rerun after the outcome was recorded: nothing left to do
            webhook = await tx.webhooks.get_by_pk(delivery.webhook_pk)
            event = await tx.events.get(delivery.event_pk)
            if webhook is None or webhook.deleted_at is not None or event is None:
                await tx.deliveries.record_attempt(
                    delivery.pk,
                    delivery.attempts + 1,
                    now,
                    status_code=None,
                    error="not sent: the subscription was deleted",
                    duration_ms=0,
                    outcome="dead",
                )
                return None
            if webhook.max_per_second and await tx.inbox.claim(SLOTS, f"{job.pk}:{job.attempts}", now):
                # This attempt holds no slot yet: take the next one (GCRA). A slot in the future is
                # kept for this attempt (the inbox row above remembers it) while the job waits for
                # it; the attempt is not spent.
                interval = timedelta(seconds=1 / webhook.max_per_second)
                slot = await tx.webhooks.take_slot(webhook.pk, interval, now)
                if slot > now:
                    return slot
        return _Send(delivery, webhook, event, now)

    async def _send(self, job: Job, planned: _Send) -> None:
        delivery, webhook, event = planned.delivery, planned.webhook, planned.event
        number = delivery.attempts + 1
        try:
            secret = self._sealer.open(webhook.secret, webhook.id.encode()).decode()
        except ValueError as unreadable:
            # No retry can help until the key is fixed; a redrive after that sends it.
            reason = f"not sent: {unreadable}"
            await self._record(planned, number, status=None, error=reason, seconds=0.0, outcome="dead")
            raise Permanent(reason) from None
        body = orjson.dumps(event_view(event))
        headers = webhook_signing.headers(secret, event.id, int(planned.now.timestamp()), body)
        if event.request_id is not None:  # timer events (expiry) have no request to point at
            headers["x-request-id"] = event.request_id
        started = time.perf_counter()
        status: int | None = None
        try:
            status = await self._sender.post(webhook.url, body, headers)
            failure = None if 200 <= status < 300 else f"HTTP {status}"
        except DeliveryFailed as failed:
            failure = str(failed) or "no response"
        seconds = time.perf_counter() - started
        if failure is None:
            outcome = "delivered"
        else:  # the delivery follows the job's fate: the worker buries a job out of attempts
            outcome = "dead" if job.attempts >= job.max_attempts else "retrying"
        await self._record(planned, number, status=status, error=failure, seconds=seconds, outcome=outcome)
        if failure is not None:
            raise DeliveryFailed(failure)

    async def _record(
        self,
        planned: _Send,
        number: int,
        *,
        status: int | None,
        error: str | None,
        seconds: float,
        outcome: str,
    ) -> None:
        """Log the attempt and move the delivery to ``outcome``; then tell the observer."""
        async with self._database.write() as tx:
            at = await tx.now()
            await tx.deliveries.record_attempt(
                planned.delivery.pk,
                number,
                at,
                status_code=status,
                error=error,
                duration_ms=round(seconds * 1000),
                outcome=outcome,
            )
        self._observer.attempted(
            Attempt(
                webhook_id=planned.webhook.id,
                delivery_id=planned.delivery.id,
                event_id=planned.event.id,
                number=number,
                outcome=outcome,
                status_code=status,
                error=error,
                seconds=seconds,
                latency=max(0.0, (at - planned.event.created_at).total_seconds()),
            )
        )
