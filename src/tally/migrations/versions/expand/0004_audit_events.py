"""Key expiry and the audit trail: ``api_keys.expires_at`` and the append-only ``audit_events``.

Revision ID: 0004_audit_events
Revises: 0002_statements

Additive only (the expand branch): a nullable column and a new table, which older code never reads.
It grows from ``0002_statements`` beside ``0003_account_balances``, not after it: the two are
independent, so a Tally that needs this one still runs before the balances move (ADR 0036). The
triggers that refuse every change to an audit event come from ``store.audit_guard``, the same
statements the head schema is made with.
"""

import sqlalchemy as sa
from alembic import op

from tally.store.audit_guard import create_statements, drop_statements

revision = "0004_audit_events"
down_revision = "0002_statements"
branch_labels = None
depends_on = None

_INT64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A nullable column with no default: a catalog change on PostgreSQL, an ADD COLUMN on SQLite.
    op.add_column("api_keys", sa.Column("expires_at", _INT64, nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("pk", _INT64, autoincrement=True, nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target_type", sa.Text(), nullable=False),
        sa.Column("target_id", sa.Text(), nullable=False),
        sa.Column("actor_key_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("at", _INT64, nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ledger_id"], ["ledgers.id"], name=op.f("fk_audit_events_ledger_id_ledgers")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_events_id")),
        sqlite_strict=True,
    )
    op.create_index(op.f("ix_audit_events_ledger_id_pk"), "audit_events", ["ledger_id", "pk"])
    for statement in create_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_statements(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_index(op.f("ix_audit_events_ledger_id_pk"), table_name="audit_events")
    op.drop_table("audit_events")
    with op.batch_alter_table("api_keys", table_kwargs={"sqlite_strict": True}) as batch:
        batch.drop_column("expires_at")
