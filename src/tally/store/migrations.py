"""Schema migrations: upgrade, contract, downgrade, status, and the check at start (ADR 0031).

Two branches grow from ``0000_baseline``:

- ``expand`` only adds (tables, nullable columns, indexes): safe while the code before it runs.
  ``tally db upgrade`` applies it, before the code that needs it is deployed.
- ``contract`` removes what no running code uses any more. ``tally db contract`` applies it, once
  every process runs code that no longer needs what it removes.

This code declares the newest expand revision it writes to (``REQUIRED_EXPAND``) and knows every
revision up to its heads: it runs against a database that has ``REQUIRED_EXPAND`` and no revision
it does not know (``compatibility``). Both database adapters check that at start
(``ensure_schema``), and create the whole schema on an empty database.

How a migration connection bounds its lock waits: ``store.migration_connection``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationInfo
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from tally.store.migration_connection import (
    DEFAULT_LOCK_TIMEOUT_MS,
    on_migration_connection,
    retrying_lock_waits,
)
from tally.store.schema import (
    BASELINE,
    CONTRACT,
    EXPAND,
    SCRIPTS,
    Found,
    Revisions,
    SchemaMismatch,
    State,
    alembic_config,
    create_head_schema,
    found_schema,
    revisions,
    stamp_baseline,
)

REQUIRED_EXPAND = "0004_audit_events"  # the newest expand revision whose tables this code writes
SCHEMA_LOCK = 0x7461_6C6C_7900  # advisory lock: one process creates or adopts a schema at a time
_log = logging.getLogger("tally.migrations")


@dataclass(frozen=True)
class Verdict:
    can_run: bool
    reason: str  # why not, with the command that fixes it; empty when it can run


@dataclass(frozen=True)
class Step:
    """One thing done to a database's schema, reported as it is done."""

    action: Literal["created", "stamped", "upgraded", "downgraded"]
    revision: str
    doc: str


StepReport = Callable[[Step], None]


def compatibility(
    applied: Collection[str], *, known: Revisions | None = None, required: str = REQUIRED_EXPAND
) -> Verdict:
    """Whether this code can run against a database whose ``alembic_version`` holds ``applied``."""
    known = known or revisions()
    unknown = sorted(revision for revision in applied if not known.known(revision))
    if unknown:
        return Verdict(
            False,
            f"The database was migrated by a newer Tally (revision {', '.join(unknown)}). "
            "Run that version, or downgrade with it first.",
        )
    if required not in known.ancestry(applied):
        at = ", ".join(known.sorted(applied)) or "no revision: made before migrations"
        return Verdict(
            False,
            f"The database schema is older than this Tally needs (at {at}, needs {required}): "
            "run `tally db upgrade`.",
        )
    return Verdict(True, "")


def ensure_schema(conn: Connection) -> None:
    """The adapters' start, inside their transaction: create an empty database's schema, else check it.

    Raises ``SchemaMismatch`` with ``compatibility``'s reason when this code cannot run on it.
    """
    found = found_schema(conn)
    if found.state == "empty":
        create_head_schema(conn, revisions())
        return
    verdict = compatibility(found.applied)
    if not verdict.can_run:
        raise SchemaMismatch(verdict.reason)


async def upgrade(
    url: str | URL,
    *,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    on_step: StepReport | None = None,
    location: Path = SCRIPTS,
) -> None:
    """Apply the expand branch up to its head.

    An empty database gets the whole schema of this code at once (``create_all``, every head
    recorded); one made by Tally before migrations is checked to hold the baseline and recorded
    as at it, then upgraded.
    """
    known = revisions(location)
    await _migrate(url, lock_timeout_ms, known, on_step, _upgrading_to(known.expand_heads))


async def contract(
    url: str | URL,
    *,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    on_step: StepReport | None = None,
    location: Path = SCRIPTS,
) -> None:
    """Apply the contract branch up to its head (and the expand revisions it depends on)."""
    known = revisions(location)
    await _migrate(url, lock_timeout_ms, known, on_step, _upgrading_to(known.contract_heads))


async def downgrade(
    url: str | URL,
    target: str | None = None,
    *,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    on_step: StepReport | None = None,
    location: Path = SCRIPTS,
) -> None:
    """Undo revisions down to ``target`` (Alembic's syntax: ``expand@-1``, a revision id, ``base``).

    Without a target, one step: the newest applied contract revision if there is one, else the
    newest expand revision. The baseline itself is only undone by naming ``base`` (it drops every
    table).
    """
    known = revisions(location)

    def run(config: Config, conn: Connection) -> None:
        chosen = target if target is not None else one_step_back(found_schema(conn), known)
        conn.commit()
        command.downgrade(config, chosen)

    await _migrate(url, lock_timeout_ms, known, on_step, run, adopt=False)


def one_step_back(found: Found, known: Revisions) -> str:
    """The target that undoes exactly the newest applied revision, contract first."""
    if found.state != "versioned":
        raise SchemaMismatch("The database has no recorded revision: there is nothing to downgrade.")
    applied = known.sorted(known.ancestry(found.applied))
    newest = [revision for revision in applied if known.branch_of(revision) == CONTRACT] or applied
    if newest[-1] == BASELINE:
        raise SchemaMismatch(
            "The database is at the baseline. `tally db downgrade base` drops every table; "
            "name that target if that is what you want."
        )
    return f"{newest[-1]}@-1"


@dataclass(frozen=True)
class BranchStatus:
    branch: str
    applied: str | None  # the newest applied revision of the branch (the root counts as expand)
    head: str | None  # the newest revision this code knows
    pending: tuple[str, ...]  # oldest first


@dataclass(frozen=True)
class SchemaStatus:
    state: State
    applied: tuple[str, ...]  # alembic_version's rows
    branches: tuple[BranchStatus, BranchStatus]
    verdict: Verdict


def schema_status(found: Found, known: Revisions) -> SchemaStatus:
    done = known.ancestry(found.applied)
    branches = []
    for branch, heads in ((EXPAND, known.expand_heads), (CONTRACT, known.contract_heads)):
        mine = [revision for revision in known.order if known.branch_of(revision) == branch]
        applied = [revision for revision in mine if revision in done]
        pending = [revision for revision in mine if revision not in done]
        head = known.sorted(heads)[-1] if heads else None  # the newest, when a branch has two
        branches.append(BranchStatus(branch, applied[-1] if applied else None, head, tuple(pending)))
    # An empty database is fine: the adapters create the schema at start.
    verdict = Verdict(True, "") if found.state == "empty" else compatibility(found.applied, known=known)
    return SchemaStatus(found.state, found.applied, (branches[0], branches[1]), verdict)


async def status(url: str | URL, *, location: Path = SCRIPTS) -> SchemaStatus:
    known = revisions(location)

    def look(conn: Connection) -> SchemaStatus:
        try:
            return schema_status(found_schema(conn), known)
        finally:
            conn.rollback()

    return await on_migration_connection(url, look, lock_timeout_ms=DEFAULT_LOCK_TIMEOUT_MS, exclusive=False)


def _upgrading_to(heads: tuple[str, ...]) -> Callable[[Config, Connection], None]:
    def run(config: Config, conn: Connection) -> None:
        for head in heads:
            command.upgrade(config, head)
            # A branch already at its head leaves the transaction of its look open, and Alembic
            # runs the next branch's revisions inside a transaction it finds open without
            # committing them: end it, so each branch (expand has two heads) commits its own.
            conn.commit()

    return run


async def _migrate(
    url: str | URL,
    lock_timeout_ms: int,
    known: Revisions,
    on_step: StepReport | None,
    run: Callable[[Config, Connection], None],
    *,
    adopt: bool = True,
) -> None:
    """Run ``run(config, conn)`` on a migration connection; retry it while locks are not granted."""

    def work(conn: Connection) -> None:
        if adopt:
            _adopt(conn, known, on_step)
        config = alembic_config(Path(known.script.dir))
        config.attributes["connection"] = conn
        config.attributes["on_version_apply"] = _reporter(known, on_step)
        run(config, conn)

    await retrying_lock_waits(
        lambda: on_migration_connection(url, work, lock_timeout_ms=lock_timeout_ms), lock_timeout_ms
    )


def _adopt(conn: Connection, known: Revisions, on_step: StepReport | None) -> None:
    """Bring an empty or unversioned database under migrations; leave no transaction open."""
    if conn.dialect.name == "postgresql":  # a starting Tally may be creating the schema too
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
    found = found_schema(conn)
    if found.state == "empty":
        create_head_schema(conn, known)
        for head in known.heads:
            _report(on_step, Step("created", head, known.docs[head]))
    elif found.state == "unversioned":
        stamp_baseline(conn, known)
        _report(on_step, Step("stamped", BASELINE, known.docs[BASELINE]))
    conn.commit()  # Alembic runs each revision in a transaction of its own, from here


def _reporter(known: Revisions, on_step: StepReport | None) -> Callable[..., None]:
    def on_version_apply(*, step: MigrationInfo, **_: Any) -> None:
        if step.is_stamp:
            return
        revision = step.up_revision_id or ""
        action: Literal["upgraded", "downgraded"] = "upgraded" if step.is_upgrade else "downgraded"
        _report(on_step, Step(action, revision, known.docs.get(revision, "")))

    return on_version_apply


def _report(on_step: StepReport | None, step: Step) -> None:
    _log.info("schema %s %s: %s", step.action, step.revision, step.doc)
    if on_step is not None:
        on_step(step)
