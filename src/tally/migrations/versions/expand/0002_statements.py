"""Daily account statements: the ``statements`` table and an index of entries by day.

Revision ID: 0002_statements
Revises: 0001_job_runs

Additive only (the expand branch): older code never reads either. The index on
``entries (created_at, account_pk)`` lets the ``statements`` job find the accounts with entries on
one day without reading every entry of all time (ADR 0033); ``entries`` is the largest table, so on
PostgreSQL the index is built ``CONCURRENTLY``, writes going on meanwhile.
"""

import sqlalchemy as sa
from alembic import op

from tally.migrations.operations import create_index_concurrently, drop_index_concurrently

revision = "0002_statements"
down_revision = "0001_job_runs"
branch_labels = None
depends_on = None

_INT64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # The concurrent build first: it commits what came before it, so a build that gives way to a
    # lock and is retried must find nothing else of this revision done (the index, if valid, is
    # kept; an invalid leftover is rebuilt). The table then commits with the version stamp.
    create_index_concurrently(
        op.f("ix_entries_created_at_account_pk"), "entries", ["created_at", "account_pk"]
    )
    op.create_table(
        "statements",
        sa.Column("account_pk", _INT64, nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("opening_balance", _INT64, nullable=False),
        sa.Column("closing_balance", _INT64, nullable=False),
        sa.Column("debits", _INT64, nullable=False),
        sa.Column("credits", _INT64, nullable=False),
        sa.Column("postings", _INT64, nullable=False),
        sa.CheckConstraint("debits >= 0 AND credits >= 0 AND postings > 0", name=op.f("ck_statements_sums")),
        sa.ForeignKeyConstraint(
            ["account_pk"], ["accounts.pk"], name=op.f("fk_statements_account_pk_accounts")
        ),
        sa.PrimaryKeyConstraint("account_pk", "day", name=op.f("pk_statements")),
        sqlite_strict=True,
    )


def downgrade() -> None:
    drop_index_concurrently(op.f("ix_entries_created_at_account_pk"), "entries")
    op.drop_table("statements")
