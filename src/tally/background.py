"""Background work of a Tally process: the job workers and their queues (ADR 0023).

``tally serve`` runs them beside the API by default (``TALLY_WORKER_ENABLED``); ``tally worker``
runs them alone, as many processes as the queue needs. Every queue is registered here, with its
handler and its concurrency per process.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from tally.config import Settings
from tally.observability.context import current_job, current_request_id, set_job, set_request_id
from tally.services.ports import Database
from tally.services.queue_ports import Job
from tally.services.worker import JobObserver, Queue, Wakeups, Worker


def queues(settings: Settings, database: Database) -> list[Queue]:
    """Every queue this process works on."""
    del settings, database  # the webhook and batch queues register here
    return []


def build_worker(
    settings: Settings, database: Database, wakeups: Wakeups, observer: JobObserver | None
) -> Worker:
    return Worker(
        database,
        queues(settings, database),
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
