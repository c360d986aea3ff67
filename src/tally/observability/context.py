"""The request id of the work in progress, carried by a context variable into every log line."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("tally_request_id", default=None)
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def accept_request_id(candidate: str | None) -> str:
    """The client's ``X-Request-ID`` when well formed, else a fresh one."""
    if candidate is not None and _WELL_FORMED.fullmatch(candidate):
        return candidate
    return f"req_{uuid.uuid4().hex}"


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> None:
    _request_id.set(request_id)
