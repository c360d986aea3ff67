"""Random sequences of ledger operations, through the service layer, on a real SQLite file.

The invariants, in plain words, checked against the database file after every step:

1. Money is neither made nor lost: in every currency, the posted entries add up to zero
   (a debit counts +amount, a credit -amount).
2. Every account's stored ``posted`` balance is the sum of its entries, seen from its normal side.
3. Bounds hold: ``available >= min_balance`` when a minimum is set, and
   ``posted + pending inflows <= max_balance`` when a maximum is set.
4. An account's ``version`` is the number of entries it has: one per posting, none for edits.
5. Every committed change left exactly one event in the outbox.
6. The database agrees with a model in plain Python: the same accounts, statuses, bounds and
   balances, the same outcome (created or which rejection) for every request.
7. A replay (same idempotency key, same body) returns the identical reply and changes nothing;
   the same key with another body is refused and changes nothing.
8. The balance as of a past moment is the balance after the last posting at or before it.

Requests are driven exactly as the API routes drive them: body rules first (``check``), then
``IdempotentExecutor.run`` with an action calling the use case and a renderer of the reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tally.domain.accounts import AccountStatus, Bounds, Direction, NormalBalance
from tally.domain.errors import IdempotencyKeyReused, RequestError, TallyError
from tally.domain.keys import Ledger
from tally.domain.money import INT64_MAX, INT64_MIN
from tally.domain.transfers import LegRequest, TransferRequest
from tally.services.accounts import ChangeAccount, OpenAccount, balance_as_of, change_account, open_account
from tally.services.idempotency import Action, IdempotencyKey, IdempotentExecutor, Outcome
from tally.services.ports import StoredReply, Transaction
from tally.services.transfers import create_transfer
from tally.services.views import account_view, transfer_view
from tally.store.codec import from_micros, to_micros
from tally.store.sqlite import open_database

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
LEDGER = "led_model"
CURRENCIES = ("USD", "EUR")
START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
CONFLICTS = {"IdConflict", "AccountNotEmpty", "AccountClosed"}  # 409; other rejections are 422

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
    return render(409 if code in CONFLICTS else 422, {"code": code, "detail": rejection.detail})


def code_of(reply: StoredReply) -> str | None:
    return orjson.loads(reply.body).get("code") if reply.status >= 400 else None


@dataclass
class ModelAccount:
    currency: str
    side: NormalBalance
    min_balance: int | None
    max_balance: int | None
    status: AccountStatus = AccountStatus.OPEN
    posted: int = 0
    version: int = 0
    history: list[tuple[int, int, int]] = field(default_factory=list)  # (micros, posted, version)

    def row(self) -> tuple[Any, ...]:
        """As the accounts table stores it: currency, normal_balance, bounds, status, posted, version."""
        side, status = self.side.value, self.status.value
        return (self.currency, side, self.min_balance, self.max_balance, status, self.posted, self.version)

    def after(self, direction: Direction, amount: int) -> int:
        return self.posted + (amount if direction.value == self.side.value else -amount)


def breaks(low: int | None, high: int | None, posted: int) -> bool:
    """Whether ``posted`` (nothing is ever pending in this model) breaks the bounds ``low``..``high``."""
    return (low is not None and posted < low) or (high is not None and posted > high)


@dataclass(frozen=True)
class Sent:
    """A request whose outcome was stored under its idempotency key."""

    key: IdempotencyKey
    action: Action
    reply: StoredReply


Leg = tuple[str, Direction, int]
UseCase = Callable[[Transaction, str], Awaitable[StoredReply]]  # (tx, request id) -> reply


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


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory(prefix="tally-model-")
        self.path = Path(self.directory.name) / "tally.db"
        self.loop = asyncio.new_event_loop()
        self.micros = START
        self.db = open_database(f"sqlite:///{self.path}", clock=lambda: self.micros, synchronous="NORMAL")
        self.executor = IdempotentExecutor(self.db)
        self.model: dict[str, ModelAccount] = {}
        self.sent: list[Sent] = []
        self.entries_seen: list[tuple[Any, ...]] = []
        self.events = 0
        self.counter = 0
        self.run(self.db.start())
        self.run(self.create_ledger())

    async def create_ledger(self) -> None:
        async with self.db.write() as tx:
            await tx.ledgers.add(Ledger(LEDGER, "model", await tx.now()))

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        try:
            self.run(self.db.stop())
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            self.directory.cleanup()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
            return conn.execute(sql).fetchall()

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        tables = sorted(row[0] for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'"))
        return [self.query(f"SELECT * FROM {name} ORDER BY 1, 2") for name in tables]  # noqa: S608

    def execute(self, key: IdempotencyKey, action: Action) -> Outcome:
        return self.run(self.executor.run(LEDGER, key, action, reject))

    def send(
        self, path: str, body: dict[str, Any], use_case: UseCase, expected: str | None, method: str = "POST"
    ) -> StoredReply | None:
        """Send as a route does; check the outcome is ``expected``; the reply when it was accepted."""
        self.counter += 1
        key = IdempotencyKey(f"key-{self.counter}", digest(f"{method} {path}".encode(), canonical(body)))

        async def action(tx: Transaction) -> StoredReply:
            return await use_case(tx, key.key)

        try:
            reply = self.execute(key, action).reply
        except RequestError as refused:  # decided before anything is stored
            assert type(refused).__name__ == expected  # noqa: PT017 - the model says what to expect
            return None
        self.sent.append(Sent(key, action, reply))
        assert code_of(reply) == expected, (reply, expected)
        return reply if expected is None else None

    # -- rules -------------------------------------------------------------------------------

    @initialize()
    def open_funding_and_customer_accounts(self) -> None:
        """Per currency, an unbounded debit-normal account where money enters, and a customer."""
        for currency in CURRENCIES:
            self.open_account(currency, NormalBalance.DEBIT, None, None)
            self.open_account(currency, NormalBalance.CREDIT, 0, None)

    @rule(
        currency=st.sampled_from(CURRENCIES), side=st.sampled_from(NormalBalance), low=minimums, high=maximums
    )
    def open_account(self, currency: str, side: NormalBalance, low: int | None, high: int | None) -> None:
        account_id = f"acct-{self.counter}"
        body = {"id": account_id, "currency": currency, "normal_balance": side, "min_balance": low}
        body["max_balance"] = high
        command = OpenAccount(currency, account_id, normal_balance=side, bounds=Bounds(low, high))

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            account, created = await open_account(
                tx, LEDGER, command, request_hash=digest(canonical(body)), request_id=request_id
            )
            return render(201 if created else 200, account_view(account))

        reply = self.send("/v1/accounts", body, use_case, None)
        assert reply is not None
        assert reply.status == 201
        self.model[account_id] = ModelAccount(currency, side, low, high)
        self.events += 1

    def pick(self, data: st.DataObject, currency: str | None, but: tuple[str, ...] = ()) -> str:
        """Mostly an account of ``currency`` not among ``but``; now and then any id, or an unknown one."""
        fitting = sorted(i for i, a in self.model.items() if currency in (None, a.currency) and i not in but)
        anything = st.sampled_from([*sorted(self.model), "ghost"])
        return data.draw(now_and_then(st.sampled_from(fitting), anything) if fitting else anything)

    @rule(data=st.data(), amount=amounts, currency=st.sampled_from(CURRENCIES), named=st.booleans())
    def transfer(self, data: st.DataObject, amount: int, currency: str, named: bool) -> None:
        debit = self.pick(data, currency)
        credit = self.pick(data, currency, but=(debit,))
        stated = data.draw(now_and_then(st.just(currency), st.sampled_from(CURRENCIES))) if named else None
        body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount, "currency": stated}
        legs = [(debit, Direction.DEBIT, amount), (credit, Direction.CREDIT, amount)]
        self.send_transfer(body, legs, currency=stated, simple=True)

    @rule(
        data=st.data(),
        shape=st.lists(st.tuples(st.sampled_from(Direction), amounts), min_size=1, max_size=3),
        last_amount=amounts,
    )
    def transfer_multi_leg(
        self, data: st.DataObject, shape: list[tuple[Direction, int]], last_amount: int
    ) -> None:
        currency = data.draw(now_and_then(st.sampled_from(CURRENCIES), st.none()))
        picked: list[str] = []
        for _ in range(len(shape) + 1):
            picked.append(self.pick(data, currency, but=tuple(picked)))
        legs = [(account_id, d, n) for account_id, (d, n) in zip(picked, shape, strict=False)]
        # The last leg balances the others when it can; when they already balance, it unbalances them.
        net = sum(n if d is Direction.DEBIT else -n for d, n in shape)
        direction = Direction.CREDIT if net > 0 else Direction.DEBIT
        legs.append((picked[-1], direction, min(abs(net), INT64_MAX) if net else last_amount))
        body = {"legs": [{"account_id": a, "direction": d, "amount": n} for a, d, n in legs]}
        self.send_transfer(body, legs, currency=None, simple=False)

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def replay_a_request(self, data: st.DataObject) -> None:
        sent = data.draw(st.sampled_from(self.sent))
        before = self.snapshot()
        outcome = self.execute(sent.key, sent.action)
        assert outcome.replayed
        assert outcome.reply == sent.reply
        assert self.snapshot() == before

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def reuse_a_key_with_another_body(self, data: st.DataObject) -> None:
        sent = data.draw(st.sampled_from(self.sent))
        other = IdempotencyKey(sent.key.key, digest(sent.key.fingerprint, b"another body"))
        before = self.snapshot()
        with pytest.raises(IdempotencyKeyReused):
            self.execute(other, sent.action)  # an action that would write again, were it run
        assert self.snapshot() == before

    @rule(
        data=st.data(),
        status=now_and_then(st.sampled_from(list(AccountStatus)[:2]), st.just(AccountStatus.CLOSED)),
    )
    def change_status(self, data: st.DataObject, status: AccountStatus) -> None:
        account_id = data.draw(st.sampled_from(sorted(self.model)))
        account = self.model[account_id]
        expected = None
        if account.status is AccountStatus.CLOSED:
            expected = "AccountClosed"
        elif status is AccountStatus.CLOSED and account.posted != 0:
            expected = "AccountNotEmpty"
        accepted = self.send_change(account_id, {"status": status}, ChangeAccount(status=status), expected)
        if accepted and status is not account.status:
            account.status = status
            self.events += 1

    @rule(
        data=st.data(),
        low=st.one_of(minimums, st.integers(1, 300)),
        high=maximums,
        which=st.sampled_from(["min_balance", "max_balance", "both"]),
    )
    def change_bounds(self, data: st.DataObject, low: int | None, high: int | None, which: str) -> None:
        account_id = data.draw(st.sampled_from(sorted(self.model)))
        account = self.model[account_id]
        sets_min, sets_max = which != "max_balance", which != "min_balance"
        body = {k: v for k, v in (("min_balance", low), ("max_balance", high)) if which in (k, "both")}
        command = ChangeAccount(
            min_balance=low, max_balance=high, sets_min_balance=sets_min, sets_max_balance=sets_max
        )
        low = low if sets_min else account.min_balance
        high = high if sets_max else account.max_balance
        expected = None
        if low is not None and high is not None and low > high:
            expected = "ValidationFailed"
        elif account.status is AccountStatus.CLOSED:
            expected = "AccountClosed"
        elif breaks(low, high, account.posted):
            expected = "InsufficientFunds"
        accepted = self.send_change(account_id, body, command, expected)
        if accepted and (low, high) != (account.min_balance, account.max_balance):
            account.min_balance, account.max_balance = low, high
            self.events += 1

    @rule(micros=st.integers(0, 3_600_000_000))
    def advance_the_clock(self, micros: int) -> None:
        self.micros += micros

    @precondition(lambda self: any(a.history for a in self.model.values()))
    @rule(data=st.data(), offset=st.integers(-1, 1))
    def read_the_balance_as_of_a_past_moment(self, data: st.DataObject, offset: int) -> None:
        account_id = data.draw(st.sampled_from(sorted(i for i, a in self.model.items() if a.history)))
        history = self.model[account_id].history
        # Moments before the clock's reading only: test_the_balance_as_of_... covers the others.
        at = min(data.draw(st.sampled_from(history))[0] + offset, self.micros - 1)
        expected = next(((p, v) for m, p, v in reversed(history) if m <= at), (0, 0))
        found = self.run(balance_as_of(self.db, LEDGER, account_id, from_micros(at)))
        assert (found.balance.posted, found.version) == expected

    # -- requests and the outcomes the rules predict ------------------------------------------

    def send_transfer(
        self, body: dict[str, Any], legs: list[Leg], *, currency: str | None, simple: bool
    ) -> None:
        request = TransferRequest(tuple(LegRequest(*leg) for leg in legs), currency=currency, simple=simple)
        expected = self.predict(legs, currency=currency, simple=simple)
        tally_event(f"{'simple' if simple else 'multi-leg'} transfer: {expected or 'posted'}")

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            made, created = await create_transfer(
                tx, LEDGER, request, request_hash=digest(canonical(body)), request_id=request_id
            )
            return render(201 if created else 200, transfer_view(made))

        try:
            request.check()  # as the route does: the body's own rules answer before the key is looked at
        except RequestError as refused:
            assert type(refused).__name__ == expected  # noqa: PT017 - the model decides what is expected
            return
        reply = self.send("/v1/transfers", body, use_case, expected)
        if reply is not None:
            at = to_micros(datetime.fromisoformat(orjson.loads(reply.body)["created_at"]))
            for account_id, direction, amount in legs:
                account = self.model[account_id]
                account.posted = account.after(direction, amount)
                account.version += 1
                account.history.append((at, account.posted, account.version))
            self.events += 1

    def predict(self, legs: list[Leg], *, currency: str | None, simple: bool) -> str | None:
        """The rejection the rules give, by name, or ``None`` when the transfer posts."""
        ids = [account_id for account_id, _, _ in legs]
        if len(set(ids)) < len(ids):
            return "SameAccount" if simple else "ValidationFailed"
        if sum(n if d is Direction.DEBIT else -n for _, d, n in legs) != 0:
            return "UnbalancedTransfer"
        if any(account_id not in self.model for account_id in ids):
            return "AccountNotFound"
        accounts = [self.model[account_id] for account_id in ids]
        if any(account.status is not AccountStatus.OPEN for account in accounts):
            return "AccountNotOpen"
        held = {account.currency for account in accounts}
        if simple and (len(held) > 1 or currency not in (None, *held)):
            return "CurrencyMismatch"
        net = dict.fromkeys(held, 0)
        for (_, d, n), account in zip(legs, accounts, strict=True):
            net[account.currency] += n if d is Direction.DEBIT else -n
        if any(net.values()):
            # Decided against the accounts' currencies, so it is a Rejection stored under the key.
            return "UnbalancedInCurrency"
        for (_, direction, amount), account in zip(legs, accounts, strict=True):
            posted = account.after(direction, amount)
            if not INT64_MIN <= posted <= INT64_MAX:
                return "AmountOverflow"
            if breaks(account.min_balance, account.max_balance, posted):
                return "InsufficientFunds"
        return None

    def send_change(
        self, account_id: str, body: dict[str, Any], command: ChangeAccount, expected: str | None
    ) -> bool:
        """Send a PATCH; whether it was accepted."""
        tally_event(f"change: {expected or 'accepted'}")

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            account = await change_account(tx, LEDGER, account_id, command, request_id=request_id)
            return render(200, account_view(account))

        return self.send(f"/v1/accounts/{account_id}", body, use_case, expected, method="PATCH") is not None

    # -- invariants, read from the database file ------------------------------------------------

    @invariant()
    def every_currency_sums_to_zero_and_entries_are_append_only(self) -> None:
        rows = self.query(
            "SELECT e.pk, a.currency, e.direction, e.amount FROM entries e"
            " JOIN accounts a ON a.pk = e.account_pk ORDER BY e.pk"
        )
        totals = dict.fromkeys(CURRENCIES, 0)
        for _, currency, direction, amount in rows:
            totals[currency] += amount if direction == "debit" else -amount
        assert totals == dict.fromkeys(CURRENCIES, 0)
        assert rows[: len(self.entries_seen)] == self.entries_seen
        self.entries_seen = rows

    @invariant()
    def every_balance_is_the_sum_of_its_entries_and_its_version_counts_them(self) -> None:
        entries: dict[int, list[tuple[str, int]]] = {}
        for account_pk, direction, amount in self.query("SELECT account_pk, direction, amount FROM entries"):
            entries.setdefault(account_pk, []).append((direction, amount))
        for pk, side, posted, version in self.query(
            "SELECT pk, normal_balance, posted, version FROM accounts"
        ):
            mine = entries.get(pk, [])
            assert posted == sum(n if d == side else -n for d, n in mine)
            assert version == len(mine)

    @invariant()
    def every_bound_holds(self) -> None:
        for side, posted, debits, credits, low, high in self.query(
            "SELECT normal_balance, posted, pending_debits, pending_credits, min_balance, max_balance"
            " FROM accounts"
        ):
            outflows, inflows = (debits, credits) if side == "credit" else (credits, debits)
            assert low is None or posted - outflows >= low
            assert high is None or posted + inflows <= high

    @invariant()
    def the_database_agrees_with_the_model_and_each_change_left_one_event(self) -> None:
        columns = "id, currency, normal_balance, min_balance, max_balance, status, posted, version"
        stored = {row[0]: row[1:] for row in self.query(f"SELECT {columns} FROM accounts")}  # noqa: S608
        assert stored == {account_id: account.row() for account_id, account in self.model.items()}
        assert self.query("SELECT COUNT(*) FROM events") == [(self.events,)]


TestLedgerModel = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "examples"),
)(LedgerMachine).TestCase


def test_the_balance_as_of_a_postings_moment_leaves_out_later_postings() -> None:
    """API.md: the balance "after the last posting at or before ``as_of``".

    Writes at one clock reading are stamped a microsecond apart (the write clock never goes back),
    so the first transfer's ``created_at`` lies after the clock's reading; the balance as of that
    moment must still leave out the second transfer.
    """
    machine = LedgerMachine()  # its clock stands still until a rule advances it
    try:
        machine.open_funding_and_customer_accounts()  # acct-0 is the USD funding account, acct-1 a customer
        for debit, credit, amount in (("acct-0", "acct-1", 100), ("acct-1", "acct-0", 30)):
            body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount}
            legs = [(debit, Direction.DEBIT, amount), (credit, Direction.CREDIT, amount)]
            machine.send_transfer(body, legs, currency=None, simple=True)
        history = machine.model["acct-1"].history
        assert [(posted, version) for _, posted, version in history] == [(100, 1), (70, 2)]
        found = machine.run(balance_as_of(machine.db, LEDGER, "acct-1", from_micros(history[0][0])))
        assert (found.balance.posted, found.version) == (100, 1)
    finally:
        machine.teardown()
