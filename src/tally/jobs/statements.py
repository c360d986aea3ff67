"""The ``statements`` batch job: each account's postings of one UTC day, summed (ADR 0033).

For every account with at least one posting on the day: the posted balance at the day's start and
end, the sums of its debits and credits, and their number, stored in ``statements``. A day is only
run once it has ended (and five minutes more, so that the day's last writes have committed): its
entries never change again, so the run is deterministic, whether it runs once, is killed and
resumed, or runs while transfers of the next day go on.

Steps walk the day's accounts in ``pk`` order; the checkpoint is the last account pk done, stored
with the step's rows, so a resumed run starts after it and no row is written twice (the table's
primary key would refuse it loudly: that would be a bug, never something to skip). A step sums in
a background read (``reads_first``: no write lock held, on SQLite off the event loop) and hands its
rows to the write transaction that stores them with the checkpoint (ADR 0044); the day's entries
no longer change, so the sums read a moment before are the sums then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tally.jobs.runs import Step
from tally.jobs.schedule import DAILY_AFTER_MIDNIGHT, Schedule
from tally.services.ports import Transaction

BATCH = 500  # accounts per step: one background read and one short write transaction each


@dataclass(slots=True)
class StatementsJob:
    """Implements ``jobs.runs.BatchJob``; a period is a UTC day, ``YYYY-MM-DD``."""

    batch: int = BATCH
    name: str = "statements"
    unit: str = "accounts"
    reads_first: bool = True
    schedule: Schedule = field(default=DAILY_AFTER_MIDNIGHT)

    def period(self, text: str | None, now: datetime) -> str:
        """The day ``text`` names, refused unless it has ended; by default the previous UTC day."""
        return self.schedule.period(text, now)

    async def total(self, tx: Transaction, period: str) -> int | None:
        start, end = self.schedule.bounds(period)
        return await tx.statements.count_accounts_with_entries(start, end)

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        start, end = self.schedule.bounds(period)
        state = state or {"day": period, "after": None, "accounts": 0, "statements": 0}
        # Accounts with any entry that day; those whose entries were only holds or releases get no
        # statement (``compute`` leaves them out) but still count as visited.
        pks = await tx.statements.accounts_with_entries(start, end, after_pk=state["after"], limit=self.batch)
        statements = await tx.statements.compute(pks, start.date(), start, end)

        async def add(write: Transaction) -> None:
            await write.statements.add(statements)

        state = {
            "day": period,
            "after": pks[-1] if pks else state["after"],
            "accounts": state["accounts"] + len(pks),
            "statements": state["statements"] + len(statements),
        }
        return Step(
            done=len(pks), state=state, finished=len(pks) < self.batch, apply=add if statements else None
        )
