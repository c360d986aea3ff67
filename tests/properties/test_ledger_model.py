"""Random sequences of ledger operations, through the service layer, on a real SQLite file.

The invariants, in plain words, checked against the database file after every step:

1. Money is neither made nor lost: in every currency, the posting entries add up to zero
   (a debit counts +amount, a credit -amount), and so do the holds still open (hold entries
   minus release entries): what is held is balanced too.
2. Every account's stored ``posted`` is the sum of its posting entries, seen from its normal side;
   its ``pending_debits`` and ``pending_credits`` are what its hold entries put on that side minus
   what its release entries took back; neither is ever negative; its last entry carries these parts.
3. An account's ``version`` counts the operations that changed its balance (placing a hold or a
   posting, posting or voiding a hold, an expiry, a reversal): one each, even when one operation
   writes two entries for it (a release and a posting share a version); edits count for nothing.
4. Bounds hold on the stored balances: ``available >= min_balance`` when a minimum is set, and
   ``posted + pending inflows <= max_balance`` when a maximum is set.
5. A hold resolves at most once: per hold and account there is one hold entry, then at most one
   release (of all that was held), then, for a posted hold, one posting of at most that; a
   transfer's status only ever moves from ``pending`` to ``posted``, ``voided`` or ``expired``.
6. The ``holds`` table holds exactly the legs of the transfers whose stored status is ``pending``,
   and no entry of an account is dated at or after the expiry of one of its holds still open
   (which is what lets reads and history see a due hold as expired before anyone sweeps it).
7. Every committed change left exactly one event of its kind; only expiries carry no request id.
8. The database agrees with a model in plain Python: the same accounts, statuses, bounds, balances,
   versions and transfers, the same outcome (created, exists, or which rejection) for every request.
   Reads agree with it too: an account reads ``available = posted - pending outflows``, and from its
   ``expires_at`` on a hold reads ``expired`` and counts as pending nowhere, swept or not.

Checked by the rules that exercise them:

9. A replay (same idempotency key, same body) returns the identical reply and changes nothing;
   the same key with another body is refused and changes nothing.
10. The balance as of a past moment is the balance after the last change at or before it, where an
    expiry changes a balance at the hold's ``expires_at``, whether or not it has been swept.

Requests are driven exactly as the API routes drive them: body rules first (``check``), then
``IdempotentExecutor.run`` with an action calling the use case and a renderer of the reply. Time is
an injected clock that only rules move; the database stamps each write with the later of the clock
and a microsecond after its last write, and the model follows the same rule.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tally.domain.accounts import AccountStatus, Bounds, NormalBalance
from tally.domain.keys import Ledger
from tally.domain.transfers import TransferStatus
from tally.services.accounts import (
    OpenAccount,
    balance_as_of,
    get_account,
    open_account,
)
from tally.services.transfers import (
    create_transfer,
    get_transfer,
)
from tally.store.codec import from_micros
from tally.store.sqlite import SqliteDatabase
from tests.properties.ledger_machine import LedgerMachine
from tests.properties.ledger_model import CREDIT, DEBIT, LEDGER, ROOT, START, Parts, Proposal, digest

TestLedgerModel = settings(
    max_examples=50,
    stateful_step_count=60,
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
            legs = ((debit, DEBIT, amount), (credit, CREDIT, amount))
            assert machine.send_transfer(Proposal(legs, simple=True)) == "created"
        history = machine.ledger.accounts["acct-1"].history
        assert [(parts.posted, version) for _, parts, version in history] == [(100, 1), (70, 2)]
        found = machine.run(balance_as_of(machine.db, LEDGER, "acct-1", from_micros(history[0][0])))
        assert (found.balance.posted, found.version) == (100, 1)
        machine.verify_invariants()
    finally:
        machine.teardown()


def test_a_hold_on_a_frozen_account_can_be_voided_but_not_posted() -> None:
    """API.md: frozen refuses new postings and holds; existing holds may be voided."""
    machine = LedgerMachine()
    try:
        machine.open_funding_and_customer_accounts()  # acct-0: USD funding; acct-1: a USD customer
        fund = Proposal((("acct-0", DEBIT, 100), ("acct-1", CREDIT, 100)), simple=True)
        hold = Proposal(
            (("acct-1", DEBIT, 60), ("acct-0", CREDIT, 60)), simple=True, pending=True, client_id="h"
        )
        assert [machine.send_transfer(p) for p in (fund, hold)] == ["created", "created"]
        assert machine.set_status("acct-1", AccountStatus.FROZEN) is None
        assert machine.send_post("h", None) == "AccountNotOpen"
        assert machine.send_void("h") is None
        assert machine.send_void("h") == "TransferNotPending"
        account = machine.run(get_account(machine.db, LEDGER, "acct-1"))
        assert (account.balance.posted, account.balance.pending_debits, account.version) == (100, 0, 3)
        machine.verify_invariants()
    finally:
        machine.teardown()


def test_an_account_closes_once_its_hold_has_expired_though_nobody_swept_it() -> None:
    """API.md: closing needs zero posted and pending; a hold stops counting from its ``expires_at``."""
    machine = LedgerMachine()
    try:
        machine.open_funding_and_customer_accounts()
        machine.open_account("USD", NormalBalance.CREDIT, 0, None)  # acct-4
        expires_at = machine.write_now() + 1000
        hold = Proposal(
            (("acct-0", DEBIT, 50), ("acct-4", CREDIT, 50)),
            simple=True,
            pending=True,
            expires_at=expires_at,
            client_id="h",
        )
        assert machine.send_transfer(hold) == "created"
        assert machine.set_status("acct-4", AccountStatus.CLOSED) == "AccountNotEmpty"
        machine.micros = expires_at  # its very instant: it reads expired, and nothing has swept it
        assert machine.run(get_transfer(machine.db, LEDGER, "h")).status is TransferStatus.EXPIRED
        assert machine.query("SELECT status FROM transfers WHERE id = 'h'") == [("pending",)]
        account = machine.run(get_account(machine.db, LEDGER, "acct-4"))
        assert (account.balance.pending_credits, account.version) == (0, 2)
        machine.verify_invariants()
        assert machine.set_status("acct-4", AccountStatus.CLOSED) is None  # swept on touch, then closed
        assert machine.query("SELECT request_id FROM events WHERE type = 'transfer.expired'") == [(None,)]
        assert machine.send_post("h", None) == "TransferNotPending"
        machine.verify_invariants()
    finally:
        machine.teardown()


def test_a_multi_leg_hold_posts_only_in_full_and_reverses_only_as_a_whole() -> None:
    """API.md: `amount` on a multi-leg hold is partial_post_not_supported; ADR 0014: a multi-leg
    transfer reverses as a whole, once; a transfer that is not posted does not reverse at all."""
    machine = LedgerMachine()
    try:
        machine.open_funding_and_customer_accounts()  # acct-0: USD funding; acct-1: a USD customer
        machine.open_account("USD", NormalBalance.CREDIT, 0, None)  # acct-4
        fund = Proposal((("acct-0", DEBIT, 100), ("acct-1", CREDIT, 100)), simple=True)
        legs = (("acct-1", DEBIT, 60), ("acct-0", CREDIT, 40), ("acct-4", CREDIT, 20))
        held = Proposal(legs, simple=False, pending=True, client_id="m")
        assert [machine.send_transfer(p) for p in (fund, held)] == ["created", "created"]
        assert machine.send_post("m", 30) == "PartialPostNotSupported"
        assert machine.send_post("m", None) is None
        assert machine.send_reversal("m", 30) == "PartialReversalNotSupported"
        assert machine.send_reversal("m", 60) is None
        assert machine.send_reversal("m", None) == "ReversalExceedsOriginal"
        other = Proposal(
            (("acct-1", DEBIT, 10), ("acct-4", CREDIT, 10)), simple=True, pending=True, client_id="p"
        )
        assert machine.send_transfer(other) == "created"
        assert machine.send_reversal("p", None) == "TransferNotPosted"
        balances = {i: machine.ledger.accounts[i].parts for i in ("acct-0", "acct-1", "acct-4")}
        assert balances == {"acct-0": Parts(100), "acct-1": Parts(100, 10), "acct-4": Parts(0, 0, 10)}
        machine.verify_invariants()
    finally:
        machine.teardown()


async def test_an_account_created_again_reads_as_a_get_does_once_its_hold_expired(tmp_path: Path) -> None:
    """API.md: a create with an existing id and the same body returns the existing resource; from a
    hold's ``expires_at`` on, it no longer counts as pending, whether or not a sweeper has run."""
    micros = START
    db = SqliteDatabase(f"sqlite:///{tmp_path / 'tally.db'}", clock=lambda: micros)
    await db.start()
    try:
        async with db.write() as tx:
            await tx.ledgers.add(Ledger(LEDGER, "model", await tx.now()))
        funding = OpenAccount("USD", "fund", normal_balance=NormalBalance.DEBIT, bounds=Bounds(None, None))
        alice = OpenAccount("USD", "alice")
        for command in (funding, alice):
            async with db.write() as tx:
                await open_account(
                    tx, LEDGER, command, request_hash=digest(b"open", b"alice"), request_id=None
                )
        hold = Proposal((("fund", DEBIT, 50), ("alice", CREDIT, 50)), simple=True, pending=True)
        hold = replace(hold, expires_at=micros + 1000)
        async with db.write() as tx:
            await create_transfer(tx, LEDGER, hold.request(), request_hash=hold.hash, request_id=None)
        micros += 2000  # the hold has expired; nothing has swept it
        read = await get_account(db, LEDGER, "alice")
        async with db.write() as tx:
            again, created = await open_account(
                tx, LEDGER, alice, request_hash=digest(b"open", b"alice"), request_id=None
            )
        assert not created
        assert (again.balance, again.version) == (read.balance, read.version)  # pending_credits 50 vs 0
    finally:
        await db.stop()
