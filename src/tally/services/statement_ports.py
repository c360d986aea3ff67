"""Ports of daily statements and of reconciliation: what the two batch jobs and the statements read
need from a database (ADR 0033).

Days are UTC days; a day's entries are those with ``start <= created_at < end``. Entries of a day
that has ended never change (append-only, dated by the database clock in commit order per account,
ADR 0020), so everything computed here for a past day is the same whenever it is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from tally.services.ports import BalanceAt


@dataclass(frozen=True, slots=True)
class DayStatement:
    """One account's postings on one day. Balances are ``posted`` (signed on the normal side);
    ``debits`` and ``credits`` are the sums of the day's posting amounts by direction."""

    account_pk: int
    day: date
    opening_balance: int
    closing_balance: int
    debits: int
    credits: int
    postings: int


@dataclass(frozen=True, slots=True)
class EntryTotals:
    """An account's entries summed by kind and direction, and the balance its last entry records.

    ``last`` is ``None`` for an account without entries.
    """

    posting_debits: int = 0
    posting_credits: int = 0
    held_debits: int = 0
    held_credits: int = 0
    released_debits: int = 0
    released_credits: int = 0
    last: BalanceAt | None = None


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """Every entry of one currency's accounts, summed by kind and direction (all ledgers)."""

    currency: str
    posting_debits: int = 0
    posting_credits: int = 0
    held_debits: int = 0
    held_credits: int = 0
    released_debits: int = 0
    released_credits: int = 0


class StatementRepository(Protocol):
    async def accounts_with_entries(
        self, start: datetime, end: datetime, *, after_pk: int | None, limit: int
    ) -> list[int]:
        """Pks of accounts with an entry of any kind in ``[start, end)``, ascending, after ``after_pk``."""
        ...

    async def count_accounts_with_entries(self, start: datetime, end: datetime) -> int: ...

    async def compute(
        self, account_pks: Sequence[int], day: date, start: datetime, end: datetime
    ) -> list[DayStatement]:
        """The statements of ``day`` of those of ``account_pks`` that have a posting in
        ``[start, end)``, by account pk. The opening balance is the ``posted_after`` of the account's
        last posting before ``start`` (0 without one), the closing balance that of its last one."""
        ...

    async def add(self, statements: Sequence[DayStatement]) -> None:
        """Insert; a statement already stored for the same (account, day) is an error, never replaced."""
        ...

    async def of_account(self, account_pk: int, first: date, last: date) -> list[DayStatement]:
        """The account's stored statements of days ``first..last``, oldest first."""
        ...

    async def finished_days(self, first: date, last: date, limit: int) -> list[date]:
        """Days ``first..last`` whose ``statements`` run has finished, oldest first, at most ``limit``."""
        ...

    async def posted_before(self, account_pk: int, at: datetime) -> int:
        """The ``posted_after`` of the account's last posting before ``at``; 0 without one."""
        ...


class ReconciliationRepository(Protocol):
    """Sums over entries, for checking stored balances against the history they come from."""

    async def entry_totals(self, account_pks: Sequence[int]) -> dict[int, EntryTotals]:
        """Totals of each of these accounts that has entries (accounts without any are absent)."""
        ...

    async def currency_totals(self) -> list[CurrencyTotals]:
        """Totals per currency over every entry, in one statement (one snapshot), by currency."""
        ...
