"""The revisions build exactly the declared schema, and every one of them can be undone and redone.

- Upgrading an empty database one revision at a time, with Alembic itself, gives the schema of
  ``tables.metadata``: autogenerate finds no difference, and the inspector finds the same tables,
  columns, indexes, constraints (by name), STRICT tables and triggers as the shortcut
  (``create_all`` and every head recorded) gives a new database.
- Walking back down one revision at a time, each step leaves the schema the way up had at the same
  revisions; down to nothing, and back up to the heads again.
"""

from __future__ import annotations

from sqlalchemy import Connection

from tally.store import migrations, tables
from tally.store.schema import BASELINE, found_schema, revisions
from tests.migrations.conftest import NewDatabase
from tests.migrations.schemas import (
    Snapshot,
    alembic_step,
    applied,
    every_revision,
    let_contract_run,
    metadata_differences,
    on_connection,
    snapshot,
)


def _upgrade_one_at_a_time(conn: Connection) -> dict[frozenset[str], Snapshot]:
    """Every revision in turn; the schema after each, by the revisions ``alembic_version`` holds."""
    known = revisions()
    seen: dict[frozenset[str], Snapshot] = {frozenset(): snapshot(conn)}
    for revision in every_revision():
        if known.branch_of(revision) == "contract":
            let_contract_run(conn)
            conn.commit()
        alembic_step(conn, "upgrade", revision)
        seen[frozenset(applied(conn))] = snapshot(conn)
    return seen


async def test_every_revision_from_an_empty_database_gives_the_declared_schema(
    new_database: NewDatabase,
) -> None:
    stepwise, shortcut = new_database(), new_database()

    def upgrade_and_compare(conn: Connection) -> Snapshot:
        _upgrade_one_at_a_time(conn)
        assert metadata_differences(conn) == []
        return snapshot(conn)

    reached = await on_connection(stepwise, upgrade_and_compare)
    await migrations.upgrade(shortcut)  # an empty database: create_all, every head recorded
    created = await on_connection(shortcut, snapshot)
    assert set(tables.metadata.tables) <= set(reached)
    assert reached == created
    assert await on_connection(shortcut, applied) == await on_connection(stepwise, applied)


async def test_every_revision_downgrades_and_upgrades_again(database_url: str) -> None:
    known = revisions()

    def walk(conn: Connection) -> None:
        way_up = _upgrade_one_at_a_time(conn)
        top = snapshot(conn)
        while applied(conn):
            found = found_schema(conn)
            conn.commit()
            at_baseline = known.ancestry(found.applied) == {BASELINE}
            alembic_step(conn, "downgrade", "base" if at_baseline else migrations.one_step_back(found, known))
            here = frozenset(applied(conn))
            assert snapshot(conn) == way_up[here], f"after undoing down to {sorted(here)}"
        assert snapshot(conn) == way_up[frozenset()]
        again = _upgrade_one_at_a_time(conn)
        assert snapshot(conn) == top
        assert again == way_up

    await on_connection(database_url, walk)
