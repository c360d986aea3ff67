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

    def failed(self) -> None:
        """An attempt failed. While already open, this changes nothing: the requests that were in
        flight when the server went away fail together, and count as one failure."""
        if not self.allows():
            return
        self._failures += 1
        wait = min(self._longest, self._cooldown * 2 ** (self._failures - 1))
        self._open_until = self._clock() + wait

    def succeeded(self) -> None:
        self._failures = 0
        self._open_until = 0.0
