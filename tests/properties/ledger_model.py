"""The plain-Python ledger the stateful test compares Tally with: accounts, transfers and holds as
they should be, the predicted outcome of each request, and the strategies that drive it.

See ``test_ledger_model.py`` for the invariants in plain words.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import orjson
from hypothesis import currently_in_test_context, event
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tally.domain.accounts import AccountStatus, Direction, EntryKind, NormalBalance
from tally.domain.errors import BatchFailed, NotFound, TallyError
from tally.domain.money import INT64_MAX, INT64_MIN
from tally.domain.transfers import LegRequest, TransferRequest, TransferStatus
from tally.services.idempotency import Action, IdempotencyKey
from tally.services.ports import StoredReply, Transaction
from tally.services.views import JsonObject, timestamp
from tally.store.codec import from_micros, to_micros

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
LEDGER = "led_model"
CURRENCIES = ("USD", "EUR")
START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
# 409s; NotFound is 404, and every other rejection 422.
CONFLICTS = {"IdConflict", "AccountNotEmpty", "AccountClosed", "TransferNotPending", "TransferNotPosted"}
NEW = "<new>"  # the model's name for a transfer until the reply tells the id the server chose
PENDING, POSTED = TransferStatus.PENDING, TransferStatus.POSTED
DEBIT, CREDIT = Direction.DEBIT, Direction.CREDIT

# Hypothesis keeps what it learns (examples, constants) under the repository's git-ignored
# .hypothesis/, wherever pytest is started from; its default is the working directory's.
set_hypothesis_home_dir(ROOT / ".hypothesis")


def digest(*parts: bytes) -> bytes:
    return hashlib.sha256(b"\n".join(parts)).digest()


def canonical(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def render(status: int, data: Any) -> StoredReply:
    return StoredReply(status, orjson.dumps(data))


def reject(rejection: TallyError) -> StoredReply:
    code = type(rejection).__name__
    body: JsonObject = {"code": code, "detail": rejection.detail}
    if isinstance(rejection, BatchFailed):  # each failed item, as the batch route lists them
        body["errors"] = [{"index": index, "code": type(e).__name__} for index, e in rejection.failures]
    status = 404 if isinstance(rejection, NotFound) else 409 if code in CONFLICTS else 422
    return render(status, body)


def code_of(reply: StoredReply) -> str | None:
    return orjson.loads(reply.body).get("code") if reply.status >= 400 else None


def micros_of(text: str) -> int:
    return to_micros(datetime.fromisoformat(text))


def fits_64_bits(*numbers: int) -> bool:
    return all(INT64_MIN <= n <= INT64_MAX for n in numbers)


def flipped(direction: Direction) -> Direction:
    return CREDIT if direction is DEBIT else DEBIT


Leg = tuple[str, Direction, int]
Movement = tuple[str, EntryKind, Direction, int]
UseCase = Callable[[Transaction, str], Awaitable[StoredReply]]  # (tx, request id) -> reply


# -- the model, in plain Python ----------------------------------------------------------------


class Refused(Exception):
    """The rejection the model predicts, by the name of the error class the service raises."""

    def __init__(self, code: str, failures: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(code)
        self.code = code
        self.failures = failures  # a failed atomic batch's (index, code) per failed item


class Parts(NamedTuple):
    """A balance's stored parts."""

    posted: int = 0
    pending_debits: int = 0
    pending_credits: int = 0

    def outflows(self, side: NormalBalance) -> int:
        return self.pending_debits if side is NormalBalance.CREDIT else self.pending_credits

    def inflows(self, side: NormalBalance) -> int:
        return self.pending_credits if side is NormalBalance.CREDIT else self.pending_debits

    def available(self, side: NormalBalance) -> int:
        return self.posted - self.outflows(side)

    def moved(self, side: NormalBalance, kind: EntryKind, direction: Direction, amount: int) -> Parts:
        """A posting moves ``posted``; a hold adds to its direction's pending side, a release takes off."""
        if kind is EntryKind.POSTING:
            return self._replace(posted=self.posted + (amount if direction.value == side.value else -amount))
        signed = amount if kind is EntryKind.HOLD else -amount
        if direction is DEBIT:
            return self._replace(pending_debits=self.pending_debits + signed)
        return self._replace(pending_credits=self.pending_credits + signed)

    def view(self, side: NormalBalance) -> dict[str, int]:
        """As an account reads: with ``available``, posted minus pending outflows."""
        return {**self._asdict(), "available": self.available(side)}


@dataclass
class ModelAccount:
    currency: str
    side: NormalBalance
    min_balance: int | None
    max_balance: int | None
    status: AccountStatus = AccountStatus.OPEN
    parts: Parts = field(default_factory=Parts)
    version: int = 0
    history: list[tuple[int, Parts, int]] = field(default_factory=list)  # (micros, parts, version)

    def row(self) -> tuple[Any, ...]:
        """As the accounts table stores it: currency, side, bounds, status, balance parts, version."""
        side, status = self.side.value, self.status.value
        return (self.currency, side, self.min_balance, self.max_balance, status, *self.parts, self.version)

    def admits(self, parts: Parts, low: int | None, high: int | None) -> bool:
        return (low is None or parts.available(self.side) >= low) and (
            high is None or parts.posted + parts.inflows(self.side) <= high
        )


@dataclass
class ModelTransfer:
    legs: list[Leg]  # after a partial post, what was posted
    status: TransferStatus  # as stored: a due hold stays pending here until it is swept
    created_at: int
    posted_at: int | None = None
    expires_at: int | None = None
    held_amount: int | None = None
    reversed_amount: int = 0
    reverses: str | None = None
    body_hash: bytes | None = None

    @property
    def amount(self) -> int:
        return sum(n for _, d, n in self.legs if d is DEBIT)

    @property
    def two_legs(self) -> bool:
        """One debit and one credit: the only shape posted or reversed in part."""
        return len(self.legs) == 2 and self.legs[0][1] is not self.legs[1][1]

    def due(self, at: int) -> bool:
        return self.status is PENDING and self.expires_at is not None and self.expires_at <= at

    def seen_at(self, at: int) -> TransferStatus:
        return TransferStatus.EXPIRED if self.due(at) else self.status

    def touches(self, account_id: str) -> bool:
        return any(a == account_id for a, _, _ in self.legs)

    def row(self) -> tuple[Any, ...]:
        legs = tuple((a, d.value, n) for a, d, n in self.legs)
        fields = (self.held_amount, self.reversed_amount, self.expires_at, self.created_at, self.posted_at)
        return (self.status.value, *fields, self.reverses, legs)


@dataclass(frozen=True)
class Proposal:
    """A transfer's create body, and what the model reads of it."""

    legs: tuple[Leg, ...]
    simple: bool  # the simple form (debit_account_id, credit_account_id, amount) or legs
    currency: str | None = None
    pending: bool = False
    expires_at: int | None = None
    client_id: str | None = None

    @property
    def body(self) -> dict[str, Any]:
        if self.simple:
            (debit, _, amount), (credit, _, _) = self.legs
            body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}
            body["currency"] = self.currency
        else:
            body = {"legs": [{"account_id": a, "direction": d, "amount": n} for a, d, n in self.legs]}
        if self.client_id is not None:
            body["id"] = self.client_id
        if self.pending:
            body["pending"] = True
        if self.expires_at is not None:
            body["expires_at"] = timestamp(from_micros(self.expires_at))
        return body

    @property
    def hash(self) -> bytes:
        return digest(canonical(self.body))

    def request(self) -> TransferRequest:
        expires_at = None if self.expires_at is None else from_micros(self.expires_at)
        legs = tuple(LegRequest(*leg) for leg in self.legs)
        return TransferRequest(
            legs,
            self.client_id,
            self.currency,
            simple=self.simple,
            pending=self.pending,
            expires_at=expires_at,
        )

    def body_error(self) -> str | None:
        """The rule the body alone breaks; those answer before anything is looked up."""
        if self.expires_at is not None and not self.pending:
            return "ValidationFailed"
        ids = [account_id for account_id, _, _ in self.legs]
        if len(set(ids)) < len(ids):
            return "SameAccount" if self.simple else "ValidationFailed"
        if sum(n if d is DEBIT else -n for _, d, n in self.legs) != 0:
            return "UnbalancedTransfer"
        return None


@dataclass
class LedgerModel:
    """What the ledger should hold. Operations change it in place or raise ``Refused``; callers run
    them on a copy and keep the copy only when the database accepted the request too."""

    accounts: dict[str, ModelAccount] = field(default_factory=dict)
    transfers: dict[str, ModelTransfer] = field(default_factory=dict)  # in creation (pk) order
    events: Counter[str] = field(default_factory=Counter)

    # Balances ---------------------------------------------------------------------------------

    def apply(self, movements: list[Movement], at: int, *, check_bounds: bool) -> None:
        """Every movement in order, then each touched account checked once, on what it ends with."""
        after: dict[str, Parts] = {}
        for account_id, kind, direction, amount in movements:
            account = self.accounts[account_id]
            parts = after.get(account_id, account.parts).moved(account.side, kind, direction, amount)
            if not fits_64_bits(*parts):
                raise Refused("AmountOverflow")
            after[account_id] = parts
        for account_id, parts in after.items():
            account = self.accounts[account_id]
            if not fits_64_bits(parts.available(account.side), parts.posted + parts.inflows(account.side)):
                raise Refused("AmountOverflow")
            if check_bounds and not account.admits(parts, account.min_balance, account.max_balance):
                raise Refused("InsufficientFunds")
        for account_id, parts in after.items():  # one version per account per operation
            account = self.accounts[account_id]
            account.parts, account.version = parts, account.version + 1
            account.history.append((at, parts, account.version))

    def balance_as_of(self, account_id: str, at: int) -> tuple[Parts, int]:
        """After the last change at or before ``at``; a hold's expiry is a change at its ``expires_at``."""
        account = self.accounts[account_id]
        parts, version = next(((p, v) for m, p, v in reversed(account.history) if m <= at), (Parts(), 0))
        for transfer in self.transfers.values():  # expired, not yet swept
            if transfer.due(at):
                for leg_account, direction, amount in transfer.legs:
                    if leg_account == account_id:
                        parts = parts.moved(account.side, EntryKind.RELEASE, direction, amount)
                        version += 1
        return parts, version

    def require_open(self, legs: Iterable[Leg]) -> None:
        if any(self.accounts[a].status is not AccountStatus.OPEN for a, _, _ in legs):
            raise Refused("AccountNotOpen")

    # Expiry -----------------------------------------------------------------------------------

    def sweep(self, account_ids: Iterable[str], now: int) -> None:
        """A write touching ``account_ids`` first expires their due holds, and those of every account
        such a hold also names, in expiry order."""
        touched = {account_id for account_id in account_ids if account_id in self.accounts}
        due: dict[str, ModelTransfer] = {}
        while True:
            found = {
                i: t
                for i, t in self.transfers.items()
                if i not in due and t.due(now) and any(a in touched for a, _, _ in t.legs)
            }
            if not found:
                break
            due.update(found)
            touched.update(a for t in found.values() for a, _, _ in t.legs)
        order = list(self.transfers)
        for transfer_id in sorted(due, key=lambda i: (due[i].expires_at, order.index(i))):
            self.expire(transfer_id)

    def expire(self, transfer_id: str) -> None:
        transfer = self.transfers[transfer_id]
        assert transfer.expires_at is not None
        releases = [(a, EntryKind.RELEASE, d, n) for a, d, n in transfer.legs]
        self.apply(releases, transfer.expires_at, check_bounds=False)  # dated when it expired
        transfer.status = TransferStatus.EXPIRED
        self.events["transfer.expired"] += 1

    def sweep_due(self, now: int, limit: int) -> int:
        """The sweeper: the ``limit`` holds due first, each with its accounts' other due holds."""
        order = list(self.transfers)
        due = sorted(
            (i for i, t in self.transfers.items() if t.due(now)),
            key=lambda i: (self.transfers[i].expires_at, order.index(i)),
        )[:limit]
        for transfer_id in due:
            if self.transfers[transfer_id].status is PENDING:
                self.sweep((a for a, _, _ in self.transfers[transfer_id].legs), now)
        return len(due)

    # Operations -------------------------------------------------------------------------------

    def open(self, account_id: str, account: ModelAccount) -> None:
        self.accounts[account_id] = account
        self.events["account.created"] += 1

    def change(
        self,
        account_id: str,
        now: int,
        *,
        status: AccountStatus | None = None,
        bounds: tuple[int | None, int | None] | None = None,
    ) -> None:
        self.sweep([account_id], now)  # an expired hold no longer stands in the way of closing
        account = self.accounts[account_id]
        low, high = bounds or (None, None)
        if low is not None and high is not None and low > high:
            raise Refused("ValidationFailed")
        if account.status is AccountStatus.CLOSED:
            raise Refused("AccountClosed")
        changed = False
        if bounds is not None:
            if not account.admits(account.parts, *bounds):
                raise Refused("InsufficientFunds")
            changed = bounds != (account.min_balance, account.max_balance)
            account.min_balance, account.max_balance = bounds
        if status is not None and status is not account.status:
            if status is AccountStatus.CLOSED and account.parts != Parts():
                raise Refused("AccountNotEmpty")
            account.status, changed = status, True
        if changed:
            self.events["account.updated"] += 1

    def create(self, proposal: Proposal, now: int, name: str) -> str:
        """Post or hold ``proposal`` as transfer ``name``: ``created``, or ``exists`` for a repeated id."""
        ids = [account_id for account_id, _, _ in proposal.legs]
        if proposal.client_id is not None and proposal.client_id in self.transfers:
            if self.transfers[proposal.client_id].body_hash == proposal.hash:
                return "exists"
            if any(account_id not in self.accounts for account_id in ids):
                raise Refused("AccountNotFound")  # lookups answer before state
            raise Refused("IdConflict")
        if proposal.expires_at is not None and proposal.expires_at <= now:
            raise Refused("ValidationFailed")
        if any(account_id not in self.accounts for account_id in ids):
            raise Refused("AccountNotFound")
        self.require_open(proposal.legs)
        currencies = [self.accounts[account_id].currency for account_id in ids]
        if proposal.simple and (len(set(currencies)) > 1 or proposal.currency not in (None, *currencies)):
            raise Refused("CurrencyMismatch")
        net = Counter[str]()
        for (_, d, n), currency in zip(proposal.legs, currencies, strict=True):
            net[currency] += n if d is DEBIT else -n
        if any(net.values()):
            raise Refused("UnbalancedInCurrency")
        kind = EntryKind.HOLD if proposal.pending else EntryKind.POSTING
        self.apply([(a, kind, d, n) for a, d, n in proposal.legs], now, check_bounds=True)
        transfer = ModelTransfer(
            list(proposal.legs),
            PENDING if proposal.pending else POSTED,
            now,
            posted_at=None if proposal.pending else now,
            expires_at=proposal.expires_at,
            body_hash=proposal.hash,
        )
        if proposal.pending and transfer.two_legs:
            transfer.held_amount = transfer.amount
        self.transfers[name] = transfer
        self.events["transfer.created"] += 1
        return "created"

    def batch(
        self, items: list[Proposal], names: list[str], now: int, *, atomic: bool
    ) -> list[tuple[str, str]]:
        """Each item's (``created`` or ``exists``, name) or (``error``, code), in order; an item with a
        client id is named by it."""
        self.sweep((a for p in items if p.body_error() is None for a, _, _ in p.legs), now)
        results: list[tuple[str, str]] = []
        for proposal, name in zip(items, names, strict=True):
            error = proposal.body_error()
            if error is not None:
                results.append(("error", error))
                continue
            try:
                status = self.create(proposal, now, name)
            except Refused as refused:
                results.append(("error", refused.code))
            else:
                results.append((status, name))
        failures = tuple((index, code) for index, (status, code) in enumerate(results) if status == "error")
        if atomic and failures:
            raise Refused("BatchFailed", failures)
        return results

    def pending_transfer(self, transfer_id: str, now: int) -> ModelTransfer:
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            raise Refused("NotFound")
        if transfer.seen_at(now) is not PENDING:
            raise Refused("TransferNotPending")
        self.sweep((a for a, _, _ in transfer.legs), now)
        return transfer

    def post(self, transfer_id: str, amount: int | None, now: int) -> None:
        transfer = self.pending_transfer(transfer_id, now)
        if amount is not None:
            if not transfer.two_legs:
                raise Refused("PartialPostNotSupported")
            if amount > transfer.amount:
                raise Refused("AmountExceedsPending")
        self.require_open(transfer.legs)
        posted = [(a, d, n if amount is None else amount) for a, d, n in transfer.legs]
        movements: list[Movement] = []
        for (a, d, held), (_, _, n) in zip(transfer.legs, posted, strict=True):
            movements += [(a, EntryKind.RELEASE, d, held), (a, EntryKind.POSTING, d, n)]
        self.apply(movements, now, check_bounds=True)
        transfer.legs, transfer.status, transfer.posted_at = posted, POSTED, now
        self.events["transfer.posted"] += 1

    def void(self, transfer_id: str, now: int) -> None:
        transfer = self.pending_transfer(transfer_id, now)
        releases = [(a, EntryKind.RELEASE, d, n) for a, d, n in transfer.legs]
        self.apply(releases, now, check_bounds=False)  # never refused, even on a frozen account
        transfer.status = TransferStatus.VOIDED
        self.events["transfer.voided"] += 1

    def reverse(self, transfer_id: str, amount: int | None, now: int, name: str) -> None:
        original = self.transfers.get(transfer_id)
        if original is None:
            raise Refused("NotFound")
        if original.status is not POSTED:
            raise Refused("TransferNotPosted")
        self.sweep((a for a, _, _ in original.legs), now)
        left = original.amount - original.reversed_amount
        if original.two_legs:
            taken = left if amount is None else amount
        else:
            if amount is not None and amount != original.amount:
                raise Refused("PartialReversalNotSupported")
            taken = original.amount
        if left == 0 or taken > left:
            raise Refused("ReversalExceedsOriginal")
        legs = [(a, flipped(d), taken if original.two_legs else n) for a, d, n in original.legs]
        self.require_open(legs)
        self.apply([(a, EntryKind.POSTING, d, n) for a, d, n in legs], now, check_bounds=True)
        original.reversed_amount += taken
        self.transfers[name] = ModelTransfer(legs, POSTED, now, posted_at=now, reverses=transfer_id)
        self.events["transfer.created"] += 1

    def rename(self, names: dict[str, str]) -> None:
        """Give transfers the ids the server chose, keeping creation order."""
        self.transfers = {names.get(i, i): t for i, t in self.transfers.items()}


def attempt(operation: Callable[[], object]) -> Refused | None:
    """Run a model operation; the rejection it predicts, or ``None``."""
    try:
        operation()
    except Refused as refused:
        return refused
    return None


# -- strategies --------------------------------------------------------------------------------


def tally_event(label: str) -> None:
    """Count outcomes in ``--hypothesis-show-statistics``; a no-op outside Hypothesis."""
    if currently_in_test_context():
        event(label)


def now_and_then(usual: st.SearchStrategy[T], rare: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``rare`` one draw in ten, ``usual`` otherwise."""
    return st.integers(0, 9).flatmap(lambda n: rare if n == 0 else usual)


amounts = now_and_then(st.integers(1, 1500), st.sampled_from([INT64_MAX, INT64_MAX // 2 + 1]))
minimums = st.one_of(st.none(), st.just(0), st.integers(-1000, -1))
maximums = st.one_of(st.none(), st.integers(0, 3000))
# Microseconds from the write's ``now`` to ``expires_at``: a few writes ahead (each write stamps a
# microsecond later, so it expires without the clock moving), later, or now and then not in the
# future at all (refused).
expiries = now_and_then(st.one_of(st.integers(1, 3), st.integers(4, 3_600_000_000)), st.integers(-2, 0))
Hold = tuple[bool, int | None]  # (pending, expires in)
expiring: st.SearchStrategy[Hold] = st.tuples(st.just(True), expiries)
hold_shapes: st.SearchStrategy[Hold] = now_and_then(
    # A posting, a hold, or (as often as both) a hold that expires.
    st.one_of(st.just((False, None)), st.just((True, None)), expiring, expiring),
    st.tuples(st.just(False), expiries),  # expires_at on a posting: refused by the body alone
)


def amounts_around(*wholes: int) -> st.SearchStrategy[int]:
    """Exactly one of ``wholes``, a part of one, one more, or more (within an amount's range)."""
    options: list[st.SearchStrategy[int]] = []
    for whole in (w for w in wholes if w > 0):
        options += [st.just(whole), st.integers(1, whole)]
        if whole < INT64_MAX:
            options += [st.just(whole + 1), st.integers(whole + 1, min(whole + 1000, INT64_MAX))]
    return st.one_of(options)


# -- the machine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A request whose outcome was stored under its idempotency key."""

    key: IdempotencyKey
    action: Action
    reply: StoredReply
