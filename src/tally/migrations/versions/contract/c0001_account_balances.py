"""Contract: the old balance columns of ``accounts`` go, with the triggers that mirrored them.

Revision ID: c0001_account_balances
Revises: 0000_baseline (the first revision of the contract branch)
Depends on: 0003_account_balances

Refused until the backfill job ``backfill-account-balances`` has finished and every account's row in
``account_balances`` equals its old columns. Running processes switch to ``account_balances`` when
they see the finished backfill (each looks every ``TALLY_SCHEMA_CHECK_MS``); this step first waits
until ``balance_triggers.GRACE_SECONDS`` have passed since then, so no running statement still names a column
it drops (ADR 0034). Downgrade brings the columns back, filled from ``account_balances``.
"""

import sqlalchemy as sa
from alembic import op

from tally.migrations.balance_triggers import (
    backfilled_at,
    create_balance_triggers,
    drop_balance_triggers,
    lock_for_ddl,
    wait_for_every_process,
)
from tally.migrations.operations import MigrationRefused

revision = "c0001_account_balances"
down_revision = "0000_baseline"
branch_labels = ("contract",)
depends_on = "0003_account_balances"

_BALANCES = ("posted", "pending_debits", "pending_credits", "version")
_Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UNEQUAL = sa.text(
    "SELECT count(*) FROM accounts AS a LEFT JOIN account_balances AS b ON b.account_pk = a.pk"
    " WHERE b.account_pk IS NULL OR a.posted <> b.posted OR a.pending_debits <> b.pending_debits"
    " OR a.pending_credits <> b.pending_credits OR a.version <> b.version"
)


class NotBackfilled(MigrationRefused):
    """The backfill has not finished, or found the two shapes apart: nothing was changed."""


def _wait_for_processes() -> None:
    bind = op.get_bind()
    finished_at = backfilled_at()
    if finished_at is None:
        raise NotBackfilled(
            "account_balances is not backfilled yet: run `tally jobs run backfill-account-balances`,"
            " then `tally db contract` again."
        )
    unequal = bind.execute(_UNEQUAL).scalar_one()
    if unequal:
        raise NotBackfilled(
            f"{unequal} account(s) differ between accounts and account_balances; the triggers should"
            " make that impossible. Nothing was changed: investigate before contracting."
        )
    wait_for_every_process(finished_at)


def upgrade() -> None:
    with op.get_context().autocommit_block():  # no lock held while processes switch
        _wait_for_processes()
    lock_for_ddl()
    drop_balance_triggers()
    if op.get_bind().dialect.name == "postgresql":  # one ALTER: one short ACCESS EXCLUSIVE lock
        drops = ", ".join(f"DROP COLUMN {name}" for name in _BALANCES)
        op.execute(f"ALTER TABLE accounts DROP CONSTRAINT ck_accounts_pending, {drops}")
        return
    with op.batch_alter_table("accounts", recreate="always", table_kwargs={"sqlite_strict": True}) as batch:
        batch.drop_constraint(op.f("ck_accounts_pending"), type_="check")
        for name in _BALANCES:
            batch.drop_column(name)


def downgrade() -> None:
    lock_for_ddl()
    with op.batch_alter_table("accounts", table_kwargs={"sqlite_strict": True}) as batch:
        for name in _BALANCES:
            batch.add_column(sa.Column(name, _Int64, nullable=False, server_default="0"))
        batch.create_check_constraint("pending", "pending_debits >= 0 AND pending_credits >= 0")
    greatest = "greatest" if op.get_bind().dialect.name == "postgresql" else "max"
    op.execute(
        "UPDATE accounts SET"  # noqa: S608 - greatest is one of two function names, not input
        " posted = (SELECT posted FROM account_balances WHERE account_pk = accounts.pk),"
        " pending_debits = (SELECT pending_debits FROM account_balances WHERE account_pk = accounts.pk),"
        " pending_credits = (SELECT pending_credits FROM account_balances WHERE account_pk = accounts.pk),"
        " version = (SELECT version FROM account_balances WHERE account_pk = accounts.pk),"
        f" updated_at = {greatest}(updated_at,"
        " (SELECT updated_at FROM account_balances WHERE account_pk = accounts.pk))"
    )
    create_balance_triggers()
