"""Where account balances live while their move to ``account_balances`` ships (ADR 0034).

The move is an expand–contract change, and this code runs in every phase of it:

- ``before`` (baseline schema): balances are columns of ``accounts``; nothing else exists.
- expanded (revision ``0003_account_balances``): ``account_balances`` exists and triggers keep it
  and the old columns equal whichever side a process writes. Until the backfill job
  ``backfill-account-balances`` has finished, the new table may lack accounts nobody wrote since the
  expansion, so this code keeps reading and writing the OLD columns; once it has finished, it reads
  and writes the NEW table only (the triggers copy each write back for older processes).
- contracted (revision ``c0001_account_balances``): the old columns and the triggers are gone.

So this code switches from the old columns to the new table once, ``SWITCH_DELAY`` after the
backfill finished (a replica within its lag bound then holds every copied row too), and never names
an old column afterwards: the contract step, which waits until every process has looked again
(``CONTRACT_GRACE_SECONDS`` in revision ``c0001``), cannot break a statement of a running process.

Each process looks at the schema at start and every ``TALLY_SCHEMA_CHECK_MS`` after that (one
short catalog query); ``uses_new_table`` is what the accounts repository reads per statement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:  # the repositories' base module imports this one
    from tally.store.repositories.base import SqlConnection

BACKFILL_JOB = "backfill-account-balances"
BACKFILL_PERIOD = "all"
SWITCH_DELAY = 2.0  # seconds after the backfill finished; less than the contract's grace (5 s)

_SQLITE_PROBE = text(
    "SELECT"
    " EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'account_balances'),"
    " EXISTS (SELECT 1 FROM pragma_table_info('accounts') WHERE name = 'posted'),"
    " EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'job_runs')"
)
_POSTGRES_PROBE = text(
    "SELECT to_regclass('account_balances') IS NOT NULL,"
    " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('accounts')"
    "   AND attname = 'posted' AND NOT attisdropped),"
    " to_regclass('job_runs') IS NOT NULL"
)
# When the backfill finished (µs), if it has; the contract step reads it too (migrations.balance_triggers).
BACKFILLED_AT = text(
    "SELECT finished_at FROM job_runs WHERE job = :job AND period = :period AND status = 'finished'"
)
BACKFILL_RUN = {"job": BACKFILL_JOB, "period": BACKFILL_PERIOD}


@dataclass(slots=True)
class BalanceShape:
    """The phase this process last saw; starts as the head schema (contracted)."""

    new_table: bool = True
    old_columns: bool = False
    backfilled: bool = True
    switch_delay: float = SWITCH_DELAY

    @property
    def uses_new_table(self) -> bool:
        return self.new_table and (self.backfilled or not self.old_columns)

    @property
    def phase(self) -> str:
        if not self.new_table:
            return "before"
        if self.old_columns:
            return "expanded, backfilled" if self.backfilled else "expanded"
        return "contracted"

    def _seen(self, new_table: bool, old_columns: bool, backfilled_at: int | None) -> None:
        self.new_table, self.old_columns = bool(new_table), bool(old_columns)
        switched = backfilled_at is not None and time.time() - backfilled_at / 1e6 >= self.switch_delay
        self.backfilled = switched or not self.old_columns

    async def look(self, conn: SqlConnection) -> None:
        """Refresh from the catalog (one probe of this dialect, then the backfill's run if needed)."""
        probe = _POSTGRES_PROBE if conn.dialect.name == "postgresql" else _SQLITE_PROBE
        found: Any = (await conn.execute(probe)).one()
        new_table, old_columns, has_runs = found
        at = None
        if has_runs and new_table and old_columns:
            at = (await conn.execute(BACKFILLED_AT, BACKFILL_RUN)).scalar()
        self._seen(new_table, old_columns, at)


async def keep_looking(look: Callable[[], Awaitable[None]], every: float) -> None:
    """Run ``look`` every ``every`` seconds until cancelled; a failed look keeps the last view
    (the database may be down: the view changes only through migrations, which need it up)."""
    while True:
        await asyncio.sleep(every)
        try:
            await look()
        except Exception:  # noqa: S112 - an outage shows in the requests, which log it
            continue
