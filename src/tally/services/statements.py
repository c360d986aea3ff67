"""Reading an account's daily statements (``GET /v1/accounts/{id}/statements``, ADR 0033).

A day is served once the ``statements`` run of that day has finished, and then as a continuous
series: a finished day on which the account had no posting is filled in from the day before
(opening = closing = the posted balance it carried, sums zero). Days whose run has not finished are
left out; a client asks again later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from tally.domain.accounts import Account
from tally.domain.errors import NotFound, ValidationFailed
from tally.services.ports import Database, Page
from tally.services.statement_ports import DayStatement

MAX_DAYS = 366  # one year, leap day included, per request


@dataclass(frozen=True, slots=True)
class AccountStatement:
    """A day of one account's series, stored or filled in."""

    account: Account
    day: DayStatement


def statement_view(item: AccountStatement) -> dict[str, object]:
    """The wire form of a day (``api.statement_schemas.StatementOut``)."""
    day = item.day
    return {
        "account_id": item.account.id,
        "currency": item.account.currency,
        "date": day.day.isoformat(),
        "opening_balance": day.opening_balance,
        "closing_balance": day.closing_balance,
        "debits": day.debits,
        "credits": day.credits,
        "postings": day.postings,
    }


def check_range(first: date, last: date) -> None:
    """``ValidationFailed`` unless ``first <= last`` and the range spans at most ``MAX_DAYS`` days."""
    if first > last:
        raise ValidationFailed.at(("query", "to"), "to must not be before from.")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValidationFailed.at(("query", "to"), f"A range spans at most {MAX_DAYS} days.")


def days_needing_a_balance(days: Sequence[date], stored: Mapping[date, DayStatement]) -> list[date]:
    """The quiet days whose opening balance no stored statement of the day before gives: the first
    day of each run of consecutive served days, when the account had no posting on it."""
    needed = []
    for index, day in enumerate(days):
        follows = index > 0 and days[index - 1] == day - timedelta(days=1)
        if day not in stored and not follows:
            needed.append(day)
    return needed


def series(
    account_pk: int,
    days: Sequence[date],
    stored: Mapping[date, DayStatement],
    balances: Mapping[date, int],
) -> list[DayStatement]:
    """The statement of every day of ``days`` (ascending): stored, or a quiet day that carries the
    closing balance of the day before (``balances`` gives it where no served day precedes)."""
    out: list[DayStatement] = []
    carried: int | None = None
    for day in days:
        if out and out[-1].day != day - timedelta(days=1):
            carried = None  # a day in between is not served: what it did is unknown here
        found = stored.get(day)
        if found is None:
            opening = balances[day] if carried is None else carried
            found = DayStatement(account_pk, day, opening, opening, 0, 0, 0)
        out.append(found)
        carried = found.closing_balance
    return out


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def resumed_at(first: date, last: date, position: int | None) -> date:
    """The day a page starts at: ``first``, or the day a cursor's position names within the range."""
    if position is None:
        return first
    if not first.toordinal() < position <= last.toordinal():
        raise ValidationFailed.at(("query", "cursor"), "Unknown cursor.")
    return date.fromordinal(position)


async def account_statements(
    database: Database,
    ledger_id: str,
    account_id: str,
    first: date,
    last: date,
    *,
    after: int | None,
    limit: int,
) -> Page[AccountStatement]:
    """The account's statements of the served days ``first..last``, oldest first.

    ``after`` is a page position: the ordinal (``date.toordinal``) of the day the page starts at.
    """
    check_range(first, last)
    first = resumed_at(first, last, after)
    async with database.read() as tx:
        account = await tx.accounts.get(ledger_id, account_id)
        if account is None:
            raise NotFound(f"Account {account_id} does not exist.")
        days = await tx.statements.finished_days(first, last, limit + 1)
        more = len(days) > limit
        days = days[:limit]
        if not days:
            return Page([], None)
        stored = {s.day: s for s in await tx.statements.of_account(account.pk, days[0], days[-1])}
        balances = {
            day: await tx.statements.posted_before(account.pk, _start(day))
            for day in days_needing_a_balance(days, stored)
        }
    items = [AccountStatement(account, s) for s in series(account.pk, days, stored, balances)]
    return Page(items, (days[-1] + timedelta(days=1)).toordinal() if more else None)
