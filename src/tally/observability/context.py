"""The request id of the work in progress, carried by a context variable into every log line."""

from __future__ import annotations

import re
import uuid
from contextvars import Context, ContextVar

_request_id: ContextVar[str | None] = ContextVar("tally_request_id", default=None)
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A key fits the request-id charset. One sent as X-Request-ID by mistake would be written into every
# log line and event of its request, so it is treated as malformed and replaced.
_SECRET_SHAPED = re.compile(r"tally_(?:root|key)_|whsec_")


def accept_request_id(candidate: str | None) -> str:
    """The client's ``X-Request-ID`` when well formed and not shaped like a secret, else a fresh one."""
    if candidate is not None and _WELL_FORMED.fullmatch(candidate) and not _SECRET_SHAPED.search(candidate):
        return candidate
    return f"req_{uuid.uuid4().hex}"


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> None:
    _request_id.set(request_id)


_job: ContextVar[str | None] = ContextVar("tally_job", default=None)


def set_job(name: str | None) -> None:
    """Name the background work of this context (a task): its lines carry ``job``, not a request id."""
    _job.set(name)


def current_job() -> str | None:
    return _job.get()


_request_ids: ContextVar[tuple[str, ...] | None] = ContextVar("tally_request_ids", default=None)


def set_request_ids(request_ids: tuple[str, ...] | None) -> None:
    """The requests the work of this context serves (a group of transfers, ADR 0042): its lines
    carry ``request_ids``, so that each request's access line finds the statements that wrote it."""
    _request_ids.set(request_ids)


def current_request_ids() -> tuple[str, ...] | None:
    return _request_ids.get()


def task_context(job: str) -> Context:
    """A fresh context for a background task whose lines carry ``job`` (nothing of the creator's
    request, budget or reads). ``background.job_context`` is the other kind: a queued job's lines."""
    context = Context()
    context.run(set_job, job)
    return context
