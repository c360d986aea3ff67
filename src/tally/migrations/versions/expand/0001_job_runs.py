"""Batch job runs: one row per (job, period), claimed once and checkpointed by every step (ADR 0032).

Revision ID: 0001_job_runs
Revises: 0000_baseline

Additive only (a new table no older code reads), so it ships on the expand branch.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_job_runs"
down_revision = "0000_baseline"
branch_labels = ("expand",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("done", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("total", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("lease_until", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("finished_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint("status IN ('running', 'finished')", name=op.f("ck_job_runs_status")),
        sa.PrimaryKeyConstraint("job", "period", name=op.f("pk_job_runs")),
        sqlite_strict=True,
    )


def downgrade() -> None:
    op.drop_table("job_runs")
