"""What schema a database holds, and the revisions this code is made of (ADR 0031).

The Alembic script directory ships inside the package (``tally/migrations``), so an installed
Tally can migrate its own database. Its revisions form two branches from one root,
``0000_baseline``: ``expand`` (additive) and ``contract`` (removals). A database records the
revisions applied to it in ``alembic_version``: one row per branch head it has reached.

A database is, to this code, one of:

- ``empty``: no Tally table and no recorded revision (a new file, a new PostgreSQL database);
- ``unversioned``: Tally's tables, no recorded revision: made by Tally before migrations
  existed, with the baseline schema if nothing went wrong;
- ``versioned``: at least one recorded revision.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, text

from tally.store import tables

SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"
BASELINE = "0000_baseline"
VERSION_TABLE = "alembic_version"
EXPAND, CONTRACT = "expand", "contract"
_APPLIED = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 - a constant name

State = Literal["empty", "unversioned", "versioned"]


class SchemaMismatch(RuntimeError):
    """This code cannot run against the database's schema; the message says what to do."""


def alembic_config(location: Path = SCRIPTS) -> Config:
    """Alembic's configuration, built in code: no ``alembic.ini`` is shipped or read."""
    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("path_separator", "os")
    versions = location / "versions"
    places = (versions, versions / EXPAND, versions / CONTRACT)
    config.set_main_option("version_locations", os.pathsep.join(str(place) for place in places))
    return config


@dataclass(frozen=True)
class Revisions:
    """The revision graph of one script directory, read once (loading it imports every revision)."""

    script: ScriptDirectory
    order: tuple[str, ...]  # oldest first: a revision after everything it builds on
    parents: Mapping[str, tuple[str, ...]]  # down revisions and dependencies
    docs: Mapping[str, str]  # the first line of each revision's docstring
    expand_heads: tuple[str, ...]
    contract_heads: tuple[str, ...]

    @property
    def heads(self) -> tuple[str, ...]:
        return self.expand_heads + self.contract_heads

    def known(self, revision: str) -> bool:
        return revision in self.parents

    def ancestry(self, revisions: Iterable[str]) -> set[str]:
        """``revisions`` and every revision they build on (down revisions and dependencies)."""
        seen: set[str] = set()
        waiting = [revision for revision in revisions if self.known(revision)]
        while waiting:
            revision = waiting.pop()
            if revision not in seen:
                seen.add(revision)
                waiting += self.parents[revision]
        return seen

    @functools.cached_property
    def contract_side(self) -> frozenset[str]:
        """The revisions only the contract branch holds (the root belongs to both)."""
        return frozenset(self.ancestry(self.contract_heads) - self.ancestry(self.expand_heads))

    def branch_of(self, revision: str) -> str:
        return CONTRACT if revision in self.contract_side else EXPAND

    def sorted(self, revisions: Iterable[str]) -> list[str]:
        return sorted(revisions, key=self.order.index)


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().partition("\n")[0]


@functools.cache
def revisions(location: Path = SCRIPTS) -> Revisions:
    """The revisions under ``location``, loaded once per process: starts must stay fast."""
    script = ScriptDirectory.from_config(alembic_config(location))
    newest_first = list(script.walk_revisions())
    heads = [revision.revision for revision in newest_first if revision.is_head]
    # Alembic carries a branch label from the revision that declares it to its descendants.
    labels = {revision.revision: revision.branch_labels for revision in newest_first}
    return Revisions(
        script=script,
        order=tuple(revision.revision for revision in reversed(newest_first)),
        parents={
            revision.revision: (*_as_tuple(revision.down_revision), *_as_tuple(revision.dependencies))
            for revision in newest_first
        },
        docs={
            revision.revision: (revision.doc or "").strip().partition("\n")[0] for revision in newest_first
        },
        expand_heads=tuple(head for head in heads if CONTRACT not in labels[head]),
        contract_heads=tuple(head for head in heads if CONTRACT in labels[head]),
    )


@dataclass(frozen=True)
class Found:
    """What a look at a database found: its recorded revisions and which Tally tables it holds."""

    applied: tuple[str, ...]
    tally_tables: frozenset[str]

    @property
    def state(self) -> State:
        if self.applied:
            return "versioned"
        return "unversioned" if self.tally_tables else "empty"


def found_schema(conn: Connection) -> Found:
    names = set(inspect(conn).get_table_names())
    applied = tuple(conn.execute(_APPLIED).scalars()) if VERSION_TABLE in names else ()
    return Found(applied, frozenset(names & set(tables.metadata.tables)))


def create_head_schema(conn: Connection, known: Revisions) -> None:
    """Create every table of this code at once and record every head as applied.

    Alembic's documented way to build a new database: the same schema as running every revision
    from the root (the migration tests hold the two equal), in one ``create_all``.
    """
    tables.metadata.create_all(conn)
    MigrationContext.configure(conn).stamp(known.script, "heads")


def stamp_baseline(conn: Connection, known: Revisions) -> None:
    """Record an unversioned database as at the baseline, once it is known to hold it all."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    missing = []
    for table, columns in sorted(baseline_columns(known.script.dir).items()):
        held = {column["name"] for column in inspector.get_columns(table)} if table in present else set()
        missing += [f"{table}.{column}" for column in sorted(columns - held)]
    if missing:
        raise SchemaMismatch(
            "The database was made by a Tally older than the migrations' baseline and lacks "
            f"{', '.join(missing)}: it cannot be migrated. Start with a new database."
        )
    MigrationContext.configure(conn).stamp(known.script, BASELINE)


@functools.cache
def baseline_columns(location: str) -> dict[str, frozenset[str]]:
    """Each baseline table's columns, as the baseline revision itself builds them (in memory)."""
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            config = alembic_config(Path(location))
            config.attributes["connection"] = conn
            command.upgrade(config, BASELINE)
            inspector = inspect(conn)
            return {
                table: frozenset(column["name"] for column in inspector.get_columns(table))
                for table in inspector.get_table_names()
                if table != VERSION_TABLE
            }
    finally:
        engine.dispose()
