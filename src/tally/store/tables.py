"""The schema: SQLAlchemy Core tables shared by SQLite and PostgreSQL.

See ``docs/data-model.md`` for the entities, the access patterns and the index serving each one.
Conventions (ADR 0006): every table has an integer surrogate ``pk`` that orders rows by insertion and
fixes the lock order; public ids are text, unique per ledger; money and times are 64-bit integers
(minor units; microseconds since the Unix epoch, UTC); JSON is stored as text. On SQLite every table
is STRICT, so a wrong type is an error, never a silent conversion.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    event,
)

from tally.store import audit_guard

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# INTEGER on SQLite (the rowid alias when it is the primary key), BIGINT on PostgreSQL.
Int64 = BigInteger().with_variant(Integer(), "sqlite")


def _pk() -> Column[int]:
    return Column("pk", Int64, primary_key=True, autoincrement=True)


instance = Table(
    "instance",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", LargeBinary, nullable=False),
    sqlite_strict=True,
)

ledgers = Table(
    "ledgers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", Int64, nullable=False),
    sqlite_strict=True,
)

api_keys = Table(
    "api_keys",
    metadata,
    _pk(),
    Column("id", Text, nullable=False, unique=True),
    Column("ledger_id", Text, ForeignKey("ledgers.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("scopes", Text, nullable=False),  # comma-separated scope names
    Column("secret_hash", LargeBinary, nullable=False, unique=True),
    Column("created_at", Int64, nullable=False),
    Column("revoked_at", Int64),
    Column("last_used_at", Int64),
    Column("expires_at", Int64),  # refused from this moment on; set by rotation (ADR 0036)
    Index(None, "ledger_id", "pk"),
    sqlite_strict=True,
)

# Requests per key and UTC day, added to by the write-behind flush of key usage (ADR 0028).
key_usage = Table(
    "key_usage",
    metadata,
    Column("key_id", Text, ForeignKey("api_keys.id"), primary_key=True),
    Column("day", Text, primary_key=True),  # YYYY-MM-DD
    Column("requests", Int64, nullable=False),
    sqlite_strict=True,
)

accounts = Table(
    "accounts",
    metadata,
    _pk(),
    Column("ledger_id", Text, ForeignKey("ledgers.id"), nullable=False),
    Column("id", Text, nullable=False),
    Column("name", Text),
    Column("currency", Text, nullable=False),
    Column("normal_balance", Text, nullable=False),
    Column("min_balance", Int64),
    Column("max_balance", Int64),
    Column("status", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("request_hash", LargeBinary),
    Column("created_at", Int64, nullable=False),
    Column("updated_at", Int64, nullable=False),  # the last change of the attributes above
    UniqueConstraint("ledger_id", "id"),
    CheckConstraint("normal_balance IN ('credit', 'debit')", name="normal_balance"),
    CheckConstraint("status IN ('open', 'frozen', 'closed')", name="status"),
    Index(None, "ledger_id", "pk"),
    Index(None, "ledger_id", "currency", "status", "pk"),
    Index(None, "ledger_id", "status", "pk"),
    sqlite_strict=True,
)

# An account's balances, apart from its attributes (ADR 0034): every posting rewrites this narrow
# row, not the account's name, metadata and ids. One row per account, written with the account.
account_balances = Table(
    "account_balances",
    metadata,
    Column("account_pk", Int64, ForeignKey("accounts.pk"), primary_key=True, autoincrement=False),
    Column("posted", Int64, nullable=False),
    Column("pending_debits", Int64, nullable=False),
    Column("pending_credits", Int64, nullable=False),
    Column("version", Int64, nullable=False),
    Column("updated_at", Int64, nullable=False),  # the last change of the balances
    CheckConstraint("pending_debits >= 0 AND pending_credits >= 0", name="pending"),
    sqlite_strict=True,
)

transfers = Table(
    "transfers",
    metadata,
    _pk(),
    Column("ledger_id", Text, ForeignKey("ledgers.id"), nullable=False),
    Column("id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("description", Text),
    Column("metadata", Text, nullable=False),
    Column("reverses_pk", Int64, ForeignKey("transfers.pk")),
    Column("reversed_amount", Int64, nullable=False),
    Column("held_amount", Int64),
    Column("expires_at", Int64),
    Column("request_hash", LargeBinary),
    Column("created_at", Int64, nullable=False),
    Column("posted_at", Int64),
    UniqueConstraint("ledger_id", "id"),
    CheckConstraint("status IN ('posted', 'pending', 'voided', 'expired')", name="status"),
    Index(None, "ledger_id", "pk"),
    Index(None, "ledger_id", "status", "pk"),
    sqlite_strict=True,
)

transfer_legs = Table(
    "transfer_legs",
    metadata,
    Column("transfer_pk", Int64, ForeignKey("transfers.pk"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("account_pk", Int64, ForeignKey("accounts.pk"), nullable=False),
    Column("direction", Text, nullable=False),
    Column("amount", Int64, nullable=False),
    CheckConstraint("direction IN ('debit', 'credit')", name="direction"),
    CheckConstraint("amount > 0", name="amount"),
    Index(None, "account_pk", "transfer_pk"),
    sqlite_strict=True,
)

entries = Table(
    "entries",
    metadata,
    _pk(),
    Column("account_pk", Int64, ForeignKey("accounts.pk"), nullable=False),
    Column("transfer_pk", Int64, ForeignKey("transfers.pk"), nullable=False),
    Column("kind", Text, nullable=False),  # posting | hold | release (ADR 0014)
    Column("direction", Text, nullable=False),
    Column("amount", Int64, nullable=False),
    Column("posted_after", Int64, nullable=False),
    Column("pending_debits_after", Int64, nullable=False),
    Column("pending_credits_after", Int64, nullable=False),
    Column("account_version", Int64, nullable=False),
    Column("created_at", Int64, nullable=False),
    CheckConstraint("kind IN ('posting', 'hold', 'release')", name="kind"),
    CheckConstraint("direction IN ('debit', 'credit')", name="direction"),
    CheckConstraint("amount > 0", name="amount"),
    Index(None, "account_pk", "kind", "pk"),
    Index(None, "account_pk", "created_at", "pk"),
    Index(None, "created_at", "account_pk"),  # the accounts with entries on a day (statements job)
    sqlite_strict=True,
)

# The open holds, one row per leg: a working set (rows go when the hold resolves; the history is in
# entries and transfers). It answers "which holds on these accounts are due" for every write and
# read of an account with pending amounts, and "which holds are due" for the sweeper.
holds = Table(
    "holds",
    metadata,
    Column("transfer_pk", Int64, ForeignKey("transfers.pk"), primary_key=True),
    Column("account_pk", Int64, ForeignKey("accounts.pk"), primary_key=True),
    Column("direction", Text, nullable=False),
    Column("amount", Int64, nullable=False),
    Column("expires_at", Int64),
    CheckConstraint("direction IN ('debit', 'credit')", name="direction"),
    CheckConstraint("amount > 0", name="amount"),
    Index(None, "account_pk", "expires_at"),
    Index(None, "expires_at"),
    sqlite_strict=True,
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The key's scope: a ledger id, or "" for the root key's requests.
    Column("ledger_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", Int64, nullable=False),
    Column("keep_until", Int64, nullable=False),
    Index(None, "keep_until"),
    sqlite_strict=True,
)

# The outbox. The feed orders events by (xid, pk): xid is the writing transaction's id on PostgreSQL
# (0 on SQLite, where one writer commits in pk order), and a poll only serves events of transactions
# older than every transaction still running, so no event can appear behind a consumer's cursor
# (ADR 0024).
events = Table(
    "events",
    metadata,
    _pk(),
    Column("id", Text, nullable=False, unique=True),
    Column("ledger_id", Text, ForeignKey("ledgers.id"), nullable=False),
    Column("type", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("request_id", Text),
    Column("created_at", Int64, nullable=False),
    Column("xid", Int64, nullable=False),
    Index(None, "ledger_id", "pk"),
    Index(None, "ledger_id", "xid", "pk"),
    Index(None, "xid", "pk"),
    sqlite_strict=True,
)

# The durable job queue (ADR 0023). A job is claimable when its status is ready or running and its
# run_at has come: a claim sets running and moves run_at to the lease's end, so an expired lease is
# claimable again with no separate rescue. ``attempts`` counts claims and fences every outcome.
jobs = Table(
    "jobs",
    metadata,
    _pk(),
    Column("queue", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", Text, nullable=False),  # ready | running | done | dead
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("run_at", Int64, nullable=False),
    Column("leased_by", Text),
    Column("last_error", Text),
    Column("request_id", Text),
    Column("dedupe_key", Text),
    Column("created_at", Int64, nullable=False),
    Column("updated_at", Int64, nullable=False),
    UniqueConstraint("queue", "dedupe_key"),
    CheckConstraint("status IN ('ready', 'running', 'done', 'dead')", name="status"),
    Index(None, "queue", "status", "run_at"),
    sqlite_strict=True,
)

# Batch job runs (ADR 0032): one row per (job, period), so each period of a job is claimed once. A
# step writes its checkpoint and ``done`` in the transaction of its effect; ``attempts`` counts claims
# and takeovers and fences every step; a running run whose ``lease_until`` passed may be taken over.
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", Text, primary_key=True),
    Column("period", Text, primary_key=True),
    Column("status", Text, nullable=False),  # running | finished
    Column("checkpoint", Text),  # JSON: where the next step starts; null before the first step
    Column("result", Text),  # JSON: the last step's state, once finished
    Column("done", Int64, nullable=False),
    Column("total", Int64),  # the units expected when first claimed; null when unknown
    Column("owner", Text, nullable=False),  # host:pid:random of the runner holding the claim
    Column("lease_until", Int64, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("started_at", Int64, nullable=False),
    Column("updated_at", Int64, nullable=False),
    Column("finished_at", Int64),
    CheckConstraint("status IN ('running', 'finished')", name="status"),
    sqlite_strict=True,
)

# Idempotent consumers: a message a consumer has handled, written in the transaction of its effect.
inbox = Table(
    "inbox",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("message_id", Text, primary_key=True),
    Column("created_at", Int64, nullable=False),
    sqlite_strict=True,
)

# Where a feed consumer inside Tally (the webhook dispatcher) has read up to.
feed_positions = Table(
    "feed_positions",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("xid", Int64, nullable=False),
    Column("pk", Int64, nullable=False),
    sqlite_strict=True,
)

webhooks = Table(
    "webhooks",
    metadata,
    _pk(),
    Column("id", Text, nullable=False, unique=True),
    Column("ledger_id", Text, ForeignKey("ledgers.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),  # comma-separated; "*" for every type
    Column("max_per_second", Integer),
    Column("secret", LargeBinary, nullable=False),  # encrypted at rest (ADR 0025)
    Column("next_slot_at", Int64, nullable=False),  # the rate limit's schedule (GCRA)
    Column("created_at", Int64, nullable=False),
    Column("deleted_at", Int64),
    Index(None, "ledger_id", "pk"),
    sqlite_strict=True,
)

deliveries = Table(
    "deliveries",
    metadata,
    _pk(),
    Column("id", Text, nullable=False, unique=True),
    Column("webhook_pk", Int64, ForeignKey("webhooks.pk"), nullable=False),
    Column("event_pk", Int64, ForeignKey("events.pk"), nullable=False),
    Column("status", Text, nullable=False),  # pending | retrying | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", Int64, nullable=False),
    Column("updated_at", Int64, nullable=False),
    Column("delivered_at", Int64),
    UniqueConstraint("webhook_pk", "event_pk"),
    CheckConstraint("status IN ('pending', 'retrying', 'delivered', 'dead')", name="status"),
    Index(None, "webhook_pk", "status", "pk"),
    sqlite_strict=True,
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("delivery_pk", Int64, ForeignKey("deliveries.pk"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("at", Int64, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
    sqlite_strict=True,
)

transfer_batches = Table(
    "transfer_batches",
    metadata,
    _pk(),
    Column("id", Text, nullable=False, unique=True),
    Column("ledger_id", Text, ForeignKey("ledgers.id"), nullable=False),
    Column("status", Text, nullable=False),  # queued | processing | completed | failed
    Column("atomic", Integer, nullable=False),
    Column("request", Text, nullable=False),  # the submitted transfers, as JSON
    Column("results", Text),
    Column("request_id", Text),
    Column("created_at", Int64, nullable=False),
    Column("completed_at", Int64),
    CheckConstraint("status IN ('queued', 'processing', 'completed', 'failed')", name="status"),
    Index(None, "ledger_id", "pk"),
    sqlite_strict=True,
)

# One account's postings on one UTC day, written by the ``statements`` batch job (ADR 0033): the
# posted balance at the day's start and end, the sums of its debits and credits, and their number.
# Written once per (account, day): a second insert is an error, never an update.
statements = Table(
    "statements",
    metadata,
    Column("account_pk", Int64, ForeignKey("accounts.pk"), primary_key=True),
    Column("day", Text, primary_key=True),  # YYYY-MM-DD, UTC
    Column("opening_balance", Int64, nullable=False),
    Column("closing_balance", Int64, nullable=False),
    Column("debits", Int64, nullable=False),
    Column("credits", Int64, nullable=False),
    Column("postings", Int64, nullable=False),
    CheckConstraint("debits >= 0 AND credits >= 0 AND postings > 0", name="sums"),
    sqlite_strict=True,
)

# Administrative acts, one row each, written in the transaction of the act (ADR 0036). Append-only:
# triggers refuse every UPDATE and DELETE (``store.audit_guard``), created with the table.
audit_events = Table(
    "audit_events",
    metadata,
    _pk(),
    Column("id", Text, nullable=False, unique=True),  # aud_<uuid7>
    Column("ledger_id", Text, ForeignKey("ledgers.id"), nullable=False),
    Column("action", Text, nullable=False),  # e.g. key.rotated
    Column("target_type", Text, nullable=False),
    Column("target_id", Text, nullable=False),
    Column("actor_key_id", Text, nullable=False),  # "root" for the root key
    Column("request_id", Text),
    Column("at", Int64, nullable=False),
    Column("details", Text, nullable=False),  # JSON; never a secret
    Index(None, "ledger_id", "pk"),
    sqlite_strict=True,
)


@event.listens_for(audit_events, "after_create")
def _refuse_changes_to_audit_events(_table: Table, connection: Connection, **_: object) -> None:
    for statement in audit_guard.create_statements(connection.dialect.name):
        connection.exec_driver_sql(statement)
