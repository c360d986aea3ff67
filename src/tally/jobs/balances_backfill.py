"""``backfill-account-balances``: copy every account's balances into ``account_balances`` (ADR 0034).

The backfill step of the expand–contract change that moves balances out of ``accounts``. Run once
(its only period is ``all``) after ``tally db upgrade`` has expanded the schema and before
``tally db contract``. Each step copies a batch of accounts in pk order and leaves the rows that a
write (through the schema's triggers) put there first, which are at least as new as the copy; so a
step run twice, or a run resumed after a kill, copies nothing twice and overwrites nothing newer.

Its finished run is also the signal every process waits for: from then on they read and write
``account_balances`` only (``store.balance_shape``), and the contract step may drop the old columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tally.jobs.runs import Step
from tally.services.ports import Transaction

PERIOD = "all"


class BackfillAccountBalances:
    """Copies, per step, up to ``batch`` accounts' balances into ``account_balances``."""

    name = "backfill-account-balances"
    unit = "accounts"
    reads_first = False
    schedule = None  # run on demand, once: part of shipping the schema change (docs/operations.md)

    def __init__(self, batch: int = 1000) -> None:
        self.batch = batch

    def period(self, text: str | None, now: datetime) -> str:
        del now
        if text not in (None, PERIOD):
            raise ValueError(f"{self.name} has one period, {PERIOD!r}: it copies every account once.")
        return PERIOD

    async def total(self, tx: Transaction, period: str) -> int | None:
        del period
        return await tx.accounts.count()

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        del period
        after = None if state is None else state["after_pk"]
        copied = 0 if state is None else int(state["accounts"])
        visited, last = await tx.accounts.backfill_balances(after, self.batch)
        if last is None:
            return Step(done=0, state={"after_pk": after, "accounts": copied}, finished=True)
        return Step(
            done=visited,
            state={"after_pk": last, "accounts": copied + visited},
            finished=visited < self.batch,
        )
