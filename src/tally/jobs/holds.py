"""``expire-holds``: write down the holds that came due by the end of a minute (ADR 0014, 0032).

Reads already treat a due hold as expired; writing it down (status, release entries, the
``transfer.expired`` event) is what announces it. The hold sweeper of every process does this each
second; this job does the same per minute under a run record, so that ``tally jobs list`` shows the
expiry is kept up and an operator can re-run it. Each hold expires once whoever gets to it: its
``holds`` rows go in the transaction that expires it, so neither the sweeper nor a later step finds
it again, and its event is written exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tally.jobs.runs import Step
from tally.jobs.schedule import EVERY_MINUTE, Schedule
from tally.services.holds import expire_holds_due
from tally.services.ports import Transaction


class ExpireHolds:
    """Expires, per step, up to ``batch`` holds due at the period's end, oldest expiry first.

    The state counts the due holds the steps found (``expired``). Locking a hold's accounts also
    expires every other hold due on them, in expiry order; those are written down in the same step
    but counted only if a step found them first, so the count can fall short of the events written.
    """

    name = "expire-holds"
    unit = "holds"
    reads_first = False
    schedule: Schedule = EVERY_MINUTE

    def __init__(self, batch: int = 100) -> None:
        self.batch = batch  # holds per transaction: each locks its transfer and accounts

    def period(self, text: str | None, now: datetime) -> str:
        return self.schedule.period(text, now)

    async def total(self, tx: Transaction, period: str) -> int | None:
        del tx, period
        return None  # counting due holds would walk the same index as expiring them

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        _, end = self.schedule.bounds(period)
        expired = 0 if state is None else int(state["expired"])
        # The time is fixed before the locks, as the sweeper does (services.holds.expire_due_holds).
        now = await tx.now()
        due = await expire_holds_due(tx, min(now, _last_instant(end)), self.batch)
        return Step(done=due, state={"expired": expired + due}, finished=due < self.batch)


def _last_instant(end: datetime) -> datetime:
    """The last microsecond of a period: ``expiring(at)`` takes holds due at or before ``at``."""
    return end - timedelta(microseconds=1)
