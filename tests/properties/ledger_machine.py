"""The Hypothesis state machine: rules that send requests to Tally on a real SQLite file and to the
plain-Python model (``ledger_model``), and the invariants checked after every step.

See ``test_ledger_model.py`` for the invariants in plain words.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tally.domain.accounts import AccountStatus, Bounds, Direction, EntryKind, NormalBalance
from tally.domain.errors import IdempotencyKeyReused, NotFound, RequestError
from tally.domain.keys import Ledger
from tally.domain.money import INT64_MAX
from tally.domain.transfers import TransferStatus
from tally.services.accounts import (
    ChangeAccount,
    OpenAccount,
    balance_as_of,
    change_account,
    get_account,
    list_accounts,
    list_entries,
    open_account,
)
from tally.services.audit import Actor
from tally.services.holds import SWEEP_BATCH, expire_due_holds, post_hold, void_hold
from tally.services.idempotency import Action, IdempotencyKey, IdempotentExecutor, Outcome
from tally.services.ports import StoredReply, Transaction
from tally.services.reversals import reverse_transfer
from tally.services.transfers import (
    BatchItem,
    ItemOutcome,
    create_batch,
    create_transfer,
    get_transfer,
    list_transfers,
)
from tally.services.views import JsonObject, account_view, transfer_view
from tally.store.codec import from_micros
from tally.store.sqlite import SqliteDatabase
from tests.properties.ledger_model import (
    CREDIT,
    CURRENCIES,
    DEBIT,
    LEDGER,
    NEW,
    PENDING,
    POSTED,
    START,
    Hold,
    LedgerModel,
    Leg,
    ModelAccount,
    ModelTransfer,
    Parts,
    Proposal,
    Sent,
    T,
    UseCase,
    amounts,
    amounts_around,
    attempt,
    canonical,
    code_of,
    digest,
    hold_shapes,
    maximums,
    micros_of,
    minimums,
    now_and_then,
    reject,
    render,
    tally_event,
)

# Accounts with their balances (ADR 0034: the balances have a table of their own).
ACCOUNTS = (
    "(SELECT a.*, b.posted, b.pending_debits, b.pending_credits, b.version"
    " FROM accounts a JOIN account_balances b ON b.account_pk = a.pk) AS accounts"
)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory(prefix="tally-model-")
        self.path = Path(self.directory.name) / "tally.db"
        self.loop = asyncio.new_event_loop()
        self.micros = START  # the clock's reading
        self.written = START  # the database's last write time, which its clock never goes behind
        self.db = SqliteDatabase(f"sqlite:///{self.path}", clock=lambda: self.micros, synchronous="NORMAL")
        self.executor = IdempotentExecutor(self.db)
        self.ledger = LedgerModel()
        self.proposals: dict[str, Proposal] = {}  # bodies of the transfers created with a client id
        self.sent: list[Sent] = []
        self.entries_seen: list[tuple[Any, ...]] = []
        self.statuses_seen: dict[int, str] = {}
        self.counter = 0  # requests sent
        self.named = 0  # client ids given to transfers
        self.run(self.db.start())
        self.run(self.create_ledger())
        self.reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    async def create_ledger(self) -> None:
        async with self.db.write() as tx:
            await tx.ledgers.add(Ledger(LEDGER, "model", await tx.now()))

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        try:
            self.reader.close()
            self.run(self.db.stop())
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            self.directory.cleanup()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with closing(self.reader.execute(sql)) as rows:
            return rows.fetchall()

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        # Every table of Tally's data (alembic_version is the schema's own bookkeeping, one column).
        listed = "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'alembic_version'"
        tables = sorted(row[0] for row in self.query(listed))
        return [self.query(f"SELECT * FROM {name} ORDER BY 1, 2") for name in tables]  # noqa: S608

    def write_now(self) -> int:
        """The time the next write will be stamped with."""
        return max(self.micros, self.written + 1)

    def read_now(self) -> int:
        return max(self.micros, self.written)

    def trial(self) -> LedgerModel:
        return copy.deepcopy(self.ledger)

    def execute(self, key: IdempotencyKey, action: Action) -> Outcome:
        return self.run(self.executor.run(LEDGER, key, action, reject))

    def send(
        self, path: str, body: dict[str, Any], use_case: UseCase, expected: str | None, method: str = "POST"
    ) -> StoredReply:
        """Send as a route does (after its body rules); check the outcome is ``expected``."""
        self.counter += 1
        key = IdempotencyKey(f"key-{self.counter}", digest(f"{method} {path}".encode(), canonical(body)))

        async def action(tx: Transaction) -> StoredReply:
            return await use_case(tx, key.key)

        reply = self.execute(key, action).reply
        self.sent.append(Sent(key, action, reply))
        # The stored reply carries the write time; a rejection found after a write (a sweep) is
        # stored by a second transaction, a microsecond later than the one that decided it.
        [(stored_at,)] = self.query("SELECT MAX(created_at) FROM idempotency_keys")
        self.written = max(self.written, stored_at)
        assert code_of(reply) == expected, (reply, expected)
        return reply

    # -- rules: accounts -------------------------------------------------------------------------

    @initialize(funds=st.integers(0, 5000), side=st.sampled_from(NormalBalance), low=minimums, high=maximums)
    def open_and_fund_the_first_accounts(
        self, funds: int, side: NormalBalance, low: int | None, high: int | None
    ) -> None:
        self.open_funding_and_customer_accounts()
        if funds:  # customers with money to hold and spend
            for funding, customer in (("acct-0", "acct-1"), ("acct-2", "acct-3")):
                legs = ((funding, DEBIT, funds), (customer, CREDIT, funds))
                assert self.send_transfer(Proposal(legs, simple=True)) == "created"
        for currency in CURRENCIES:  # a third account per currency, so that three legs can balance
            self.open_account(currency, side, low, high)

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
        assert reply.status == 201
        self.ledger.open(account_id, ModelAccount(currency, side, low, high))

    def pick(self, data: st.DataObject, currency: str | None, but: tuple[str, ...] = ()) -> str:
        """Mostly an account of ``currency`` not among ``but``; now and then any id, or an unknown one."""
        accounts = self.ledger.accounts
        fitting = sorted(i for i, a in accounts.items() if currency in (None, a.currency) and i not in but)
        anything = st.sampled_from([*sorted(accounts), "ghost"])
        return data.draw(now_and_then(st.sampled_from(fitting), anything) if fitting else anything)

    @rule(
        data=st.data(),
        status=now_and_then(st.sampled_from(list(AccountStatus)[:2]), st.just(AccountStatus.CLOSED)),
    )
    def change_status(self, data: st.DataObject, status: AccountStatus) -> None:
        # Half the time an account with something pending, where freezing and closing meet holds.
        holding = sorted(i for i, a in self.ledger.accounts.items() if a.parts[1:] != (0, 0))
        everyone = st.sampled_from(sorted(self.ledger.accounts))
        account_id = data.draw(st.one_of(st.sampled_from(holding), everyone) if holding else everyone)
        self.set_status(account_id, status)

    @precondition(lambda self: self.holding())
    @rule(data=st.data(), status=st.sampled_from([AccountStatus.FROZEN, AccountStatus.CLOSED]))
    def freeze_or_close_an_account_of_a_hold(self, data: st.DataObject, status: AccountStatus) -> None:
        """Frozen, its holds can still be voided but not posted; closed only once nothing is held
        (an expired hold counts for nothing, swept or not)."""
        held = [i for i, t in self.ledger.transfers.items() if t.status is PENDING]
        legs = self.ledger.transfers[data.draw(st.sampled_from(held))].legs
        self.set_status(data.draw(st.sampled_from([a for a, _, _ in legs])), status)

    def set_status(self, account_id: str, status: AccountStatus) -> str | None:
        return self.send_change(account_id, {"status": status}, ChangeAccount(status=status), status=status)

    @rule(
        data=st.data(),
        low=st.one_of(minimums, st.integers(1, 300)),
        high=maximums,
        which=st.sampled_from(["min_balance", "max_balance", "both"]),
    )
    def change_bounds(self, data: st.DataObject, low: int | None, high: int | None, which: str) -> None:
        account_id = data.draw(st.sampled_from(sorted(self.ledger.accounts)))
        account = self.ledger.accounts[account_id]
        sets_min, sets_max = which != "max_balance", which != "min_balance"
        body = {k: v for k, v in (("min_balance", low), ("max_balance", high)) if which in (k, "both")}
        command = ChangeAccount(
            min_balance=low, max_balance=high, sets_min_balance=sets_min, sets_max_balance=sets_max
        )
        bounds = (low if sets_min else account.min_balance, high if sets_max else account.max_balance)
        self.send_change(account_id, body, command, bounds=bounds)

    def send_change(
        self,
        account_id: str,
        body: dict[str, Any],
        command: ChangeAccount,
        *,
        status: AccountStatus | None = None,
        bounds: tuple[int | None, int | None] | None = None,
    ) -> str | None:
        """Send a PATCH; the rejection, or ``None`` when it was accepted."""
        now, trial = self.write_now(), self.trial()
        refused = attempt(lambda: trial.change(account_id, now, status=status, bounds=bounds))
        expected = refused.code if refused else None
        account = self.ledger.accounts[account_id]
        swept = account.parts != trial.accounts[account_id].parts
        closing = status is AccountStatus.CLOSED and account.status is not AccountStatus.CLOSED
        what = "close" if closing else "change"
        tally_event(f"{what}: {expected or 'accepted'}{' once its holds expired' if swept else ''}")

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            account = await change_account(tx, LEDGER, account_id, command, actor=Actor("key_1", request_id))
            return render(200, account_view(account))

        self.send(f"/v1/accounts/{account_id}", body, use_case, expected, method="PATCH")
        if expected is None:
            self.accept(trial)
        return expected

    # -- rules: transfers and holds --------------------------------------------------------------

    def propose(
        self, legs: Iterable[Leg], *, simple: bool, currency: str | None, hold: Hold, client_id: bool
    ) -> Proposal:
        pending, expires_in = hold
        expires_at = None if expires_in is None else self.write_now() + expires_in
        named = None
        if client_id:
            self.named += 1
            named = f"tr-{self.named}"
        return Proposal(tuple(legs), simple, currency, pending, expires_at, named)

    @rule(
        data=st.data(),
        amount=amounts,
        currency=st.sampled_from(CURRENCIES),
        named=st.booleans(),
        hold=hold_shapes,
        client_id=st.booleans(),
    )
    def transfer(
        self, data: st.DataObject, *, amount: int, currency: str, named: bool, hold: Hold, client_id: bool
    ) -> None:
        debit = self.pick(data, currency)
        credit = self.pick(data, currency, but=(debit,))
        stated = data.draw(now_and_then(st.just(currency), st.sampled_from(CURRENCIES))) if named else None
        legs = [(debit, DEBIT, amount), (credit, CREDIT, amount)]
        self.send_transfer(self.propose(legs, simple=True, currency=stated, hold=hold, client_id=client_id))

    def draw_legs(self, data: st.DataObject) -> list[Leg]:
        """Two to four legs on distinct accounts: balanced when they can be, else deliberately not."""
        leg = st.tuples(st.sampled_from(Direction), amounts)
        shape = data.draw(
            now_and_then(st.lists(leg, min_size=1, max_size=2), st.lists(leg, min_size=3, max_size=3))
        )
        currency = data.draw(now_and_then(st.sampled_from(CURRENCIES), st.none()))
        picked: list[str] = []
        for _ in range(len(shape) + 1):
            picked.append(self.pick(data, currency, but=tuple(picked)))
        legs = [(account_id, d, n) for account_id, (d, n) in zip(picked, shape, strict=False)]
        # The last leg balances the others when it can; when they already balance, it unbalances them.
        net = sum(n if d is DEBIT else -n for d, n in shape)
        direction = CREDIT if net > 0 else DEBIT
        legs.append((picked[-1], direction, min(abs(net), INT64_MAX) if net else data.draw(amounts)))
        return legs

    @rule(data=st.data(), hold=hold_shapes, client_id=st.booleans())
    def transfer_multi_leg(self, data: st.DataObject, hold: Hold, client_id: bool) -> None:
        legs = self.draw_legs(data)
        self.send_transfer(self.propose(legs, simple=False, currency=None, hold=hold, client_id=client_id))

    @precondition(lambda self: self.proposals)
    @rule(data=st.data(), same=st.booleans())
    def resend_a_transfer_with_its_client_id(self, data: st.DataObject, same: bool) -> None:
        """Under a new idempotency key: the same body finds the transfer; another conflicts."""
        proposal = self.proposals[data.draw(st.sampled_from(sorted(self.proposals)))]
        self.send_transfer(
            proposal if same else replace(proposal, pending=not proposal.pending, expires_at=None)
        )

    def send_transfer(self, proposal: Proposal) -> str:
        """``created``, ``exists`` or the rejection, which the model predicts and the database gives."""
        expected = proposal.body_error()
        request = proposal.request()
        kind = f"{'simple' if proposal.simple else 'multi-leg'} {'hold' if proposal.pending else 'transfer'}"
        try:
            request.check()  # as the route does: the body's own rules answer before the key is looked at
        except RequestError as error:
            assert type(error).__name__ == expected  # noqa: PT017 - the model says what to expect
            tally_event(f"{kind}: {expected}")
            return type(error).__name__
        assert expected is None, expected
        now, trial, name = self.write_now(), self.trial(), proposal.client_id or NEW
        statuses: list[str] = []

        def create() -> None:
            trial.sweep((account_id for account_id, _, _ in proposal.legs), now)
            statuses.append(trial.create(proposal, now, name))

        refused = attempt(create)
        code = refused.code if refused else None
        tally_event(f"{kind}: {code or statuses[0]}")

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            made, created = await create_transfer(
                tx, LEDGER, request, request_hash=proposal.hash, request_id=request_id
            )
            return render(201 if created else 200, transfer_view(made))

        reply = self.send("/v1/transfers", proposal.body, use_case, code)
        if code is not None:
            return code
        view = orjson.loads(reply.body)
        if statuses[0] == "created":
            assert reply.status == 201
            assert micros_of(view["created_at"]) == now
            trial.rename({NEW: view["id"]})
        else:
            assert (reply.status, view["id"]) == (200, proposal.client_id)
            assert view["status"] == trial.transfers[name].seen_at(now)
        self.accept(trial, [proposal] if statuses[0] == "created" else [])
        return statuses[0]

    def accept(self, trial: LedgerModel, created: Iterable[Proposal] = ()) -> None:
        """Keep what the model predicted for a request the database accepted."""
        expired = trial.events["transfer.expired"] - self.ledger.events["transfer.expired"]
        if expired:
            tally_event("a write swept due holds on touch")
        self.ledger = trial
        self.proposals.update((p.client_id, p) for p in created if p.client_id is not None)

    def holding(self, *, expiring: bool = False) -> bool:
        """Whether a hold is open (and set to expire), as the stored status says."""
        return any(
            t.status is PENDING and (t.expires_at or not expiring) for t in self.ledger.transfers.values()
        )

    def pick_transfer(self, data: st.DataObject, fits: Callable[[ModelTransfer], bool]) -> str:
        """Mostly a transfer that ``fits`` (half the time one of more than two legs, if any fits);
        now and then any transfer, or an unknown id."""
        fitting = [i for i, t in self.ledger.transfers.items() if fits(t)]
        many = [i for i in fitting if not self.ledger.transfers[i].two_legs]
        if many:
            fitting = data.draw(st.sampled_from([many, fitting]))
        anything = st.sampled_from([*self.ledger.transfers, "ghost"])
        return data.draw(now_and_then(st.sampled_from(fitting), anything) if fitting else anything)

    def draw_amount(self, data: st.DataObject, transfer_id: str) -> int:
        """An amount around the transfer's, or around what is left of it to reverse."""
        transfer = self.ledger.transfers.get(transfer_id)
        if transfer is None:
            return data.draw(amounts)
        return data.draw(amounts_around(transfer.amount, transfer.amount - transfer.reversed_amount))

    def shape(self, transfer_id: str) -> str:
        """For the statistics: whether a transfer has more than two legs."""
        transfer = self.ledger.transfers.get(transfer_id)
        return " (multi-leg)" if transfer and not transfer.two_legs else ""

    def pick_hold(self, data: st.DataObject) -> str:
        now = self.write_now()
        return self.pick_transfer(data, lambda t: t.seen_at(now) is PENDING)

    @precondition(lambda self: self.holding())
    @rule(data=st.data())
    def post_a_hold_in_full(self, data: st.DataObject) -> None:
        self.send_post(self.pick_hold(data), None)

    @precondition(lambda self: self.holding())
    @rule(data=st.data())
    def post_an_amount_of_a_hold(self, data: st.DataObject) -> None:
        """In part, exactly, or more than is held; only two-leg holds are posted in part."""
        transfer_id = self.pick_hold(data)
        self.send_post(transfer_id, self.draw_amount(data, transfer_id))

    def send_post(self, transfer_id: str, amount: int | None) -> str | None:
        now, trial = self.write_now(), self.trial()
        refused = attempt(lambda: trial.post(transfer_id, amount, now))
        code = refused.code if refused else None
        tally_event(
            f"post {'all' if amount is None else 'an amount'}{self.shape(transfer_id)}: {code or 'posted'}"
        )

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            posted = await post_hold(tx, LEDGER, transfer_id, amount, request_id=request_id)
            return render(200, transfer_view(posted))

        body = {} if amount is None else {"amount": amount}
        reply = self.send(f"/v1/transfers/{transfer_id}/post", body, use_case, code)
        if code is None:
            view = orjson.loads(reply.body)
            assert (view["status"], micros_of(view["posted_at"])) == ("posted", now)
            assert [leg["amount"] for leg in view["legs"]] == [
                n for _, _, n in trial.transfers[transfer_id].legs
            ]
            self.accept(trial)
        return code

    @precondition(lambda self: self.holding())
    @rule(data=st.data())
    def void_a_hold(self, data: st.DataObject) -> None:
        self.send_void(self.pick_hold(data))

    def send_void(self, transfer_id: str) -> str | None:
        now, trial = self.write_now(), self.trial()
        refused = attempt(lambda: trial.void(transfer_id, now))
        code = refused.code if refused else None
        frozen = code is None and any(
            self.ledger.accounts[a].status is AccountStatus.FROZEN
            for a, _, _ in trial.transfers[transfer_id].legs
        )
        tally_event(f"void: {code or 'voided'}{' on a frozen account' if frozen else ''}")

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            return render(200, transfer_view(await void_hold(tx, LEDGER, transfer_id, request_id=request_id)))

        reply = self.send(f"/v1/transfers/{transfer_id}/void", {}, use_case, code)
        if code is None:
            assert orjson.loads(reply.body)["status"] == "voided"
            self.accept(trial)
        return code

    @precondition(lambda self: self.ledger.transfers)
    @rule(data=st.data())
    def reverse_a_transfer(self, data: st.DataObject) -> None:
        transfer_id = self.pick_transfer(data, lambda t: t.status is POSTED)
        whole = data.draw(st.booleans())  # what is left of it, or an amount around the original's
        self.send_reversal(transfer_id, None if whole else self.draw_amount(data, transfer_id))

    def send_reversal(self, transfer_id: str, amount: int | None) -> str | None:
        now, trial = self.write_now(), self.trial()
        refused = attempt(lambda: trial.reverse(transfer_id, amount, now, NEW))
        code = refused.code if refused else None
        what = f"reverse {'the rest' if amount is None else 'an amount'}{self.shape(transfer_id)}"
        tally_event(f"{what}: {code or 'reversed'}")

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            reversal = await reverse_transfer(
                tx, LEDGER, transfer_id, amount, description=None, request_id=request_id
            )
            return render(201, transfer_view(reversal))

        body = {} if amount is None else {"amount": amount}
        reply = self.send(f"/v1/transfers/{transfer_id}/reverse", body, use_case, code)
        if code is None:
            view = orjson.loads(reply.body)
            assert (reply.status, view["reverses"], micros_of(view["created_at"])) == (201, transfer_id, now)
            trial.rename({NEW: view["id"]})
            self.accept(trial)
        return code

    @rule(data=st.data(), atomic=st.booleans(), size=st.integers(1, 4))
    def send_a_batch(self, data: st.DataObject, atomic: bool, size: int) -> None:
        items: list[Proposal] = []
        for _ in range(size):
            items.append(self.draw_batch_item(data, items))
        self.send_batch(items, atomic=atomic)

    def draw_batch_item(self, data: st.DataObject, earlier: list[Proposal]) -> Proposal:
        """A new transfer or hold; now and then one that repeats or conflicts with an earlier one (in
        this batch or before), or one whose body alone is wrong."""
        kinds = ["simple", "multi-leg"]
        kinds += ["repeat", "conflict"] if earlier or self.proposals else []
        rare = ["same account", "unbalanced"]
        kind = data.draw(now_and_then(st.sampled_from(kinds), st.sampled_from(rare)))
        hold, client_id = data.draw(hold_shapes), data.draw(st.booleans())
        if kind in ("repeat", "conflict"):
            named = [p for p in earlier if p.client_id is not None] + list(self.proposals.values())
            before = data.draw(st.sampled_from(named or earlier))
            return (
                before if kind == "repeat" else replace(before, pending=not before.pending, expires_at=None)
            )
        if kind == "multi-leg":
            return self.propose(
                self.draw_legs(data), simple=False, currency=None, hold=hold, client_id=client_id
            )
        currency = data.draw(st.sampled_from(CURRENCIES))
        debit = self.pick(data, currency)
        credit = debit if kind == "same account" else self.pick(data, currency, but=(debit,))
        amount = data.draw(amounts)
        legs: list[Leg] = [(debit, DEBIT, amount), (credit, CREDIT, amount)]
        if kind == "unbalanced":
            legs[1] = (credit, CREDIT, amount + 1)
        return self.propose(legs, simple=kind != "unbalanced", currency=None, hold=hold, client_id=client_id)

    def send_batch(self, items: list[Proposal], *, atomic: bool) -> str | None:
        now, trial = self.write_now(), self.trial()
        names = [p.client_id or f"{NEW}{index}" for index, p in enumerate(items)]
        predicted: list[tuple[str, str]] = []
        refused = attempt(lambda: predicted.extend(trial.batch(items, names, now, atomic=atomic)))
        code = refused.code if refused else None
        tally_event(f"{'atomic' if atomic else 'non-atomic'} batch: {code or 'applied'}")
        batch: list[BatchItem] = []
        for proposal in items:  # as the route builds them: the body rules of each item first
            request = proposal.request()
            try:
                request.check()
            except RequestError as error:
                batch.append(BatchItem(None, proposal.hash, error))
            else:
                batch.append(BatchItem(request, proposal.hash))

        async def use_case(tx: Transaction, request_id: str) -> StoredReply:
            outcomes = await create_batch(tx, LEDGER, batch, atomic=atomic, request_id=request_id)
            return render(201 if atomic else 200, {"results": [item_view(o) for o in outcomes]})

        body = {"transfers": [p.body for p in items], "atomic": atomic}
        reply = self.send("/v1/transfers/batch", body, use_case, code)
        if refused is not None:
            if refused.failures:
                found = orjson.loads(reply.body)["errors"]
                assert found == [{"index": i, "code": c} for i, c in refused.failures]
            return code
        results = orjson.loads(reply.body)["results"]
        assert [(r["status"], r.get("error", {}).get("code")) for r in results] == [
            (status, name if status == "error" else None) for status, name in predicted
        ]
        chosen: dict[str, str] = {}
        for (status, name), result in zip(predicted, results, strict=True):
            if status == "created":
                assert micros_of(result["transfer"]["created_at"]) == now
                chosen[name] = result["transfer"]["id"]
            elif status == "exists":
                assert result["transfer"]["id"] == name
                assert result["transfer"]["status"] == trial.transfers[name].seen_at(now)
        for name, transfer_id in chosen.items():
            assert name.startswith(NEW) or name == transfer_id
        trial.rename(chosen)
        created = [p for p, (status, _) in zip(items, predicted, strict=True) if status == "created"]
        self.accept(trial, created)
        return None

    # -- rules: time and the sweeper -------------------------------------------------------------

    @rule(micros=st.integers(0, 3_600_000_000))
    def advance_the_clock(self, micros: int) -> None:
        self.micros += micros

    @precondition(lambda self: self.holding(expiring=True))
    @rule(data=st.data(), offset=st.integers(-1, 1))
    def advance_the_clock_to_an_expiry(self, data: st.DataObject, offset: int) -> None:
        """To a microsecond before a hold's expiry, its very instant, or just after."""
        moments = sorted(
            t.expires_at for t in self.ledger.transfers.values() if t.status is PENDING and t.expires_at
        )
        self.micros = max(self.micros, data.draw(st.sampled_from(moments)) + offset)

    @precondition(lambda self: self.holding(expiring=True))
    @rule(data=st.data(), offset=st.one_of(st.none(), st.integers(-1, 0)))
    def run_the_sweeper(self, data: st.DataObject, offset: int | None) -> None:
        """Now, or at a hold's expiry instant or the microsecond before it."""
        if offset is not None:
            self.advance_the_clock_to_an_expiry(data, offset)
        now = self.write_now()
        # The sweeper looks on a reader first, at the read time: when the clock is behind the last
        # write, that is a microsecond before the time its write would get. Nothing due then: no write.
        looked = self.read_now()
        if any(t.due(looked) for t in self.ledger.transfers.values()):
            due = self.ledger.sweep_due(now, SWEEP_BATCH)  # a sweep is never refused
        else:
            due = 0
        tally_event(f"sweeper: {'nothing' if due == 0 else 'some'} due")
        assert self.run(expire_due_holds(self.db)) == due
        if due:
            self.written = now

    # -- rules: replays and reads ----------------------------------------------------------------

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

    @rule(data=st.data())
    def read_an_account(self, data: st.DataObject) -> None:
        account_id = self.pick(data, None)
        if account_id not in self.ledger.accounts:
            with pytest.raises(NotFound):
                self.run(get_account(self.db, LEDGER, account_id))
            return
        view = account_view(self.run(get_account(self.db, LEDGER, account_id)))
        assert self.as_read(view) == self.expected_read(account_id, self.read_now())
        # Its entries list postings only (newest first), so a client summing them gets ``posted``.
        account = self.ledger.accounts[account_id]
        listed = self.run(list_entries(self.db, LEDGER, account_id, before=None, limit=1000)).items
        assert all(entry.kind is EntryKind.POSTING for entry in listed)
        signed = [e.amount if e.direction.value == account.side.value else -e.amount for e in listed]
        assert sum(signed) == account.parts.posted
        assert all(e.posted_after == account.parts.posted for e in listed[:1])

    @rule(data=st.data(), status=st.one_of(st.none(), st.sampled_from(TransferStatus)))
    def list_transfers_by_status(self, data: st.DataObject, status: TransferStatus | None) -> None:
        """Filtered as they read: a due hold is listed as expired, and not as pending."""
        account_id = data.draw(st.one_of(st.none(), st.sampled_from(sorted(self.ledger.accounts))))
        at = self.read_now()
        page = self.run(
            list_transfers(self.db, LEDGER, account_id=account_id, status=status, before=None, limit=1000)
        )
        assert [(t.id, t.status) for t in page.items] == [
            (i, t.seen_at(at))
            for i, t in reversed(self.ledger.transfers.items())
            if status in (None, t.seen_at(at)) and (account_id is None or t.touches(account_id))
        ]

    @rule(data=st.data())
    def read_a_transfer(self, data: st.DataObject) -> None:
        transfer_id = self.pick_transfer(data, lambda t: t.expires_at is not None)
        expected = self.ledger.transfers.get(transfer_id)
        if expected is None:
            with pytest.raises(NotFound):
                self.run(get_transfer(self.db, LEDGER, transfer_id))
            return
        view = transfer_view(self.run(get_transfer(self.db, LEDGER, transfer_id)))
        assert view["status"] == expected.seen_at(self.read_now())
        assert (view["held_amount"], view["reversed_amount"]) == (
            expected.held_amount,
            expected.reversed_amount,
        )
        assert [leg["amount"] for leg in view["legs"]] == [n for _, _, n in expected.legs]

    @precondition(lambda self: any(a.history for a in self.ledger.accounts.values()))
    @rule(data=st.data(), offset=st.integers(-1, 1))
    def read_the_balance_as_of_a_past_moment(self, data: st.DataObject, offset: int) -> None:
        accounts = self.ledger.accounts
        account_id = data.draw(st.sampled_from(sorted(i for i, a in accounts.items() if a.history)))
        moments = [m for m, _, _ in accounts[account_id].history]
        moments += [
            t.expires_at for t in self.ledger.transfers.values() if t.expires_at and t.touches(account_id)
        ]
        # Moments up to the database clock's reading only: test_the_balance_as_of_... covers the others.
        at = min(data.draw(st.sampled_from(moments)) + offset, self.read_now())
        found = self.run(balance_as_of(self.db, LEDGER, account_id, from_micros(at)))
        balance = found.balance
        parts = Parts(balance.posted, balance.pending_debits, balance.pending_credits)
        assert (parts, found.version) == self.ledger.balance_as_of(account_id, at)
        now = self.run(balance_as_of(self.db, LEDGER, account_id, None))
        parts = Parts(now.balance.posted, now.balance.pending_debits, now.balance.pending_credits)
        assert (parts, now.version) == self.ledger.balance_as_of(account_id, self.read_now())

    # -- invariants, read from the database file ------------------------------------------------

    @invariant()
    def money_is_conserved_and_entries_are_append_only(self) -> None:
        rows = self.query(
            "SELECT e.pk, e.account_pk, e.transfer_pk, e.kind, e.direction, e.amount, e.posted_after,"
            " e.pending_debits_after, e.pending_credits_after, e.account_version, e.created_at, a.currency"
            " FROM entries e JOIN accounts a ON a.pk = e.account_pk ORDER BY e.pk"
        )
        posted, held = Counter[str](), Counter[str]()
        for *_, kind, direction, amount, _, _, _, _, _, currency in rows:
            signed = amount if direction == "debit" else -amount
            if kind == "posting":
                posted[currency] += signed
            else:
                held[currency] += signed if kind == "hold" else -signed
        assert not any(posted.values()), posted
        assert not any(held.values()), held
        assert rows[: len(self.entries_seen)] == self.entries_seen
        self.entries_seen = rows

    @invariant()
    def every_balance_is_its_entries_and_its_version_counts_operations(self) -> None:
        entries: dict[int, list[tuple[Any, ...]]] = {}
        for row in self.query(
            "SELECT account_pk, transfer_pk, created_at, kind, direction, amount, account_version,"
            " posted_after, pending_debits_after, pending_credits_after FROM entries ORDER BY pk"
        ):
            entries.setdefault(row[0], []).append(row[1:])
        for pk, side, *parts, version in self.query(
            f"SELECT pk, normal_balance, posted, pending_debits, pending_credits, version FROM {ACCOUNTS}"  # noqa: S608
        ):
            mine = entries.get(pk, [])
            sums = Counter[tuple[str, str]]()
            for _, _, kind, direction, amount, *_ in mine:
                sums[kind, direction] += amount
            posted = sums["posting", side] - sums["posting", "credit" if side == "debit" else "debit"]
            pending = [sums["hold", d] - sums["release", d] for d in ("debit", "credit")]
            assert parts == [posted, *pending]
            assert min(pending) >= 0
            # An operation (one transfer's change at one moment) carries one version, the next one,
            # however many entries it wrote for the account.
            operations: dict[tuple[int, int], set[int]] = {}
            for transfer_pk, created_at, _, _, _, entry_version, *_ in mine:
                operations.setdefault((transfer_pk, created_at), set()).add(entry_version)
            assert list(operations.values()) == [{n} for n in range(1, version + 1)]
            assert not mine or list(mine[-1][-3:]) == parts

    @invariant()
    def every_bound_holds(self) -> None:
        for side, posted, debits, credits, low, high in self.query(
            "SELECT normal_balance, posted, pending_debits, pending_credits, min_balance, max_balance"  # noqa: S608
            f" FROM {ACCOUNTS}"
        ):
            outflows, inflows = (debits, credits) if side == "credit" else (credits, debits)
            assert low is None or posted - outflows >= low
            assert high is None or posted + inflows <= high

    @invariant()
    def each_hold_resolves_once_and_the_holds_table_is_the_open_holds(self) -> None:
        kinds: dict[tuple[int, int], list[tuple[str, str, int]]] = {}
        statuses = dict(self.query("SELECT pk, status FROM transfers"))
        for transfer_pk, account_pk, kind, direction, amount in self.query(
            "SELECT transfer_pk, account_pk, kind, direction, amount FROM entries ORDER BY pk"
        ):
            kinds.setdefault((transfer_pk, account_pk), []).append((kind, direction, amount))
        shapes = {
            "posted": (("posting",), ("hold", "release", "posting")),
            "pending": (("hold",),),
            "voided": (("hold", "release"),),
            "expired": (("hold", "release"),),
        }
        for (transfer_pk, _), found in kinds.items():
            assert tuple(k for k, _, _ in found) in shapes[statuses[transfer_pk]], found
            assert len({d for _, d, _ in found}) == 1  # every entry of a leg is on the leg's side
            if found[0][0] == "hold":
                held = found[0][2]
                assert all(n == held for k, _, n in found if k == "release")
                assert all(n <= held for k, _, n in found if k == "posting")
        for pk, status in statuses.items():
            before = self.statuses_seen.get(pk, status)
            assert status == before or (before, status) in {
                ("pending", "posted"),
                ("pending", "voided"),
                ("pending", "expired"),
            }
        self.statuses_seen = statuses
        held_legs = self.query(
            "SELECT transfer_pk, account_pk, direction, amount, expires_at FROM holds ORDER BY 1, 2"
        )
        assert held_legs == self.query(
            "SELECT l.transfer_pk, l.account_pk, l.direction, l.amount, t.expires_at FROM transfer_legs l"
            " JOIN transfers t ON t.pk = l.transfer_pk WHERE t.status = 'pending' ORDER BY 1, 2"
        )
        assert not self.query(
            "SELECT h.transfer_pk FROM holds h JOIN entries e ON e.account_pk = h.account_pk"
            " WHERE e.created_at >= h.expires_at"
        )

    @invariant()
    def the_database_agrees_with_the_model_and_each_change_left_one_event(self) -> None:
        columns = "id, currency, normal_balance, min_balance, max_balance, status, posted,"
        columns += " pending_debits, pending_credits, version"
        stored = {row[0]: row[1:] for row in self.query(f"SELECT {columns} FROM {ACCOUNTS}")}  # noqa: S608
        assert stored == {account_id: account.row() for account_id, account in self.ledger.accounts.items()}
        legs: dict[str, list[tuple[str, str, int]]] = {}
        for transfer_id, *leg in self.query(
            "SELECT t.id, a.id, l.direction, l.amount FROM transfer_legs l JOIN transfers t"
            " ON t.pk = l.transfer_pk JOIN accounts a ON a.pk = l.account_pk"
            " ORDER BY l.transfer_pk, l.position"
        ):
            legs.setdefault(transfer_id, []).append(tuple(leg))
        transfers = {
            transfer_id: (*row, tuple(legs[transfer_id]))
            for transfer_id, *row in self.query(
                "SELECT t.id, t.status, t.held_amount, t.reversed_amount, t.expires_at, t.created_at,"
                " t.posted_at, r.id FROM transfers t LEFT JOIN transfers r ON r.pk = t.reverses_pk"
                " ORDER BY t.pk"
            )
        }
        assert list(transfers.items()) == [(i, t.row()) for i, t in self.ledger.transfers.items()]
        events = self.query("SELECT type, request_id IS NULL, COUNT(*) FROM events GROUP BY 1, 2")
        assert {(kind, bool(by_timer)): n for kind, by_timer, n in events} == {
            (kind, kind == "transfer.expired"): n for kind, n in self.ledger.events.items() if n
        }

    @invariant()
    def reads_agree_with_the_model_even_before_a_sweep(self) -> None:
        at = self.read_now()
        if any(t.due(at) for t in self.ledger.transfers.values()):
            tally_event("read a due hold before any sweep")
        # One read of every account (the same view as get_account's; read_an_account reads one).
        accounts = self.run(
            list_accounts(self.db, LEDGER, currency=None, status=None, after=None, limit=1000)
        )
        assert {a.id: self.as_read(account_view(a)) for a in accounts.items} == {
            account_id: self.expected_read(account_id, at) for account_id in self.ledger.accounts
        }
        page = self.run(
            list_transfers(self.db, LEDGER, account_id=None, status=None, before=None, limit=1000)
        )
        assert {t.id: t.status for t in page.items} == {
            i: t.seen_at(at) for i, t in self.ledger.transfers.items()
        }

    @staticmethod
    def as_read(view: JsonObject) -> tuple[Any, ...]:
        return (view["status"], view["balance"], view["version"])

    def expected_read(self, account_id: str, at: int) -> tuple[Any, ...]:
        """The account as it reads at ``at``: its due holds released, one version each."""
        account = self.ledger.accounts[account_id]
        parts, version = self.ledger.balance_as_of(account_id, at)
        return (account.status.value, parts.view(account.side), version)

    def verify_invariants(self) -> None:
        """Every invariant, for the example-based tests below, which run outside Hypothesis."""
        self.money_is_conserved_and_entries_are_append_only()
        self.every_balance_is_its_entries_and_its_version_counts_operations()
        self.every_bound_holds()
        self.each_hold_resolves_once_and_the_holds_table_is_the_open_holds()
        self.the_database_agrees_with_the_model_and_each_change_left_one_event()
        self.reads_agree_with_the_model_even_before_a_sweep()


def item_view(outcome: ItemOutcome) -> JsonObject:
    """A batch item's result, as the batch route renders it (with the error's class for its code)."""
    result: JsonObject = {"index": outcome.index, "status": outcome.status}
    if outcome.transfer is not None:
        result["transfer"] = transfer_view(outcome.transfer)
    if outcome.error is not None:
        result["error"] = {"code": type(outcome.error).__name__}
    return result
