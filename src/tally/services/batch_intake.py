"""Queued transfer batches: accepted at once, applied by a worker (``/v1/transfer-batches``, ADR 0026).

``submit_batch`` stores the batch and queues its job in the submitting request's transaction, so a
batch is queued if and only if the request committed. ``BatchIntake`` is the handler of the
``transfer-batches`` queue: it applies the batch with the synchronous batch's use case
(``services.transfers.create_batch``), so both answer the same per item.

Jobs run at least once (ADR 0023), and the effect must happen once. Every transaction of a run
records an inbox message with its effect (``tx.inbox.claim``): ``<id>#start`` with the move to
``processing``, ``<id>#<offset>`` with each chunk but the last, and the batch id itself with the
completion (the last chunk, or the failure of an atomic batch). A run that finds its message already
recorded rolls its own work back: another run did it. An atomic batch is one transaction. A
non-atomic one is applied ``chunk_size`` transfers per transaction, and the results so far are saved
with each chunk, so a run after a crash resumes at the first item not applied. Client ids make each
item idempotent on top of that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum
from typing import Any, Protocol

from tally.domain.errors import BatchFailed, NotFound, TallyError
from tally.domain.ids import uuid7
from tally.services.batch_ports import QueuedBatch
from tally.services.ports import Database, NewEvent, Transaction
from tally.services.queue_ports import Job, NewJob
from tally.services.retries import retry_conflicts
from tally.services.transfers import BatchItem, ItemOutcome, create_batch
from tally.services.views import JsonObject, timestamp
from tally.services.worker import Permanent

QUEUE = "transfer-batches"  # also the inbox consumer of its handler
COMPLETED_EVENT = "transfer_batch.completed"


class BatchStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


_FINAL = frozenset({BatchStatus.COMPLETED.value, BatchStatus.FAILED.value})


class BatchCodec(Protocol):
    """The wire format of a batch's items and results: the API's, shared with the synchronous batch."""

    def items(self, transfers: Sequence[dict[str, Any]]) -> list[BatchItem]:
        """The stored transfer bodies as batch items (an item whose body alone breaks a rule carries it)."""
        ...

    def result(self, outcome: ItemOutcome) -> JsonObject:
        """One item's result, as ``POST /v1/transfers/batch`` renders it."""
        ...


class BatchObserver(Protocol):
    def started(self, batch: QueuedBatch, applied: int) -> None:
        """A run begins; ``applied`` items were applied by earlier runs (a resumed batch)."""

    def completed(self, batch: QueuedBatch) -> None:
        """This run completed the batch (``completed``, or ``failed`` for an atomic batch)."""


class _Unobserved:
    def started(self, batch: QueuedBatch, applied: int) -> None:
        pass

    def completed(self, batch: QueuedBatch) -> None:
        pass


def new_batch_id() -> str:
    # ``domain.ids.new_id`` knows no ``tb`` prefix yet; the same UUIDv7 form (ADR 0004).
    return f"tb_{uuid7().hex}"


async def submit_batch(
    tx: Transaction,
    ledger_id: str,
    transfers: Sequence[dict[str, Any]],
    *,
    atomic: bool,
    request_id: str | None,
) -> QueuedBatch:
    """Store a batch as ``queued`` and queue its job, in the caller's transaction."""
    now = await tx.now()
    batch = await tx.batches.add(
        QueuedBatch(
            pk=0,
            id=new_batch_id(),
            ledger_id=ledger_id,
            status=BatchStatus.QUEUED.value,
            atomic=atomic,
            request=list(transfers),
            results=None,
            request_id=request_id,
            created_at=now,
            completed_at=None,
        )
    )
    job = NewJob(QUEUE, {"batch": batch.pk}, request_id=request_id, dedupe_key=batch.id)
    await tx.jobs.add(job, now)
    return batch


async def get_batch(database: Database, ledger_id: str, batch_id: str) -> QueuedBatch:
    async with database.read() as tx:
        batch = await tx.batches.get(ledger_id, batch_id)
    if batch is None:
        raise NotFound(f"Transfer batch {batch_id} does not exist.")
    return batch


def batch_view(batch: QueuedBatch) -> JsonObject:
    """The batch resource; ``results`` once it is ``completed`` or ``failed`` (never partial ones)."""
    view: JsonObject = {
        "id": batch.id,
        "status": batch.status,
        "atomic": batch.atomic,
        "created_at": timestamp(batch.created_at),
        "completed_at": timestamp(batch.completed_at),
    }
    if batch.status in _FINAL:
        view["results"] = batch.results or []
    return view


class _AppliedElsewhere(Exception):
    """Another run recorded this step first: leave the transaction so that this run's work rolls back."""


class BatchIntake:
    """The handler of the ``transfer-batches`` queue (``services.worker.Handler``)."""

    def __init__(
        self,
        database: Database,
        codec: BatchCodec,
        *,
        chunk_size: int = 100,
        observer: BatchObserver | None = None,
    ) -> None:
        self._database = database
        self._codec = codec
        self._chunk_size = chunk_size
        self._observer = observer or _Unobserved()

    async def __call__(self, job: Job) -> None:
        pk = job.payload.get("batch")
        if not isinstance(pk, int):
            raise Permanent(f"The job's payload names no batch: {job.payload!r}")
        batch = await retry_conflicts(lambda: self._start(pk))
        if batch is None:
            return  # completed by an earlier run
        self._observer.started(batch, len(batch.results or []))
        items = self._codec.items(batch.request)
        while True:
            finished, completed = await retry_conflicts(lambda: self._apply_next(pk, items, job.request_id))
            if finished:
                break
            await _between_chunks()
        if completed is not None:
            self._observer.completed(completed)

    async def _start(self, pk: int) -> QueuedBatch | None:
        """Mark the batch ``processing`` (once: the first run's inbox message); ``None`` when final."""
        async with self._database.write() as tx:
            batch = await _load(tx, pk)
            if batch.status in _FINAL:
                return None
            if batch.status == BatchStatus.QUEUED.value and await tx.inbox.claim(
                QUEUE, f"{batch.id}#start", await tx.now()
            ):
                batch = replace(batch, status=BatchStatus.PROCESSING.value)
                await tx.batches.save(batch)
            return batch

    async def _apply_next(
        self, pk: int, items: Sequence[BatchItem], request_id: str | None
    ) -> tuple[bool, QueuedBatch | None]:
        """Apply the next chunk in one transaction: ``(finished, the batch if this run completed it)``."""
        try:
            async with self._database.write() as tx:
                batch = await _load(tx, pk)
                if batch.status in _FINAL:
                    return True, None
                done = list(batch.results or [])
                start = len(done)
                # An atomic batch is one transaction, whatever its size: all or nothing (ADR 0016).
                end = len(items) if batch.atomic else min(len(items), start + self._chunk_size)
                # Locks and time first, inbox after (ADR 0020: a write reads its time after its locks).
                outcomes = await create_batch(
                    tx, batch.ledger_id, items[start:end], atomic=batch.atomic, request_id=request_id
                )
                last = end >= len(items)
                message = batch.id if last else f"{batch.id}#{start}"
                await _record(tx, message)
                results = done + [self._codec.result(replace(o, index=o.index + start)) for o in outcomes]
                if not last:
                    progress = replace(batch, status=BatchStatus.PROCESSING.value, results=results)
                    await tx.batches.save(progress)
                    return False, None
                completed = await self._complete(tx, batch, BatchStatus.COMPLETED, results, request_id)
                return True, completed
        except _AppliedElsewhere:
            return True, None
        except BatchFailed as failed:
            # The transfers rolled back with the transaction; the failure commits on its own.
            return True, await self._fail(pk, failed.failures, request_id)

    async def _fail(
        self, pk: int, failures: list[tuple[int, TallyError]], request_id: str | None
    ) -> QueuedBatch | None:
        async with self._database.write() as tx:
            batch = await _load(tx, pk)
            if batch.status in _FINAL or not await tx.inbox.claim(QUEUE, batch.id, await tx.now()):
                return None
            results = [self._codec.result(ItemOutcome(i, "error", error=error)) for i, error in failures]
            return await self._complete(tx, batch, BatchStatus.FAILED, results, request_id)

    @staticmethod
    async def _complete(
        tx: Transaction,
        batch: QueuedBatch,
        status: BatchStatus,
        results: list[JsonObject],
        request_id: str | None,
    ) -> QueuedBatch:
        now = await tx.now()
        finished = replace(batch, status=status.value, results=results, completed_at=now)
        await tx.batches.save(finished)
        await tx.events.add(NewEvent(batch.ledger_id, COMPLETED_EVENT, batch_view(finished), request_id), now)
        return finished


async def _between_chunks() -> None:
    """Yield to the event loop, and stop here if this job was cancelled (a worker's shutdown).

    On SQLite a transaction runs on the event loop without yielding, so the requests and writers
    waiting for the write lock get in only between chunks. A cancellation that arrived while a
    transaction was waiting in ``asyncio.wait_for`` for a lock it got at once is swallowed by
    ``wait_for`` on Python 3.11 (bpo-42130) but still counted by ``Task.cancelling()``: honoured
    here, at a chunk's end, where stopping leaves the batch resumable.
    """
    await asyncio.sleep(0)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _record(tx: Transaction, message: str) -> None:
    """Record ``message`` in the inbox, or leave the transaction if another run recorded it first."""
    if not await tx.inbox.claim(QUEUE, message, await tx.now()):
        raise _AppliedElsewhere(message)


async def _load(tx: Transaction, pk: int) -> QueuedBatch:
    batch = await tx.batches.get_by_pk(pk)
    if batch is None:
        raise Permanent(f"Transfer batch {pk} does not exist.")
    return batch
