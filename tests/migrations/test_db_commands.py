"""``tally db`` and the check at start: what this Tally does with a database of another age.

- A database made by Tally before migrations is recognised as the baseline, recorded as such and
  upgraded by ``tally db upgrade``, its rows kept; one lacking baseline columns is refused.
- A database older than ``REQUIRED_EXPAND``, or migrated by a newer Tally (a revision this code does
  not know), is refused by ``tally db status`` (exit 1) and by the adapters' start, with a message
  naming what to run; ``tally serve`` says it in one line on standard error, no traceback.
- ``tally db upgrade`` brings both heads of the expand branch, whichever one was applied first.
- ``tally db downgrade`` undoes one revision, contract first, and will not drop the baseline
  unless told ``base``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from tally.cli import main
from tally.store import migrations
from tally.store.postgres import PostgresDatabase
from tally.store.schema import BASELINE, SchemaMismatch, revisions
from tally.store.sqlite import SqliteDatabase
from tests.migrations.schemas import alembic_step, applied, on_connection

FUTURE = "9999_from_a_newer_tally"
_PRE_MIGRATION_LEDGER = (
    "INSERT INTO ledgers (id, name, created_at) VALUES ('led_old', 'made before migrations', 1)"
)


def _at(url: str, revision: str) -> None:
    """Bring an empty database to ``revision`` with Alembic alone."""
    asyncio.run(on_connection(url, lambda conn: alembic_step(conn, "upgrade", revision)))


def _older_than_required() -> str:
    return revisions().parents[migrations.REQUIRED_EXPAND][0]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _ledger_ids(conn: Connection) -> list[str]:
    return list(conn.execute(text("SELECT id FROM ledgers")).scalars())


def _execute(statement: str, **values: str) -> Callable[[Connection], object]:
    return lambda conn: conn.execute(text(statement), values)


async def _start(url: str) -> None:
    database = SqliteDatabase(url) if url.startswith("sqlite") else PostgresDatabase(url)
    try:
        await database.start()
    finally:
        await database.stop()


def test_a_database_made_before_migrations_is_stamped_and_upgraded_with_its_rows(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def made_before_migrations(conn: Connection) -> None:
        alembic_step(conn, "upgrade", BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text(_PRE_MIGRATION_LEDGER))

    asyncio.run(on_connection(database_url, made_before_migrations))

    status, out, _ = _run(capsys, "db", "upgrade", "--database-url", database_url)

    assert status == 0
    assert f"stamped    {BASELINE}" in out
    assert "upgraded   0001_job_runs" in out
    assert asyncio.run(on_connection(database_url, _ledger_ids)) == ["led_old"]
    assert asyncio.run(on_connection(database_url, applied)) == set(revisions().expand_heads)
    assert _run(capsys, "db", "status", "--database-url", database_url)[0] == 0


@pytest.mark.parametrize("reached", ["0003_account_balances", "0004_audit_events"])
def test_upgrade_brings_every_expand_head_whichever_one_the_database_reached_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reached: str
) -> None:
    url = f"sqlite:///{tmp_path / 'tally.db'}"
    _at(url, reached)  # the expand branch has two heads: one applied, the other not yet

    status, out, _ = _run(capsys, "db", "upgrade", "--database-url", url)

    assert status == 0
    [other] = set(revisions().expand_heads) - {reached}
    assert f"upgraded   {other}" in out
    assert asyncio.run(on_connection(url, applied)) == set(revisions().expand_heads)
    newest = revisions().sorted(revisions().expand_heads)[-1]  # status names the newest head
    assert f"expand    {newest:<26} {newest:<26} -" in _run(capsys, "db", "status", "--database-url", url)[1]


def test_a_database_older_than_the_baseline_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ancient.db'}"
    asyncio.run(on_connection(url, _execute("CREATE TABLE ledgers (id TEXT PRIMARY KEY)")))

    status, _, err = _run(capsys, "db", "upgrade", "--database-url", url)

    assert status == 1
    assert "older than the migrations' baseline and lacks" in err
    assert "ledgers.created_at" in err
    assert "Traceback" not in err


async def test_the_adapters_refuse_a_database_older_than_this_tally_needs(database_url: str) -> None:
    older = _older_than_required()
    await on_connection(database_url, lambda conn: alembic_step(conn, "upgrade", older))

    with pytest.raises(SchemaMismatch) as refused:
        await _start(database_url)

    assert str(refused.value) == (
        f"The database schema is older than this Tally needs (at {older}, needs "
        f"{migrations.REQUIRED_EXPAND}): run `tally db upgrade`."
    )
    await migrations.upgrade(database_url)
    await _start(database_url)  # and once upgraded, it starts


async def test_the_adapters_refuse_a_database_migrated_by_a_newer_tally(database_url: str) -> None:
    await migrations.upgrade(database_url)
    # One row per head (the expand branch has two): all of them give way to the newer revision.
    await on_connection(database_url, _execute("DELETE FROM alembic_version"))
    await on_connection(database_url, _execute("INSERT INTO alembic_version VALUES (:v)", v=FUTURE))

    with pytest.raises(SchemaMismatch) as refused:
        await _start(database_url)

    assert str(refused.value) == (
        f"The database was migrated by a newer Tally (revision {FUTURE}). "
        "Run that version, or downgrade with it first."
    )


def test_status_shows_each_branch_and_exits_1_when_this_tally_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'tally.db'}"
    older = _older_than_required()
    _at(url, older)

    status, out, _ = _run(capsys, "db", "status", "--database-url", url)

    assert status == 1
    assert f"expand    {older}" in out
    assert migrations.REQUIRED_EXPAND in out.splitlines()[3]  # pending on the expand line
    assert "run `tally db upgrade`" in out

    assert _run(capsys, "db", "upgrade", "--database-url", url)[0] == 0
    status, out, _ = _run(capsys, "db", "status", "--database-url", url)
    assert status == 0
    assert "This Tally can run against this database." in out

    asyncio.run(on_connection(url, _execute("INSERT INTO alembic_version VALUES (:v)", v=FUTURE)))
    status, out, _ = _run(capsys, "db", "status", "--database-url", url)
    assert status == 1
    assert f"migrated by a newer Tally (revision {FUTURE})" in out


def test_downgrade_undoes_one_revision_and_keeps_the_baseline_unless_told_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'tally.db'}"
    _at(url, BASELINE)

    status, _, err = _run(capsys, "db", "downgrade", "--database-url", url)
    assert status == 1
    assert "`tally db downgrade base` drops every table" in err

    assert _run(capsys, "db", "upgrade", "--database-url", url)[0] == 0
    newest = revisions().expand_heads[0]
    status, out, _ = _run(capsys, "db", "downgrade", "--database-url", url)
    assert status == 0
    assert f"downgraded {newest}" in out
    known = revisions()  # with two expand heads, the other one stays
    left = known.ancestry(asyncio.run(on_connection(url, applied)))
    assert left == known.ancestry(known.expand_heads) - {newest}

    assert _run(capsys, "db", "downgrade", "base", "--database-url", url)[0] == 0
    assert asyncio.run(on_connection(url, applied)) == set()


@pytest.mark.server
def test_serve_refuses_an_old_database_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tally.db'}"
    _at(url, _older_than_required())
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}, "TALLY_DATABASE_URL": url}

    done = subprocess.run(
        [str(Path(sys.executable).parent / "tally"), "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "tally serve: The database schema is older than this Tally needs "
        f"(at {_older_than_required()}, needs {migrations.REQUIRED_EXPAND}): run `tally db upgrade`."
    ]


def test_the_required_revision_is_one_of_this_codes_expand_revisions() -> None:
    known = revisions()
    assert known.known(migrations.REQUIRED_EXPAND)
    assert known.branch_of(migrations.REQUIRED_EXPAND) == "expand"
