"""The triggers that keep ``accounts``' old balance columns and ``account_balances`` equal (ADR 0034).

They exist only while both shapes do (between revision ``0003_account_balances`` and the contract
step ``c0001_account_balances``). A process writes one side, whichever it reads, and a trigger copies
the write to the other side in the same transaction, so:

- an older Tally, which knows only the old columns, keeps working through the whole change;
- the backfill only has to copy accounts nobody has written since the expansion, and a copy can
  never overwrite a newer write (it inserts and leaves rows that exist);
- a process may switch sides at any moment: both sides hold the same values at every commit.

A copy made by a trigger does not fire the other trigger (``pg_trigger_depth() = 0`` on
PostgreSQL; SQLite does not fire a trigger from inside itself), and each copy skips rows that
already hold its values, so a write never echoes back and forth.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from tally.store.balance_shape import BACKFILL_RUN, BACKFILLED_AT

GRACE_SECONDS = 5.0  # > store.balance_shape.SWITCH_DELAY + the longest TALLY_SCHEMA_CHECK_MS (2 s)

_COPY_FORWARD = """
    INSERT INTO account_balances (account_pk, posted, pending_debits, pending_credits, version, updated_at)
    VALUES (NEW.pk, NEW.posted, NEW.pending_debits, NEW.pending_credits, NEW.version, NEW.updated_at)
    ON CONFLICT (account_pk) DO UPDATE SET
        posted = excluded.posted, pending_debits = excluded.pending_debits,
        pending_credits = excluded.pending_credits, version = excluded.version,
        updated_at = excluded.updated_at
"""
_COPY_BACKWARD_PG = """
    UPDATE accounts SET
        posted = NEW.posted, pending_debits = NEW.pending_debits,
        pending_credits = NEW.pending_credits, version = NEW.version,
        updated_at = greatest(updated_at, NEW.updated_at)
    WHERE pk = NEW.account_pk
      AND (posted, pending_debits, pending_credits, version)
          IS DISTINCT FROM (NEW.posted, NEW.pending_debits, NEW.pending_credits, NEW.version)
"""
_COPY_BACKWARD_SQLITE = """
    UPDATE accounts SET
        posted = NEW.posted, pending_debits = NEW.pending_debits,
        pending_credits = NEW.pending_credits, version = NEW.version,
        updated_at = max(updated_at, NEW.updated_at)
    WHERE pk = NEW.account_pk
      AND (posted IS NOT NEW.posted OR pending_debits IS NOT NEW.pending_debits
           OR pending_credits IS NOT NEW.pending_credits OR version IS NOT NEW.version)
"""
_BALANCE_COLUMNS = "posted, pending_debits, pending_credits, version"

_POSTGRES_CREATE = [
    f"""CREATE FUNCTION tally_balances_forward() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_COPY_FORWARD}
        WHERE (account_balances.posted, account_balances.pending_debits,
               account_balances.pending_credits, account_balances.version)
              IS DISTINCT FROM (excluded.posted, excluded.pending_debits,
                                excluded.pending_credits, excluded.version);
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION tally_balances_backward() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_COPY_BACKWARD_PG};
        RETURN NULL;
    END $$""",
    f"""CREATE TRIGGER account_balances_forward
    AFTER INSERT OR UPDATE OF {_BALANCE_COLUMNS} ON accounts
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION tally_balances_forward()""",
    """CREATE TRIGGER account_balances_backward
    AFTER INSERT OR UPDATE ON account_balances
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION tally_balances_backward()""",
]
_POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS account_balances_forward ON accounts",
    "DROP TRIGGER IF EXISTS account_balances_backward ON account_balances",
    "DROP FUNCTION IF EXISTS tally_balances_forward()",
    "DROP FUNCTION IF EXISTS tally_balances_backward()",
]
_SQLITE_CREATE = [
    f"CREATE TRIGGER account_balances_forward_insert AFTER INSERT ON accounts BEGIN {_COPY_FORWARD}; END",
    f"CREATE TRIGGER account_balances_forward_update AFTER UPDATE OF {_BALANCE_COLUMNS} ON accounts"
    f" BEGIN {_COPY_FORWARD}; END",
    f"CREATE TRIGGER account_balances_backward_insert AFTER INSERT ON account_balances"
    f" BEGIN {_COPY_BACKWARD_SQLITE}; END",
    f"CREATE TRIGGER account_balances_backward_update AFTER UPDATE ON account_balances"
    f" BEGIN {_COPY_BACKWARD_SQLITE}; END",
]
_SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS account_balances_{name}"
    for name in ("forward_insert", "forward_update", "backward_insert", "backward_update")
]


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def create_balance_triggers() -> None:
    for statement in _POSTGRES_CREATE if _postgres() else _SQLITE_CREATE:
        op.execute(statement)


def drop_balance_triggers() -> None:
    for statement in _POSTGRES_DROP if _postgres() else _SQLITE_DROP:
        op.execute(statement)


def lock_for_ddl() -> None:
    """On PostgreSQL, take the ``ACCESS EXCLUSIVE`` locks of both tables first, in one order.

    A revision's statements each take the lock they need as they run — ``SHARE ROW EXCLUSIVE`` for
    a foreign key or a trigger, ``ACCESS EXCLUSIVE`` for an ``ALTER`` — and upgrading a lock mid-way
    deadlocks with a transfer that holds its row locks and waits to update: the live-migration
    test met it. Taken first, the lock waits at most ``lock_timeout`` (then the revision is retried)
    and is held for the few milliseconds of catalog changes that follow.
    """
    if _postgres():
        names = [name for name in ("accounts", "account_balances") if _exists(name)]
        op.execute(f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE")


def _exists(table: str) -> bool:
    return bool(op.get_bind().execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar())


def backfilled_at() -> int | None:
    """When the backfill job finished (µs since the epoch), or ``None``: not yet."""
    return op.get_bind().execute(BACKFILLED_AT, BACKFILL_RUN).scalar()


def wait_for_every_process(since_micros: int) -> None:
    """Sleep until ``GRACE_SECONDS`` have passed since ``since_micros``: every running process has
    then looked at the schema again and chosen its side (``store.balance_shape``).

    Call it in ``op.get_context().autocommit_block()``: what the revision did before is then
    committed, so processes see it, and the wait holds no lock (on SQLite, no write lock). A test
    may pass a shorter grace in ``config.attributes["process_grace_seconds"]``.
    """
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    grace = float(attributes.get("process_grace_seconds", GRACE_SECONDS))
    waited = time.time() - since_micros / 1_000_000
    if waited < grace:
        time.sleep(grace - waited)


def forget_backfill() -> None:
    """Delete the backfill's run: processes that switched to the table switch back (``balance_shape``)."""
    op.get_bind().execute(sa.text("DELETE FROM job_runs WHERE job = :job AND period = :period"), BACKFILL_RUN)
