"""Use cases of accounts: open, read, list, change, balance (now or as of a moment), entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tally.domain.accounts import Account, AccountStatus, Balance, Bounds, NormalBalance
from tally.domain.errors import IdConflict, NotFound
from tally.domain.ids import new_id
from tally.services import audit
from tally.services.audit import Actor
from tally.services.ports import Database, Entry, NewEvent, Page, Transaction
from tally.services.postings import lock_accounts, seen
from tally.services.views import account_view


@dataclass(frozen=True, slots=True)
class OpenAccount:
    currency: str
    id: str | None = None
    name: str | None = None
    normal_balance: NormalBalance = NormalBalance.CREDIT
    bounds: Bounds = field(default_factory=Bounds)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChangeAccount:
    """A PATCH: ``None`` leaves a field unchanged; ``bounds`` carries both limits once either is sent."""

    name: str | None = None
    metadata: dict[str, Any] | None = None
    status: AccountStatus | None = None
    min_balance: int | None = None
    max_balance: int | None = None
    sets_min_balance: bool = False
    sets_max_balance: bool = False


@dataclass(frozen=True, slots=True)
class BalanceAsOf:
    account: Account
    balance: Balance
    version: int
    as_of: datetime


async def open_account(
    tx: Transaction,
    ledger_id: str,
    command: OpenAccount,
    *,
    request_hash: bytes,
    request_id: str | None,
) -> tuple[Account, bool]:
    """Open an account; with a client id already used, return it (same body) or refuse (other body).

    Returns the account and whether it was created now.
    """
    if command.id is not None:
        existing = await tx.accounts.get(ledger_id, command.id)
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdConflict(f"Account {command.id} exists with a different body.")
            [current] = await seen(tx, [existing], await tx.now())  # as a read shows it
            return current, False
    now = await tx.now()
    account = await tx.accounts.add(
        Account(
            pk=0,
            ledger_id=ledger_id,
            id=command.id or new_id("acc"),
            name=command.name,
            currency=command.currency,
            normal_balance=command.normal_balance,
            bounds=command.bounds,
            status=AccountStatus.OPEN,
            metadata=dict(command.metadata),
            balance=Balance(),
            version=0,
            created_at=now,
            updated_at=now,
            request_hash=request_hash,
        )
    )
    await tx.events.add(NewEvent(ledger_id, "account.created", account_view(account), request_id), now)
    return account, True


async def change_account(
    tx: Transaction,
    ledger_id: str,
    account_id: str,
    command: ChangeAccount,
    *,
    actor: Actor,
) -> Account:
    """Apply a PATCH; each status or bounds change is recorded in the audit trail (ADR 0036)."""
    # Sweeping first: a hold that has expired no longer stands in the way of closing.
    locked = await lock_accounts(tx, ledger_id, [account_id])
    account = locked.get(account_id)
    if account is None:
        raise NotFound(f"Account {account_id} does not exist.")
    bounds = None
    if command.sets_min_balance or command.sets_max_balance:
        bounds = Bounds(
            command.min_balance if command.sets_min_balance else account.bounds.min_balance,
            command.max_balance if command.sets_max_balance else account.bounds.max_balance,
        )
    changed = account.change(
        name=command.name, metadata=command.metadata, status=command.status, bounds=bounds
    )
    if changed == account:
        return account
    now = await tx.now()
    changed = replace(changed, updated_at=now)
    await tx.accounts.save(changed)
    await tx.events.add(NewEvent(ledger_id, "account.updated", account_view(changed), actor.request_id), now)
    for action, details in audit.account_acts(account, changed):
        await audit.record(
            tx, actor, action, ledger_id=ledger_id, target=("account", account_id), details=details
        )
    return changed


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """An account as reads show it at ``at``, and until when that stays true without a write."""

    account: Account
    at: datetime
    changes_by: datetime | None  # the next expiry of a hold on it; ``None``: only a write changes it


async def account_snapshot(database: Database, ledger_id: str, account_id: str) -> AccountSnapshot:
    async with database.read() as tx:
        account = await _existing(tx, ledger_id, account_id)
        at = await tx.now()
        [current] = await seen(tx, [account], at)
        held = current.balance.pending_debits or current.balance.pending_credits
        changes_by = await tx.holds.next_expiry(current.pk, at) if held else None
        return AccountSnapshot(current, at, changes_by)


async def get_account(database: Database, ledger_id: str, account_id: str) -> Account:
    return (await account_snapshot(database, ledger_id, account_id)).account


async def _existing(tx: Transaction, ledger_id: str, account_id: str) -> Account:
    account = await tx.accounts.get(ledger_id, account_id)
    if account is None:
        raise NotFound(f"Account {account_id} does not exist.")
    return account


async def list_accounts(
    database: Database,
    ledger_id: str,
    *,
    currency: str | None,
    status: AccountStatus | None,
    after: int | None,
    limit: int,
) -> Page[Account]:
    async with database.read() as tx:
        page = await tx.accounts.list(ledger_id, currency=currency, status=status, after=after, limit=limit)
        return Page(await seen(tx, page.items, await tx.now()), page.next_after)


async def balance_as_of(
    database: Database, ledger_id: str, account_id: str, as_of: datetime | None
) -> BalanceAsOf:
    """The balance now, or after the last change at or before ``as_of``.

    Holds due by that moment count as released, swept or not (ADR 0014).
    """
    async with database.read() as tx:
        account = await _existing(tx, ledger_id, account_id)
        at = await tx.now() if as_of is None else as_of
        if as_of is not None:
            # Every change of a balance wrote an entry carrying the balance after it, so the last
            # entry at or before ``as_of`` is the answer, for a past moment as for a future one.
            past = await tx.entries.balance_at(account.pk, as_of)
            balance, version = (past.balance, past.version) if past is not None else (Balance(), 0)
            account = replace(account, balance=balance, version=version)
        [current] = await seen(tx, [account], at)
        return BalanceAsOf(current, current.balance, current.version, at)


async def list_entries(
    database: Database, ledger_id: str, account_id: str, *, before: int | None, limit: int
) -> Page[Entry]:
    async with database.read() as tx:
        account = await _existing(tx, ledger_id, account_id)
        return await tx.entries.list(account.pk, before=before, limit=limit)
