"""Expand: account balances get a table of their own, kept equal to the old columns by triggers.

Revision ID: 0003_account_balances
Revises: 0002_statements

Every posting rewrote the whole ``accounts`` row — name, metadata, ids — to change four integers;
``account_balances`` holds just those (ADR 0034). This step is additive and safe with every Tally:
older code keeps writing the old columns, which now have defaults (so newer code can insert accounts
without naming them), and the triggers copy each write to the other side. The accounts nobody writes
meanwhile are copied by the batch job ``backfill-account-balances``; ``c0001_account_balances``
removes the old columns.
"""

import time

import sqlalchemy as sa
from alembic import op

from tally.migrations.balance_triggers import (
    backfilled_at,
    create_balance_triggers,
    drop_balance_triggers,
    forget_backfill,
    lock_for_ddl,
    wait_for_every_process,
)

revision = "0003_account_balances"
down_revision = "0002_statements"
branch_labels = None
depends_on = None

_BALANCES = ("posted", "pending_debits", "pending_credits", "version")
_Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _defaults(value: str | None) -> None:
    """Give the old balance columns a default of 0 (``None``: take it away)."""
    if op.get_bind().dialect.name == "postgresql":  # a catalog change only, no table rewrite
        for name in _BALANCES:
            default = "DROP DEFAULT" if value is None else f"SET DEFAULT {value}"
            op.execute(f"ALTER TABLE accounts ALTER COLUMN {name} {default}")
        return
    # SQLite cannot alter a column: batch mode copies the table (under the write lock).
    with op.batch_alter_table("accounts", recreate="always", table_kwargs={"sqlite_strict": True}) as batch:
        for name in _BALANCES:
            batch.alter_column(name, existing_type=_Int64, existing_nullable=False, server_default=value)


def upgrade() -> None:
    lock_for_ddl()
    op.create_table(
        "account_balances",
        sa.Column("account_pk", _Int64, autoincrement=False, nullable=False),
        sa.Column("posted", _Int64, nullable=False),
        sa.Column("pending_debits", _Int64, nullable=False),
        sa.Column("pending_credits", _Int64, nullable=False),
        sa.Column("version", _Int64, nullable=False),
        sa.Column("updated_at", _Int64, nullable=False),
        sa.CheckConstraint(
            "pending_debits >= 0 AND pending_credits >= 0", name=op.f("ck_account_balances_pending")
        ),
        sa.ForeignKeyConstraint(
            ["account_pk"], ["accounts.pk"], name=op.f("fk_account_balances_account_pk_accounts")
        ),
        sa.PrimaryKeyConstraint("account_pk", name=op.f("pk_account_balances")),
        sqlite_strict=True,
    )
    _defaults("0")
    create_balance_triggers()


def downgrade() -> None:
    # Processes that switched to the table after the backfill must switch back before it goes:
    # forget the backfill, then give every process the time to look again.
    if backfilled_at() is not None:
        with op.get_context().autocommit_block():
            forget_backfill()
            wait_for_every_process(int(time.time() * 1_000_000))
    # The triggers kept the old columns equal to the table until now: they hold every balance.
    lock_for_ddl()
    drop_balance_triggers()
    op.drop_table("account_balances")
    _defaults(None)
