"""What a read asks of the database, and what the answer turned out to be (API.md, ADR 0021).

The API sets the read's intent from ``Tally-Consistency`` and ``Tally-Consistency-Token``; the
database adapter reads it to pick where the read runs, and, when the answer came from somewhere
that may lag (a replica), reports it on the request's ``ReadOrigin`` so the API can label the
response ``Tally-Stale: true`` with ``Tally-As-Of``. Writes ignore the intent: they are always
strong, on the primary.

Both live in context variables, like the time budget (``services.deadline``): no port signature
grows a parameter that only the adapter reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Consistency(StrEnum):
    STRONG = "strong"  # the primary, or 503 unavailable
    AVAILABLE = "available"  # a replica within the lag bound, else the primary, else a stale replica
    # Not a header value: the primary while it answers, else a replica (authentication, so that
    # a revoked key is refused at once, and reads still answer while the primary is down).
    PRIMARY_PREFERRED = "primary_preferred"

    @classmethod
    def from_header(cls, value: str) -> Consistency:
        level = cls(value.strip().lower())
        if level not in (cls.STRONG, cls.AVAILABLE):
            raise ValueError(value)
        return level


@dataclass(frozen=True, slots=True)
class ReadIntent:
    level: Consistency = Consistency.AVAILABLE
    token: str | None = None  # a consistency token the answer must include


@dataclass(slots=True)
class ReadOrigin:
    """Filled in by the adapter: set when some answer of the request may lag, and from when."""

    as_of: datetime | None = None

    @property
    def stale(self) -> bool:
        return self.as_of is not None


_intent: ContextVar[ReadIntent | None] = ContextVar("tally_read_intent", default=None)
_origin: ContextVar[ReadOrigin | None] = ContextVar("tally_read_origin", default=None)
_DEFAULT = ReadIntent()


def read_intent() -> ReadIntent:
    return _intent.get() or _DEFAULT


def begin_reads(intent: ReadIntent, origin: ReadOrigin | None = None) -> ReadOrigin:
    """Set the intent of this request's reads; return the origin the adapter will fill in."""
    origin = origin or ReadOrigin()
    _intent.set(intent)
    _origin.set(origin)
    return origin


def preferring_primary() -> AbstractContextManager[None]:
    """Reads inside the block go to the primary while it answers (``PRIMARY_PREFERRED``)."""
    return reading_at(Consistency.PRIMARY_PREFERRED)


@contextmanager
def reading_at(level: Consistency) -> Iterator[None]:
    """Reads inside the block ask for ``level``, with no token (work of its own, not a request's)."""
    reset = _intent.set(ReadIntent(level))
    try:
        yield
    finally:
        _intent.reset(reset)


def report_lagging(as_of: datetime) -> None:
    """An answer of this request comes from data known current only as of ``as_of``."""
    origin = _origin.get()
    if origin is not None and (origin.as_of is None or as_of < origin.as_of):
        origin.as_of = as_of  # several reads: the oldest bounds the whole answer


def lagging() -> datetime | None:
    """Whether (from when) an answer of this request so far came from data that may lag."""
    origin = _origin.get()
    return None if origin is None else origin.as_of
