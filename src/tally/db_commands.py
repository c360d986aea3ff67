"""``tally db upgrade | contract | downgrade [TARGET] | status``: the schema's command line (ADR 0031).

Each command works on ``--database-url`` (default ``TALLY_DATABASE_URL``) and exits with status 0
when it did what it was asked, 1 when it refused or could not (the reason on standard error, in
one paragraph, without a traceback). ``status`` exits 1 when this Tally cannot run against the
database, so a deploy script can gate on it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from alembic.util import CommandError
from sqlalchemy.engine import make_url

from tally.config import Settings
from tally.migrations.operations import MigrationRefused
from tally.observability.logging import configure_logging
from tally.store import migrations
from tally.store.migration_connection import MigrationBlocked
from tally.store.schema import SchemaMismatch

_REFUSALS = (SchemaMismatch, MigrationBlocked, MigrationRefused, CommandError)


def add_db_commands(commands: Any) -> None:
    """Register ``db`` and its subcommands on the top-level subparsers of ``tally``."""
    db = commands.add_parser("db", help="migrate the database schema: upgrade, contract, downgrade, status")
    actions = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("upgrade", "apply the expand branch (additive; run before deploying the code that needs it)"),
        ("contract", "apply the contract branch (removals; run once no running code needs what goes)"),
        ("downgrade", "undo the newest applied revision (contract first), or down to TARGET"),
        ("status", "applied and pending revisions per branch; exit 1 if this Tally cannot run on it"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--database-url", help="database URL (TALLY_DATABASE_URL)")
        if name == "downgrade":
            action.add_argument(
                "target", nargs="?", help="expand@-1, contract@-1, a revision id, or base (drops every table)"
            )


def run_db_command(args: argparse.Namespace) -> int:
    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    # Alembic's own INFO lines would repeat what is printed below; lock-wait retries are warnings.
    configure_logging(settings.log_format, "WARNING")
    url = settings.database_url
    print(f"database: {make_url(url).render_as_string(hide_password=True)}")
    try:
        if args.db_command == "status":
            return _print_status(asyncio.run(migrations.status(url)))
        timeout = settings.migration_lock_timeout_ms
        if args.db_command == "upgrade":
            asyncio.run(migrations.upgrade(url, lock_timeout_ms=timeout, on_step=_print_step))
        elif args.db_command == "contract":
            asyncio.run(migrations.contract(url, lock_timeout_ms=timeout, on_step=_print_step))
        else:
            asyncio.run(migrations.downgrade(url, args.target, lock_timeout_ms=timeout, on_step=_print_step))
    except _REFUSALS as error:
        print(f"tally db {args.db_command}: {error}", file=sys.stderr)
        return 1
    print("done")
    return 0


def schema_refusal(database_url: str) -> str | None:
    """Why this Tally cannot run against the database, for ``tally serve`` to say before starting.

    None when it can, and when the database cannot be looked at: starting reports that the same
    way it always has, and this look must not make a down database fail differently.
    """
    try:
        verdict = asyncio.run(migrations.status(database_url)).verdict
    except Exception:  # see the docstring: the start that follows reports it
        return None
    return None if verdict.can_run else verdict.reason


def _print_step(step: migrations.Step) -> None:
    print(f"{step.action:<10} {step.revision:<26} {step.doc}", flush=True)


def _print_status(found: migrations.SchemaStatus) -> int:
    print(f"state: {found.state}")
    print(f"{'branch':<9} {'applied':<26} {'head':<26} pending")
    for branch in found.branches:
        pending = ", ".join(branch.pending) or "-"
        print(f"{branch.branch:<9} {branch.applied or '-':<26} {branch.head or '-':<26} {pending}")
    if found.verdict.can_run:
        print("This Tally can run against this database.")
        return 0
    print(found.verdict.reason)
    return 1
