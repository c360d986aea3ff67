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
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)

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
    Index(None, "ledger_id", "pk"),
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
    Column("posted", Int64, nullable=False),
    Column("pending_debits", Int64, nullable=False),
    Column("pending_credits", Int64, nullable=False),
    Column("version", Int64, nullable=False),
    Column("request_hash", LargeBinary),
    Column("created_at", Int64, nullable=False),
    Column("updated_at", Int64, nullable=False),
    UniqueConstraint("ledger_id", "id"),
    CheckConstraint("normal_balance IN ('credit', 'debit')", name="normal_balance"),
    CheckConstraint("status IN ('open', 'frozen', 'closed')", name="status"),
    CheckConstraint("pending_debits >= 0 AND pending_credits >= 0", name="pending"),
    Index(None, "ledger_id", "pk"),
    Index(None, "ledger_id", "currency", "status", "pk"),
    Index(None, "ledger_id", "status", "pk"),
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
    Index(None, "ledger_id", "pk"),
    sqlite_strict=True,
)
