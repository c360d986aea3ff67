"""Statement timing: per shape and role, per request, and a log line for the slow ones.

``QueryTimer.attach`` listens to an engine's ``before_cursor_execute`` and ``after_cursor_execute``
events, so the store runs no timing code of its own; the composition root attaches it to each of
the database's ``engines`` with the database's ``role_of``. SQLite statements run on the event loop
thread, inside the task of the request that issued them, so a context variable (``QueryTally``)
carries each request's count and time from here to the access line.

A statement that fails is not timed (``after_cursor_execute`` does not fire); its error answers the
request, and the request's own latency and status count it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event

from tally.observability.logging import get_logger
from tally.observability.metrics import Children, Metrics
from tally.observability.statements import Shape, shape_of

_log = get_logger("tally.db")
_STARTED = "tally.statement_started"
# More distinct shapes than this means statements are being built with varying text; past it they
# share one label rather than grow the series without bound.
MAX_SHAPES = 500
MAX_TEXTS = 4 * MAX_SHAPES  # texts remembered (IN lists of several lengths are several texts, one shape)
_OTHER = Shape("other", "")


@dataclass(slots=True)
class QueryTally:
    """The statements one request ran: how many, and their time in seconds."""

    count: int = 0
    seconds: float = 0.0

    def add(self, other: QueryTally) -> None:
        self.count += other.count
        self.seconds += other.seconds


_tally: ContextVar[QueryTally | None] = ContextVar("tally_query_tally", default=None)


def current_tally() -> QueryTally | None:
    """The tally of the work in this context, if it keeps one."""
    return _tally.get()


def start_tally() -> QueryTally:
    """Count the statements of the work in this context (a request) from now on."""
    tally = QueryTally()
    _tally.set(tally)
    return tally


class QueryTimer:
    """Times statements into ``metrics``; logs those slower than ``slow_ms`` (``None``: never)."""

    def __init__(self, metrics: Metrics, *, slow_ms: float | None) -> None:
        self._metrics = metrics
        self._slow_seconds = None if slow_ms is None else slow_ms / 1000
        self._shapes: dict[str, Shape] = {}
        self._names: set[str] = set()
        self._latency = Children(metrics.query_latency)

    def attach(self, engine: Engine, role_of: Callable[[Connection], str]) -> None:
        def before(conn: Connection, *_: Any) -> None:
            conn.info[_STARTED] = time.perf_counter()

        def after(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
            started = conn.info.pop(_STARTED, None)
            if started is not None:
                self._observe(role_of(conn), statement, time.perf_counter() - started)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)

    def statements(self) -> dict[str, str]:
        """Each statement shape this process has run, by name, with its normalised text."""
        return {shape.name: shape.text for shape in self._shapes.values()}

    def _observe(self, role: str, statement: str, seconds: float) -> None:
        shape = self._shape(statement)
        self._latency(role, shape.name).observe(seconds)
        tally = _tally.get()
        if tally is not None:
            tally.count += 1
            tally.seconds += seconds
        if self._slow_seconds is not None and seconds >= self._slow_seconds:
            self._metrics.slow_queries.labels(role, shape.name).inc()
            _log.warning(
                "slow query",
                statement=shape.name,
                role=role,
                duration_ms=round(seconds * 1000, 3),
                sql=shape.text[:1000],
            )

    def _shape(self, statement: str) -> Shape:
        shape = self._shapes.get(statement)
        if shape is not None:
            return shape
        shape = shape_of(statement)
        if shape.name not in self._names:
            if len(self._names) >= MAX_SHAPES:
                return _OTHER
            self._names.add(shape.name)
        if len(self._shapes) < MAX_TEXTS:
            self._shapes[statement] = shape
        return shape
