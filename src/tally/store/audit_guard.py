"""The triggers that make ``audit_events`` append-only, in the database itself (ADR 0036).

An audit trail that the application promises not to edit proves little: the database refuses every
``UPDATE`` and ``DELETE`` of an audit event (and on PostgreSQL a ``TRUNCATE``), whoever sends it.
The same statements serve the revision that adds the table (``0004_audit_events``) and the schema
created at once for an empty database (``tables.audit_events``' ``after_create`` hook), so both ways
give the same triggers. ``DROP TABLE`` is not refused: downgrading the revision removes the trail.
"""

from __future__ import annotations

REFUSAL = "audit events are append-only"

_POSTGRES_CREATE = (
    f"""CREATE FUNCTION tally_audit_events_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'restrict_violation';
    END $$""",
    """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION tally_audit_events_refuse()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION tally_audit_events_refuse()""",
)
_POSTGRES_DROP = (
    "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
    "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
    "DROP FUNCTION IF EXISTS tally_audit_events_refuse()",
)
_SQLITE_CREATE = tuple(
    f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events"
    f" BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
    for verb in ("UPDATE", "DELETE")
)
_SQLITE_DROP = tuple(f"DROP TRIGGER IF EXISTS audit_events_no_{verb}" for verb in ("update", "delete"))


def create_statements(dialect: str) -> tuple[str, ...]:
    """The statements that create the triggers on ``dialect`` (``postgresql`` or ``sqlite``)."""
    return _POSTGRES_CREATE if dialect == "postgresql" else _SQLITE_CREATE


def drop_statements(dialect: str) -> tuple[str, ...]:
    """The statements that drop them (before the table goes; harmless when they are absent)."""
    return _POSTGRES_DROP if dialect == "postgresql" else _SQLITE_DROP
