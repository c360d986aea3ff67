"""Use cases of accounts: open, read, list, change, balance (now or as of a moment), entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tally.domain.accounts import Account, AccountStatus, Balance, Bounds, NormalBalance
from tally.domain.errors import IdConflict, NotFound
from tally.domain.ids import new_id
from tally.services.ports import Database, Entry, NewEvent, Page, Transaction
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
            return existing, False
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
    request_id: str | None,
) -> Account:
    locked = await tx.accounts.lock(ledger_id, [account_id])
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
    await tx.events.add(NewEvent(ledger_id, "account.updated", account_view(changed), request_id), now)
    return changed


async def get_account(database: Database, ledger_id: str, account_id: str) -> Account:
    async with database.read() as tx:
        return await _existing(tx, ledger_id, account_id)


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
        return await tx.accounts.list(ledger_id, currency=currency, status=status, after=after, limit=limit)


async def balance_as_of(
    database: Database, ledger_id: str, account_id: str, as_of: datetime | None
) -> BalanceAsOf:
    """The balance now, or after the last posting at or before ``as_of``."""
    async with database.read() as tx:
        account = await _existing(tx, ledger_id, account_id)
        if as_of is None:
            return BalanceAsOf(account, account.balance, account.version, await tx.now())
        # Every change of a balance wrote an entry carrying the balance after it, so the last entry
        # at or before ``as_of`` is the answer, for a past moment as for a future one.
        past = await tx.entries.balance_at(account.pk, as_of)
        if past is None:
            return BalanceAsOf(account, Balance(), 0, as_of)
        return BalanceAsOf(account, past.balance, past.version, as_of)


async def list_entries(
    database: Database, ledger_id: str, account_id: str, *, before: int | None, limit: int
) -> Page[Entry]:
    async with database.read() as tx:
        account = await _existing(tx, ledger_id, account_id)
        return await tx.entries.list(account.pk, before=before, limit=limit)
