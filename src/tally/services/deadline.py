"""The time budget of the current request, carried in a context variable.

The API sets it from ``Tally-Timeout-Ms`` (capped by the route's maximum); adapters read it to
bound every wait: the write lock, the pool, statement timeouts. Work that cannot finish inside it
ends with ``DeadlineExceeded`` before anything is applied (ADR 0010).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deadline:
    at: float  # time.monotonic() seconds

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


_current: ContextVar[Deadline | None] = ContextVar("tally_deadline", default=None)


def current_deadline() -> Deadline | None:
    return _current.get()


def remaining(default: float) -> float:
    """Seconds left in the current budget, or ``default`` outside any request."""
    deadline = _current.get()
    return default if deadline is None else deadline.remaining()


def set_deadline(deadline: Deadline | None) -> None:
    _current.set(deadline)
