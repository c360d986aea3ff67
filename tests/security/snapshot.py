"""Every row the database holds for one ledger, read straight from its tables.

Which rows belong to a ledger is derived from the schema (``tally.store.tables``), so a new table is
covered without a list to keep: a table with a ``ledger_id`` column is filtered on it; a table
without one belongs to the ledger through a foreign key to a table that does (entries through their
account, deliveries through their webhook, ...). A table reached neither way must be named in
``SHARED`` with the reason it holds nothing of a ledger's own, or the snapshot fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Table

from tally.store.tables import metadata
from tests.support import BACKENDS

# Tables of the whole instance, not of any ledger: their rows change with any ledger's activity.
SHARED = {
    "instance": "the instance's own settings (the root key's hash)",
    "jobs": "the work queue; a ledger's work shows in its own tables (transfer_batches, deliveries)",
    "job_runs": "batch-job runs are per period, over every ledger",
    "inbox": "the message ids consumers handled, over every ledger",
    "feed_positions": "where internal consumers have read the feed of every ledger up to",
}


class UnscopedTable(AssertionError):
    """A table the snapshot cannot tie to a ledger and that ``SHARED`` does not name."""


def _condition(table: Table, seen: frozenset[str] = frozenset()) -> str | None:
    """A SQL condition (one ``?``: the ledger id) selecting ``table``'s rows of one ledger."""
    if table.name == "ledgers":
        return "id = ?"
    if "ledger_id" in table.c:
        return "ledger_id = ?"
    for key in sorted(table.foreign_keys, key=lambda k: k.parent.name):
        parent = key.column.table
        if parent.name in seen or parent is table:
            continue
        inner = _condition(parent, seen | {table.name})
        if inner is not None:
            # Names from the schema, never from input.
            return f"{key.parent.name} IN (SELECT {key.column.name} FROM {parent.name} WHERE {inner})"  # noqa: S608
    return None


def ledger_queries(shared: Mapping[str, str] = SHARED) -> dict[str, str]:
    """A query per table reading one ledger's rows; ``UnscopedTable`` for a table it cannot place
    that ``shared`` does not name."""
    queries: dict[str, str] = {}
    unplaced: list[str] = []
    for table in metadata.sorted_tables:
        condition = _condition(table)
        if condition is None:
            if table.name not in shared:
                unplaced.append(table.name)
            continue
        queries[table.name] = f"SELECT * FROM {table.name} WHERE {condition}"  # noqa: S608
    if unplaced:
        raise UnscopedTable(f"tables tied to no ledger: {unplaced}; add a ledger_id or name them in SHARED")
    return queries


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def ledger_rows(directory: Path, ledger_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``ledger_id`` in the test database of ``directory``, per table, in a stable order."""
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    for name, query in ledger_queries().items():
        rows = [tuple(_plain(v) for v in row) for row in BACKENDS.rows(directory, query, (ledger_id,))]
        snapshot[name] = sorted(rows, key=repr)
    return snapshot
