"""How late the event loop runs: every request of a process waits behind anything that holds it.

A watcher sleeps ``PERIOD`` and measures how much later than asked it wakes. The lag goes into
``tally_event_loop_lag_seconds``; a lag of ``BLOCKED_SECONDS`` or more also writes a warning line
(``event loop late``), because a loop that late stalls every connection of the process at once (and
uvicorn's 5 s keep-alive timer may then close clients' idle connections as they send). The cause is
whatever ran meanwhile: one synchronous call on a slow disk, a long computation, a paused process,
or more ready work than the process can do (overload: thousands of connections at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

PERIOD = 0.1
BLOCKED_SECONDS = 0.5
_log = structlog.get_logger(__name__)


def log_blocked(lag: float) -> None:
    _log.warning("event loop late", late_ms=round(lag * 1000, 1))


async def watch_loop_lag(
    observe: Callable[[float], None] | None, blocked: Callable[[float], None] = log_blocked
) -> None:
    """Measure the loop's lag until cancelled; ``observe`` (the histogram) may be ``None``, and
    ``blocked`` hears each lag of ``BLOCKED_SECONDS`` or more (by default, the warning line)."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(PERIOD)
        lag = max(0.0, time.monotonic() - asked - PERIOD)
        if observe is not None:
            observe(lag)
        if lag >= BLOCKED_SECONDS:
            blocked(lag)
