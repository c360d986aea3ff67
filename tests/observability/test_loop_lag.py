"""The loop-lag watcher: a loop held by synchronous work shows as lag, and a long hold as a warning."""

from __future__ import annotations

import asyncio
import contextlib
import time

from structlog.testing import capture_logs

from tally.observability.loop_lag import BLOCKED_SECONDS, PERIOD, watch_loop_lag


async def test_a_loop_held_past_half_a_second_is_measured_and_logged() -> None:
    lags: list[float] = []
    with capture_logs() as logs:
        watching = asyncio.create_task(watch_loop_lag(lags.append))
        await asyncio.sleep(PERIOD * 3)  # a few ticks on a free loop
        time.sleep(BLOCKED_SECONDS + 0.1)  # noqa: ASYNC251 - the point: hold the loop
        await asyncio.sleep(PERIOD * 2)  # the tick the hold delayed reports it
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert max(lags) >= BLOCKED_SECONDS  # the hold is at least this long, however busy the machine
    blocked = [line for line in logs if line["event"] == "event loop blocked"]
    assert blocked
    assert blocked[0]["log_level"] == "warning"
    assert blocked[0]["blocked_ms"] >= BLOCKED_SECONDS * 1000
