"""How a long run shows its progress: a bar on a terminal, a log line now and then elsewhere.

On a TTY the bar is redrawn in place on stderr (``\\r``), at most ``redraws_per_second`` times:
``statements 2026-01-31 [#####.....]  52%  5,200/10,000 accounts  1,840/s  ETA 0:00:03``. With an
unknown total it is a counter with the rate. Not on a TTY (a pipe, a log file, the scheduler), one log
line every ``log_every`` seconds instead, so a log is not flooded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from tally.observability.logging import get_logger

BAR_WIDTH = 30

_log = get_logger("tally.jobs")


class TerminalProgress:
    """Implements ``jobs.runs.Progress``; ``clock`` is ``time.monotonic`` unless a test injects one."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        redraws_per_second: float = 10.0,
        log_every: float = 5.0,
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._redraw_gap = 1.0 / redraws_per_second
        self._log_every = log_every
        self._label = ""
        self._unit = ""
        self._total: int | None = None
        self._first = 0  # done when this runner started: the rate counts only its own work
        self._done = 0
        self._started = 0.0
        self._shown_at: float | None = None
        self._width = 0  # of the last line drawn, to blank what a shorter line leaves behind

    def start(self, job: str, period: str, unit: str, done: int, total: int | None) -> None:
        self._label = f"{job} {period}"
        self._unit = unit
        self._total = total
        self._first = self._done = done
        self._started = self._clock()
        self._shown_at = None
        self._show(force=True)

    def update(self, done: int) -> None:
        self._done = done
        self._show(force=False)

    def finish(self) -> None:
        self._show(force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def line(self) -> str:
        """The progress as one line of text, as drawn now."""
        elapsed = self._clock() - self._started
        rate = (self._done - self._first) / elapsed if elapsed > 0 else 0.0
        parts = [self._label]
        if self._total is not None and self._total > 0:
            fraction = min(1.0, self._done / self._total)
            filled = round(fraction * BAR_WIDTH)
            parts.append(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}")
            parts.append(f"{self._done:,}/{self._total:,} {self._unit}")
        else:
            parts.append(f"{self._done:,} {self._unit}")
        parts.append(f"{rate:,.0f}/s")
        if self._total is not None and self._done < self._total:
            parts.append(f"ETA {_clock_time((self._total - self._done) / rate) if rate > 0 else '?'}")
        return "  ".join(parts)

    def _show(self, *, force: bool) -> None:
        now = self._clock()
        gap = self._redraw_gap if self._tty else self._log_every
        if not force and self._shown_at is not None and now - self._shown_at < gap:
            return
        self._shown_at = now
        text = self.line()
        if self._tty:
            self._stream.write("\r" + text.ljust(self._width))
            self._stream.flush()
            self._width = len(text)
        else:
            _log.info("batch job progress", progress=text, done=self._done, total=self._total)


def _clock_time(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
