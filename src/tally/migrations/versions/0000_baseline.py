"""The baseline: the schema of Tally 0.1 before migrations existed (issues 2–7).

Revision ID: 0000_baseline
Revises: (none; the root of both the expand and the contract branch)

A database created by ``create_all`` before Alembic arrived holds exactly this schema; ``tally db
upgrade`` recognises it and stamps it with this revision instead of creating anything.
"""

import sqlalchemy as sa
from alembic import op

revision = "0000_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_positions",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("xid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name=op.f("pk_feed_positions")),
        sqlite_strict=True,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("keep_until", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("ledger_id", "key", name=op.f("pk_idempotency_keys")),
        sqlite_strict=True,
    )
    op.create_index(op.f("ix_idempotency_keys_keep_until"), "idempotency_keys", ["keep_until"], unique=False)
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_inbox")),
        sqlite_strict=True,
    )
    op.create_table(
        "instance",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_instance")),
        sqlite_strict=True,
    )
    op.create_table(
        "jobs",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("leased_by", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("dedupe_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("status IN ('ready', 'running', 'done', 'dead')", name=op.f("ck_jobs_status")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_jobs")),
        sa.UniqueConstraint("queue", "dedupe_key", name=op.f("uq_jobs_queue_dedupe_key")),
        sqlite_strict=True,
    )
    op.create_index(op.f("ix_jobs_queue_status_run_at"), "jobs", ["queue", "status", "run_at"], unique=False)
    op.create_table(
        "ledgers",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledgers")),
        sqlite_strict=True,
    )
    op.create_table(
        "accounts",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("normal_balance", sa.Text(), nullable=False),
        sa.Column("min_balance", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("max_balance", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("posted", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pending_debits", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pending_credits", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("normal_balance IN ('credit', 'debit')", name=op.f("ck_accounts_normal_balance")),
        sa.CheckConstraint("status IN ('open', 'frozen', 'closed')", name=op.f("ck_accounts_status")),
        sa.CheckConstraint("pending_debits >= 0 AND pending_credits >= 0", name=op.f("ck_accounts_pending")),
        sa.ForeignKeyConstraint(["ledger_id"], ["ledgers.id"], name=op.f("fk_accounts_ledger_id_ledgers")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_accounts")),
        sa.UniqueConstraint("ledger_id", "id", name=op.f("uq_accounts_ledger_id_id")),
        sqlite_strict=True,
    )
    op.create_index(
        op.f("ix_accounts_ledger_id_currency_status_pk"),
        "accounts",
        ["ledger_id", "currency", "status", "pk"],
        unique=False,
    )
    op.create_index(op.f("ix_accounts_ledger_id_pk"), "accounts", ["ledger_id", "pk"], unique=False)
    op.create_index(
        op.f("ix_accounts_ledger_id_status_pk"), "accounts", ["ledger_id", "status", "pk"], unique=False
    )
    op.create_table(
        "api_keys",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("revoked_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("last_used_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(["ledger_id"], ["ledgers.id"], name=op.f("fk_api_keys_ledger_id_ledgers")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("id", name=op.f("uq_api_keys_id")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_keys_secret_hash")),
        sqlite_strict=True,
    )
    op.create_index(op.f("ix_api_keys_ledger_id_pk"), "api_keys", ["ledger_id", "pk"], unique=False)
    op.create_table(
        "events",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("xid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(["ledger_id"], ["ledgers.id"], name=op.f("fk_events_ledger_id_ledgers")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_events")),
        sa.UniqueConstraint("id", name=op.f("uq_events_id")),
        sqlite_strict=True,
    )
    op.create_index(op.f("ix_events_ledger_id_pk"), "events", ["ledger_id", "pk"], unique=False)
    op.create_index(op.f("ix_events_ledger_id_xid_pk"), "events", ["ledger_id", "xid", "pk"], unique=False)
    op.create_index(op.f("ix_events_xid_pk"), "events", ["xid", "pk"], unique=False)
    op.create_table(
        "transfer_batches",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("atomic", sa.Integer(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("results", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("completed_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'processing', 'completed', 'failed')",
            name=op.f("ck_transfer_batches_status"),
        ),
        sa.ForeignKeyConstraint(
            ["ledger_id"], ["ledgers.id"], name=op.f("fk_transfer_batches_ledger_id_ledgers")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_transfer_batches")),
        sa.UniqueConstraint("id", name=op.f("uq_transfer_batches_id")),
        sqlite_strict=True,
    )
    op.create_index(
        op.f("ix_transfer_batches_ledger_id_pk"), "transfer_batches", ["ledger_id", "pk"], unique=False
    )
    op.create_table(
        "transfers",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("reverses_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("reversed_amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("held_amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("expires_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("request_hash", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("posted_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "status IN ('posted', 'pending', 'voided', 'expired')", name=op.f("ck_transfers_status")
        ),
        sa.ForeignKeyConstraint(["ledger_id"], ["ledgers.id"], name=op.f("fk_transfers_ledger_id_ledgers")),
        sa.ForeignKeyConstraint(
            ["reverses_pk"], ["transfers.pk"], name=op.f("fk_transfers_reverses_pk_transfers")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_transfers")),
        sa.UniqueConstraint("ledger_id", "id", name=op.f("uq_transfers_ledger_id_id")),
        sqlite_strict=True,
    )
    op.create_index(op.f("ix_transfers_ledger_id_pk"), "transfers", ["ledger_id", "pk"], unique=False)
    op.create_index(
        op.f("ix_transfers_ledger_id_status_pk"), "transfers", ["ledger_id", "status", "pk"], unique=False
    )
    op.create_table(
        "webhooks",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("ledger_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=False),
        sa.Column("max_per_second", sa.Integer(), nullable=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("next_slot_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("deleted_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(["ledger_id"], ["ledgers.id"], name=op.f("fk_webhooks_ledger_id_ledgers")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_webhooks")),
        sa.UniqueConstraint("id", name=op.f("uq_webhooks_id")),
        sqlite_strict=True,
    )
    op.create_index(op.f("ix_webhooks_ledger_id_pk"), "webhooks", ["ledger_id", "pk"], unique=False)
    op.create_table(
        "deliveries",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("webhook_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("delivered_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'retrying', 'delivered', 'dead')", name=op.f("ck_deliveries_status")
        ),
        sa.ForeignKeyConstraint(["event_pk"], ["events.pk"], name=op.f("fk_deliveries_event_pk_events")),
        sa.ForeignKeyConstraint(
            ["webhook_pk"], ["webhooks.pk"], name=op.f("fk_deliveries_webhook_pk_webhooks")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("id", name=op.f("uq_deliveries_id")),
        sa.UniqueConstraint("webhook_pk", "event_pk", name=op.f("uq_deliveries_webhook_pk_event_pk")),
        sqlite_strict=True,
    )
    op.create_index(
        op.f("ix_deliveries_webhook_pk_status_pk"), "deliveries", ["webhook_pk", "status", "pk"], unique=False
    )
    op.create_table(
        "entries",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("account_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("transfer_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("posted_after", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "pending_debits_after", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "pending_credits_after", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("account_version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("direction IN ('debit', 'credit')", name=op.f("ck_entries_direction")),
        sa.CheckConstraint("kind IN ('posting', 'hold', 'release')", name=op.f("ck_entries_kind")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_entries_amount")),
        sa.ForeignKeyConstraint(["account_pk"], ["accounts.pk"], name=op.f("fk_entries_account_pk_accounts")),
        sa.ForeignKeyConstraint(
            ["transfer_pk"], ["transfers.pk"], name=op.f("fk_entries_transfer_pk_transfers")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_entries")),
        sqlite_strict=True,
    )
    op.create_index(
        op.f("ix_entries_account_pk_created_at_pk"),
        "entries",
        ["account_pk", "created_at", "pk"],
        unique=False,
    )
    op.create_index(
        op.f("ix_entries_account_pk_kind_pk"), "entries", ["account_pk", "kind", "pk"], unique=False
    )
    op.create_table(
        "holds",
        sa.Column("transfer_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("expires_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint("direction IN ('debit', 'credit')", name=op.f("ck_holds_direction")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_holds_amount")),
        sa.ForeignKeyConstraint(["account_pk"], ["accounts.pk"], name=op.f("fk_holds_account_pk_accounts")),
        sa.ForeignKeyConstraint(
            ["transfer_pk"], ["transfers.pk"], name=op.f("fk_holds_transfer_pk_transfers")
        ),
        sa.PrimaryKeyConstraint("transfer_pk", "account_pk", name=op.f("pk_holds")),
        sqlite_strict=True,
    )
    op.create_index(
        op.f("ix_holds_account_pk_expires_at"), "holds", ["account_pk", "expires_at"], unique=False
    )
    op.create_index(op.f("ix_holds_expires_at"), "holds", ["expires_at"], unique=False)
    op.create_table(
        "key_usage",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("requests", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_key_usage_key_id_api_keys")),
        sa.PrimaryKeyConstraint("key_id", "day", name=op.f("pk_key_usage")),
        sqlite_strict=True,
    )
    op.create_table(
        "transfer_legs",
        sa.Column("transfer_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("account_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("direction IN ('debit', 'credit')", name=op.f("ck_transfer_legs_direction")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_transfer_legs_amount")),
        sa.ForeignKeyConstraint(
            ["account_pk"], ["accounts.pk"], name=op.f("fk_transfer_legs_account_pk_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["transfer_pk"], ["transfers.pk"], name=op.f("fk_transfer_legs_transfer_pk_transfers")
        ),
        sa.PrimaryKeyConstraint("transfer_pk", "position", name=op.f("pk_transfer_legs")),
        sqlite_strict=True,
    )
    op.create_index(
        op.f("ix_transfer_legs_account_pk_transfer_pk"),
        "transfer_legs",
        ["account_pk", "transfer_pk"],
        unique=False,
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("delivery_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_pk"], ["deliveries.pk"], name=op.f("fk_delivery_attempts_delivery_pk_deliveries")
        ),
        sa.PrimaryKeyConstraint("delivery_pk", "attempt", name=op.f("pk_delivery_attempts")),
        sqlite_strict=True,
    )


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_index(op.f("ix_transfer_legs_account_pk_transfer_pk"), table_name="transfer_legs")
    op.drop_table("transfer_legs")
    op.drop_table("key_usage")
    op.drop_index(op.f("ix_holds_expires_at"), table_name="holds")
    op.drop_index(op.f("ix_holds_account_pk_expires_at"), table_name="holds")
    op.drop_table("holds")
    op.drop_index(op.f("ix_entries_account_pk_kind_pk"), table_name="entries")
    op.drop_index(op.f("ix_entries_account_pk_created_at_pk"), table_name="entries")
    op.drop_table("entries")
    op.drop_index(op.f("ix_deliveries_webhook_pk_status_pk"), table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index(op.f("ix_webhooks_ledger_id_pk"), table_name="webhooks")
    op.drop_table("webhooks")
    op.drop_index(op.f("ix_transfers_ledger_id_status_pk"), table_name="transfers")
    op.drop_index(op.f("ix_transfers_ledger_id_pk"), table_name="transfers")
    op.drop_table("transfers")
    op.drop_index(op.f("ix_transfer_batches_ledger_id_pk"), table_name="transfer_batches")
    op.drop_table("transfer_batches")
    op.drop_index(op.f("ix_events_xid_pk"), table_name="events")
    op.drop_index(op.f("ix_events_ledger_id_xid_pk"), table_name="events")
    op.drop_index(op.f("ix_events_ledger_id_pk"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_api_keys_ledger_id_pk"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_accounts_ledger_id_status_pk"), table_name="accounts")
    op.drop_index(op.f("ix_accounts_ledger_id_pk"), table_name="accounts")
    op.drop_index(op.f("ix_accounts_ledger_id_currency_status_pk"), table_name="accounts")
    op.drop_table("accounts")
    op.drop_table("ledgers")
    op.drop_index(op.f("ix_jobs_queue_status_run_at"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("instance")
    op.drop_table("inbox")
    op.drop_index(op.f("ix_idempotency_keys_keep_until"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("feed_positions")
