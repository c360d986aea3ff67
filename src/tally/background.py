"""Background work of a Tally process: the job workers and their queues (ADR 0023).

``tally serve`` runs them beside the API by default (``TALLY_WORKER_ENABLED``); ``tally worker``
runs them alone, as many processes as the queue needs. Every queue is registered here, with its
handler and its concurrency per process.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from tally.api.batch_schemas import WireBatchCodec
from tally.config import Settings
from tally.observability.context import current_job, current_request_id, set_job, set_request_id
from tally.observability.logging import get_logger
from tally.outbound import Destinations, HttpSender
from tally.secretbox import ConfiguredSecretBox
from tally.services import batch_intake, webhooks
from tally.services.batch_ports import QueuedBatch
from tally.services.ports import Database
from tally.services.queue_ports import Job
from tally.services.worker import JobObserver, Queue, Wakeups, Worker


def queues(
    settings: Settings, database: Database, delivered: Callable[[float], None] | None = None
) -> list[Queue]:
    """Every queue this process works on; ``delivered`` hears each delivered webhook's latency."""
    registered: list[Queue] = []
    if settings.batch_workers > 0:
        intake = batch_intake.BatchIntake(
            database, WireBatchCodec(), chunk_size=settings.batch_chunk_size, observer=BatchLog()
        )
        lease = timedelta(milliseconds=settings.job_lease_ms)
        registered.append(Queue(batch_intake.QUEUE, intake, settings.batch_workers, lease=lease))
    if settings.webhook_concurrency > 0:
        registered.append(webhook_queue(settings, database, delivered))
    return registered


class BatchLog:
    """A line when a worker starts a batch and when it completes one (``batch_intake.BatchObserver``).

    Both carry the submitting request's id (``job_context``), so one grep follows a batch from its
    ``POST`` to its completion.
    """

    def __init__(self) -> None:
        self._log = get_logger("tally.batches")

    def started(self, batch: QueuedBatch, applied: int) -> None:
        self._log.info(
            "transfer batch started", batch_id=batch.id, items=len(batch.request), resumed_at=applied
        )

    def completed(self, batch: QueuedBatch) -> None:
        statuses = [result.get("status") for result in batch.results or []]
        self._log.info(
            "transfer batch completed",
            batch_id=batch.id,
            status=batch.status,
            items=len(batch.request),
            created=statuses.count("created"),
            existing=statuses.count("exists"),
            errors=statuses.count("error"),
        )


def webhook_queue(
    settings: Settings, database: Database, delivered: Callable[[float], None] | None = None
) -> Queue:
    """Webhook deliveries (ADR 0025): signed POSTs, retried with backoff, rate-limited per subscription."""
    timeout = settings.webhook_timeout_ms / 1000
    destinations = Destinations(settings.webhook_allowed_hosts, timeout=timeout)
    deliverer = webhooks.Deliverer(
        database,
        HttpSender(destinations, timeout=timeout),
        ConfiguredSecretBox(settings),
        DeliveryLog(delivered),
    )
    return Queue(
        webhooks.QUEUE,
        deliverer,
        settings.webhook_concurrency,
        lease=timedelta(seconds=2 * timeout + 30),  # an attempt ends within its timeout, plus database time
        first_backoff=settings.webhook_first_backoff_ms / 1000,
        longest_backoff=settings.webhook_longest_backoff_ms / 1000,
    )


class DeliveryLog:
    """A line per delivery attempt (``webhooks.DeliveryObserver``): ids, outcome, status, never the URL
    (its query may hold a receiver's token) nor the secret."""

    def __init__(self, delivered: Callable[[float], None] | None = None) -> None:
        self._log = get_logger("tally.webhooks")
        self._delivered = delivered  # the latency histogram, when metrics are on

    def attempted(self, attempt: webhooks.Attempt) -> None:
        if attempt.outcome == "delivered" and self._delivered is not None:
            self._delivered(attempt.latency)
        log = self._log.info if attempt.outcome == "delivered" else self._log.warning
        log(
            f"webhook {attempt.outcome}",
            webhook_id=attempt.webhook_id,
            delivery_id=attempt.delivery_id,
            event_id=attempt.event_id,
            attempt=attempt.number,
            status_code=attempt.status_code,
            error=attempt.error,
            duration_ms=round(attempt.seconds * 1000),
            latency_ms=round(attempt.latency * 1000),
        )


@dataclass(frozen=True, slots=True)
class WebhookParts:
    """What the API and the composition root need of webhooks: the routes seal secrets and check
    destinations; ``Tally.start`` starts the dispatcher where the workers run."""

    sealer: ConfiguredSecretBox
    destinations: Destinations
    dispatcher: webhooks.Dispatcher


def webhook_parts(settings: Settings, database: Database, wakeups: Wakeups) -> WebhookParts:
    log = get_logger("tally.webhooks")

    def failed(error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        log.warning("webhook dispatch failed", job="webhook_dispatch", error=reason)

    return WebhookParts(
        ConfiguredSecretBox(settings),
        Destinations(settings.webhook_allowed_hosts, timeout=settings.webhook_timeout_ms / 1000),
        webhooks.Dispatcher(
            database,
            wakeups,
            poll_seconds=settings.worker_poll_ms / 1000,
            max_attempts=settings.webhook_max_attempts,
            on_error=failed,
        ),
    )


def build_worker(
    settings: Settings,
    database: Database,
    wakeups: Wakeups,
    observer: JobObserver | None,
    delivered: Callable[[float], None] | None = None,
) -> Worker:
    return Worker(
        database,
        queues(settings, database, delivered),
        name=f"{socket.gethostname()}:{os.getpid()}",
        wakeups=wakeups,
        poll_seconds=settings.worker_poll_ms / 1000,
        observer=observer,
        context=job_context,
    )


@contextlib.contextmanager
def job_context(job: Job) -> Iterator[None]:
    """A job's log lines carry its queue as ``job`` and the id of the request that queued it."""
    before = (current_job(), current_request_id())
    set_job(job.queue)
    set_request_id(job.request_id)
    try:
        yield
    finally:
        set_job(before[0])
        set_request_id(before[1])
