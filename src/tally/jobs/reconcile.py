"""The ``reconcile`` batch job: every stored balance recomputed from its entries, and every
currency's entries checked to sum to zero (ADR 0033).

Nothing keeps "stored balance = sum of entries" true but writing both in one transaction (ADR
0007); this job checks it. Per account: ``posted`` from the postings (credits − debits on a
credit-normal account, debits − credits on a debit-normal one), each pending side from holds minus
releases, and the last entry's own running totals (``*_after`` and its version) against both. Each
step compares a batch of accounts inside its one transaction, so the stored balance and the entries
are read from one snapshot even while transfers commit; an account changed between two steps is
simply read in the state of its own step. A final step, one transaction again, checks per currency
that the debits of all postings equal their credits, and that open holds hold as much on the debit
side as on the credit side.

Every step only reads (``reads_first``, with nothing to ``apply``): it runs in a background read, a
snapshot that holds no write lock and, on SQLite, runs its statements off the event loop; the write
transaction after it holds the checkpoint alone (ADR 0044). Before, each step held the writer, and
the last step's one statement over every entry held a SQLite process's event loop: most of the
open loop's tail whenever the daily run fell inside a benchmark (docs/performance.md).

The period is a UTC day, by default the previous one: it labels the daily run, which checks the
state at the time it runs. Differences go into the result (all counted, the first ``KEPT`` listed),
one error log line each and a summary line, and to the ``tally_reconcile_*`` metrics, which every
process samples from the latest finished run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tally.domain.accounts import Account, Balance, NormalBalance
from tally.jobs.runs import Step
from tally.jobs.schedule import Every, Schedule
from tally.observability.logging import get_logger
from tally.services.ports import BalanceAt, Transaction
from tally.services.statement_ports import CurrencyTotals, EntryTotals

_log = get_logger("tally.jobs.reconcile")

BATCH = 500  # accounts per step
KEPT = 100  # differences listed in the result and logged; all are counted
# After the statements job (00:05), so the two daily runs do not start together.
DAILY_RECONCILE = Schedule(Every.DAY, timedelta(minutes=15))
_INT64 = 2**63


def account_differences(account: Account, totals: EntryTotals) -> list[dict[str, Any]]:
    """Where the stored balance, the entries' sums and the last entry's running totals disagree."""
    credits_less_debits = totals.posting_credits - totals.posting_debits
    posted = credits_less_debits if account.normal_balance is NormalBalance.CREDIT else -credits_less_debits
    recomputed = {
        "posted": posted,
        "pending_debits": totals.held_debits - totals.released_debits,
        "pending_credits": totals.held_credits - totals.released_credits,
    }
    stored = {
        "posted": account.balance.posted,
        "pending_debits": account.balance.pending_debits,
        "pending_credits": account.balance.pending_credits,
    }
    last = totals.last or BalanceAt(Balance(), 0)
    recorded = {
        "posted_after": last.balance.posted,
        "pending_debits_after": last.balance.pending_debits,
        "pending_credits_after": last.balance.pending_credits,
    }
    found = [
        _difference(account, name, stored[name], value)
        for name, value in recomputed.items()
        if stored[name] != value
    ]
    found += [
        _difference(account, name, recorded[name], recomputed[name.removesuffix("_after")])
        for name in recorded
        if recorded[name] != recomputed[name.removesuffix("_after")]
    ]
    if last.version != account.version:
        found.append(_difference(account, "version", account.version, last.version))
    return found


def _difference(account: Account, name: str, stored: int, recomputed: int) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "ledger_id": account.ledger_id,
        "field": name,
        "stored": _json_int(stored),
        "recomputed": _json_int(recomputed),
    }


def currency_sums(totals: CurrencyTotals) -> dict[str, Any]:
    """One currency's zero sums: postings' debits = credits, and open holds' debits = credits."""
    pending_debits = totals.held_debits - totals.released_debits
    pending_credits = totals.held_credits - totals.released_credits
    return {
        "debits": _json_int(totals.posting_debits),
        "credits": _json_int(totals.posting_credits),
        "pending_debits": _json_int(pending_debits),
        "pending_credits": _json_int(pending_credits),
        "balanced": totals.posting_debits == totals.posting_credits and pending_debits == pending_credits,
    }


def _json_int(value: int) -> int | str:
    # A sum over all history may pass 64 bits, which JSON encoders of this codebase refuse: such a
    # number is kept exact as a decimal string.
    return value if -_INT64 <= value < _INT64 else str(value)


@dataclass(slots=True)
class ReconcileJob:
    """Implements ``jobs.runs.BatchJob``; a period is a UTC day, ``YYYY-MM-DD`` (a label)."""

    batch: int = BATCH
    name: str = "reconcile"
    unit: str = "accounts"
    schedule: Schedule = field(default=DAILY_RECONCILE)
    reads_first: bool = True

    def period(self, text: str | None, now: datetime) -> str:
        return self.schedule.period(text, now)

    async def total(self, tx: Transaction, period: str) -> int | None:
        return await tx.accounts.count()

    async def step(self, tx: Transaction, period: str, state: dict[str, Any] | None) -> Step:
        state = state or {
            "after": None,
            "accounts": 0,
            "difference_count": 0,
            "differences": [],
            "checked": False,
        }
        if state["checked"]:  # every account is done: the zero sums, in one statement
            return Step(
                done=0, state=_result(period, state, await tx.reconciliation.currency_totals()), finished=True
            )
        accounts, totals = await _batch(tx, state["after"], self.batch)
        differences = list(state["differences"])
        count = state["difference_count"]
        for account in accounts:
            found = account_differences(account, totals.get(account.pk, EntryTotals()))
            count += len(found)
            differences += found[: max(0, KEPT - len(differences))]
        state = {
            "after": accounts[-1].pk if accounts else state["after"],
            "accounts": state["accounts"] + len(accounts),
            "difference_count": count,
            "differences": differences,
            "checked": len(accounts) < self.batch,
        }
        return Step(done=len(accounts), state=state, finished=False)


async def _batch(
    tx: Transaction, after: int | None, limit: int
) -> tuple[list[Account], dict[int, EntryTotals]]:
    """The next accounts, each with its entries' totals, read in the step's one snapshot."""
    accounts = await tx.accounts.scan(after, limit)
    return accounts, await tx.reconciliation.entry_totals([a.pk for a in accounts])


def _result(period: str, state: dict[str, Any], totals: list[CurrencyTotals]) -> dict[str, Any]:
    currencies = {t.currency: currency_sums(t) for t in totals}
    unbalanced = [currency for currency, sums in currencies.items() if not sums["balanced"]]
    ok = state["difference_count"] == 0 and not unbalanced
    for difference in state["differences"]:
        _log.error("reconcile found a balance difference", period=period, **difference)
    for currency in unbalanced:
        _log.error(
            "reconcile found a currency that does not sum to zero",
            period=period,
            currency=currency,
            **currencies[currency],
        )
    log = _log.info if ok else _log.error
    log(
        "reconcile finished",
        period=period,
        ok=ok,
        accounts=state["accounts"],
        difference_count=state["difference_count"],
        unbalanced_currencies=len(unbalanced),
    )
    return {
        "ok": ok,
        "period": period,
        "accounts": state["accounts"],
        "difference_count": state["difference_count"],
        "differences": state["differences"],
        "currencies": currencies,
        "unbalanced_currencies": unbalanced,
    }
