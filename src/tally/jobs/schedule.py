"""When a batch job is due, and the periods it runs for.

A period is a UTC calendar interval named by its start: a day ``2026-01-31``, an hour
``2026-01-31T13``, a minute ``2026-01-31T13:05``. A job runs for a period once the period has ended;
the schedule's ``delay`` adds a grace after the end (statements wait until 00:05 so that the last
writes of the day have committed). Names sort in time order, so the latest period of a job is the
greatest name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Every(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


_FORMATS = {Every.MINUTE: "%Y-%m-%dT%H:%M", Every.HOUR: "%Y-%m-%dT%H", Every.DAY: "%Y-%m-%d"}
_EXAMPLES = {Every.MINUTE: "2026-01-31T13:05", Every.HOUR: "2026-01-31T13", Every.DAY: "2026-01-31"}
_LENGTHS = {Every.MINUTE: timedelta(minutes=1), Every.HOUR: timedelta(hours=1), Every.DAY: timedelta(days=1)}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A job is due for each period of length ``every``, ``delay`` after the period ends."""

    every: Every
    delay: timedelta = timedelta(0)

    @property
    def length(self) -> timedelta:
        return _LENGTHS[self.every]

    def start_of(self, at: datetime) -> datetime:
        """The start of the period that contains ``at`` (UTC)."""
        at = at.astimezone(UTC)
        if self.every is Every.DAY:
            return at.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.every is Every.HOUR:
            return at.replace(minute=0, second=0, microsecond=0)
        return at.replace(second=0, microsecond=0)

    def name(self, start: datetime) -> str:
        return start.astimezone(UTC).strftime(_FORMATS[self.every])

    def due(self, now: datetime) -> str:
        """The latest period due at ``now``: the last one that ended at least ``delay`` ago."""
        return self.name(self.start_of(now - self.delay) - self.length)

    def bounds(self, period: str) -> tuple[datetime, datetime]:
        """``[start, end)`` of a period name; ``ValueError`` when it is not one of this schedule."""
        try:
            start = datetime.strptime(period, _FORMATS[self.every]).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(
                f"{period!r} is not a period of this job: it runs per {self.every.value}, "
                f"named like {_EXAMPLES[self.every]} (UTC)."
            ) from None
        if self.name(start) != period:  # strptime accepts "2026-1-5"; only the canonical name names it
            raise ValueError(f"{period!r} is not written canonically; write {self.name(start)}.")
        return start, start + self.length

    def period(self, text: str | None, now: datetime) -> str:
        """``text`` validated as a period that has ended by ``now``; the period due at ``now`` for ``None``.

        A period still in progress is refused: its run would finish on part of its data and a later
        run of it would then find it finished.
        """
        if text is None:
            return self.due(now)
        _, end = self.bounds(text.strip())
        if end > now:
            raise ValueError(f"Period {text.strip()} has not ended yet (it ends {end.isoformat()}).")
        return text.strip()

    def describe(self) -> str:
        """In words, for ``tally jobs list``."""
        if self.delay:
            return f"every {self.every.value}, {_words(self.delay)} after it ends"
        return f"every {self.every.value}"


def _words(delay: timedelta) -> str:
    seconds = int(delay.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


DAILY_AFTER_MIDNIGHT = Schedule(Every.DAY, timedelta(minutes=5))
EVERY_MINUTE = Schedule(Every.MINUTE)
HOURLY = Schedule(Every.HOUR)
