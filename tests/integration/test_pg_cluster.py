"""The PostgreSQL test harness itself: a replica follows its primary, refuses writes, can be held
back, and follows the primary again after it crashes and restarts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.pg_cluster import ClusterError, PgCluster, PgServer, cluster, require_postgres, start_cluster


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    """One primary and one replica for the module; each test works in its own database."""
    require_postgres()
    started = start_cluster()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def database(pg: PgCluster) -> Iterator[str]:
    name = pg.create_database()
    pg.primary.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)", name)
    try:
        yield name
    finally:
        pg.drop_database(name)


def notes(server: PgServer, database: str) -> list[tuple[int, str]]:
    return [(row[0], row[1]) for row in server.execute("SELECT id, body FROM notes ORDER BY id", database)]


def add_note(server: PgServer, database: str, note_id: int, body: str) -> None:
    server.execute("INSERT INTO notes (id, body) VALUES (%s, %s)", database, params=(note_id, body))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def received_everything(pg: PgCluster) -> bool:
    """Whether the replica has received (not necessarily applied) all WAL the primary wrote so far."""
    target = pg.primary.execute("SELECT pg_current_wal_lsn()::text")[0][0]
    query = "SELECT coalesce(pg_last_wal_receive_lsn() >= %s::pg_lsn, false)"
    return bool(pg.replica.execute(query, params=(target,))[0][0])


def test_a_row_committed_on_the_primary_is_readable_on_the_replica_after_replay(
    pg: PgCluster, database: str
) -> None:
    add_note(pg.primary, database, 1, "written on the primary")

    pg.wait_for_replay()

    assert notes(pg.replica, database) == [(1, "written on the primary")]


def test_the_replica_is_a_hot_standby_that_refuses_writes(pg: PgCluster, database: str) -> None:
    assert pg.replica.execute("SELECT pg_is_in_recovery()") == [(True,)]
    assert pg.primary.execute("SELECT pg_is_in_recovery()") == [(False,)]

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only transaction"):
        add_note(pg.replica, database, 1, "written on the replica")

    assert notes(pg.primary, database) == []


def test_a_paused_replica_receives_new_rows_but_shows_them_only_once_resumed(
    pg: PgCluster, database: str
) -> None:
    add_note(pg.primary, database, 1, "before the pause")
    pg.wait_for_replay()
    pg.pause_replay()
    try:
        add_note(pg.primary, database, 2, "during the pause")
        # The WAL with the new row has reached the replica: only the pause keeps it unapplied.
        wait_until(lambda: received_everything(pg), "the replica to receive the new row")
        assert notes(pg.replica, database) == [(1, "before the pause")]
    finally:
        pg.resume_replay()

    pg.wait_for_replay()

    assert notes(pg.replica, database) == [(1, "before the pause"), (2, "during the pause")]


def test_waiting_for_replay_times_out_while_the_replica_is_paused(pg: PgCluster, database: str) -> None:
    pg.pause_replay()
    try:
        add_note(pg.primary, database, 1, "not applied yet")
        with pytest.raises(ClusterError, match="timed out"):
            pg.wait_for_replay(timeout=0.3)
    finally:
        pg.resume_replay()


def test_committed_rows_survive_a_primary_crash_and_the_replica_follows_the_restarted_primary() -> None:
    require_postgres()
    with cluster() as own:
        name = own.create_database()
        own.primary.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)", name)
        add_note(own.primary, name, 1, "before the crash")

        own.primary.stop("immediate")
        assert not own.primary.running()
        own.primary.start()

        assert "automatic recovery in progress" in own.primary.log.read_text()
        assert notes(own.primary, name) == [(1, "before the crash")]
        add_note(own.primary, name, 2, "after the restart")
        own.wait_for_replay()
        assert notes(own.replica, name) == [(1, "before the crash"), (2, "after the restart")]
        assert own.replica.execute("SELECT pg_is_in_recovery()") == [(True,)]
        streaming = own.primary.execute("SELECT state FROM pg_stat_replication")
        assert streaming == [("streaming",)]


def test_stopping_a_cluster_stops_its_servers_and_removes_its_directory() -> None:
    require_postgres()
    own = start_cluster(replicas=1)
    servers = [own.primary, *own.replicas]
    assert all(server.running() for server in servers)

    own.stop()

    assert not own.directory.exists()
    assert not any(server.running() for server in servers)
    for server in servers:
        with pytest.raises(psycopg.OperationalError):
            server.execute("SELECT 1")
    own.stop()  # again: nothing left to stop, and no error
