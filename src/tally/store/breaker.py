"""A circuit breaker for the primary: when it is down, writes fail fast instead of hanging.

After a connection failure the breaker opens for a cool-down that doubles with each failure in a
row (up to a ceiling). While it is open, writes answer 503 ``unavailable`` at once, without a
connection attempt; once the cool-down has passed, the next attempt goes through, and its success
(or a successful health probe) closes the breaker. So writes resume without a restart as soon as
the primary answers again (ADR 0021).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Breaker:
    def __init__(
        self,
        *,
        cooldown: float = 1.0,
        longest_cooldown: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cooldown = cooldown
        self._longest = longest_cooldown
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._failed_at = -math.inf

    @property
    def closed(self) -> bool:
        """No failure since the last success: the server is believed up."""
        return self._failures == 0

    def allows(self) -> bool:
        """Whether an attempt may go through now (closed, or open with its cool-down over)."""
        return self._clock() >= self._open_until

    def retry_after(self) -> int:
        """Whole seconds until the next attempt is allowed, at least 1 (for ``Retry-After``)."""
        return max(1, math.ceil(self._open_until - self._clock()))

    def now(self) -> float:
        """The breaker's clock: when an attempt starts, for ``succeeded``."""
        return self._clock()

    def failed(self) -> None:
        """An attempt failed. While already open, this changes nothing: the requests that were in
        flight when the server went away fail together, and count as one failure."""
        self._failed_at = self._clock()
        if not self.allows():
            return
        self._failures += 1
        wait = min(self._longest, self._cooldown * 2 ** (self._failures - 1))
        self._open_until = self._clock() + wait

    def succeeded(self, started: float | None = None) -> None:
        """An attempt that began at ``started`` (the breaker's clock; ``None``: just now) succeeded.

        One that began before the latest failure says nothing about now: its answer may have left
        the server before it went away, and must not close the breaker again.
        """
        if started is not None and started < self._failed_at:
            return
        self._failures = 0
        self._open_until = 0.0
