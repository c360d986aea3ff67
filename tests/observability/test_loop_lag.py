"""The loop-lag watcher: a loop held by synchronous work shows as lag, and a long hold as a warning."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tally.observability.loop_lag import BLOCKED_SECONDS, PERIOD, watch_loop_lag


async def test_a_loop_held_past_half_a_second_is_measured_and_reported() -> None:
    lags: list[float] = []
    blocked: list[float] = []
    watching = asyncio.create_task(watch_loop_lag(lags.append, blocked.append))
    await asyncio.sleep(PERIOD * 3)  # a few ticks on a free loop
    time.sleep(BLOCKED_SECONDS + 0.1)  # noqa: ASYNC251 - the point: hold the loop
    await asyncio.sleep(PERIOD * 2)  # the tick the hold delayed reports it
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    # The hold lasts at least this long, however busy the machine: a lower bound, not a timing.
    assert max(lags) >= BLOCKED_SECONDS
    assert blocked
    assert min(blocked) >= BLOCKED_SECONDS
