"""Retrying a write transaction that lost a race (ADR 0020).

On PostgreSQL two transactions can collide in ways the lock order does not rule out: a deadlock
through a foreign key or an index page, a serialization failure, or two inserts of one unique
value (two requests with one idempotency key or client id, on two processes). The adapter turns
these into ``TransientConflict``; nothing of the losing transaction was applied, so running it
again from the start is safe, and the second run sees what the winner committed (the stored
reply, the existing transfer). A bounded number of attempts with short jittered pauses, never past
the request's budget; after that the client gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tally.domain.errors import TransientConflict
from tally.services.deadline import remaining

T = TypeVar("T")
ATTEMPTS = 5
_FIRST_PAUSE = 0.002  # seconds; doubles per attempt, full jitter
_LONGEST_PAUSE = 0.05


async def retry_conflicts(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` until it does not end in ``TransientConflict``, at most ``ATTEMPTS`` times."""
    for tries in range(1, ATTEMPTS + 1):
        try:
            return await attempt()
        except TransientConflict:
            pause = random.uniform(0, min(_LONGEST_PAUSE, _FIRST_PAUSE * 2**tries))  # noqa: S311 - jitter
            if tries == ATTEMPTS or pause >= remaining(1.0):
                raise
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")
