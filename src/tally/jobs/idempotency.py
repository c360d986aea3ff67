"""``purge-idempotency-keys``: delete stored replies whose retention ended by the end of an hour.

Each record carries its own ``keep_until`` (``services.idempotency.RETENTION`` after it was stored,
24 h, the promise of API.md), so the purge needs no retention of its own: it deletes, oldest first
through the ``keep_until`` index, the records whose ``keep_until`` is before the period's end, a
bounded batch per transaction so the write lock is never held for long.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tally.jobs.runs import Step
from tally.jobs.schedule import HOURLY, Schedule
from tally.services.ports import Transaction


class PurgeIdempotencyKeys:
    name = "purge-idempotency-keys"
    unit = "keys"
    reads_first = False
    schedule: Schedule = HOURLY

    def __init__(self, batch: int = 1000) -> None:
        self.batch = batch  # records deleted per transaction

    def period(self, text: str | None, now: datetime) -> str:
        return self.schedule.period(text, now)

    async def total(self, tx: Transaction, period: str) -> int | None:
        _, end = self.schedule.bounds(period)
        return await tx.idempotency.count_expired(end)

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        _, end = self.schedule.bounds(period)
        deleted = await tx.idempotency.purge(end, self.batch)
        before = 0 if state is None else int(state["deleted"])
        return Step(done=deleted, state={"deleted": before + deleted}, finished=deleted < self.batch)
