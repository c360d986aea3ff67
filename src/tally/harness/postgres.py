"""A real PostgreSQL primary with streaming replicas, started by Tally's tools (tests, bench, drill).

``start_cluster()`` runs ``initdb`` in a fresh directory under /tmp, starts a primary, clones it with
``pg_basebackup -R`` into each replica and starts them as hot standbys. Every server listens on its
own free port on 127.0.0.1 only, with no Unix socket, and trusts the superuser ``tally`` there.
``PgCluster.stop()`` (also run at exit for clusters still up) stops the servers and removes the
directory. Without the server binaries, ``find_postgres`` and ``start_cluster`` raise
``PostgresMissing``; the tests turn that into a skip (``tests/pg_cluster.py``).

initdb, pg_ctl and postgres refuse to run as root, and CI runs as root: then every server command
runs as the ``postgres`` system user (``runuser``), which owns the cluster directory. That directory
is made with ``mkdtemp`` in /tmp rather than under pytest's ``tmp_path``, whose parent
(/tmp/pytest-of-root) is mode 0700 and so closed to that user.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import QueryNoTemplate
from psycopg.conninfo import make_conninfo

HOST = "127.0.0.1"
SUPERUSER = "tally"
SERVER_USER = "postgres"  # the system user that runs the servers when we run as root
BINARIES = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
PREFERRED_MAJOR = 15
START_TIMEOUT = 60  # seconds, for pg_ctl -w start and stop
COMMAND_TIMEOUT = 120  # seconds, for initdb and pg_basebackup


class ClusterError(RuntimeError):
    """A server command failed or a server did not reach the awaited state in time."""


def pg_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl, pg_basebackup and postgres, or None.

    Debian's /usr/lib/postgresql/N/bin first (N = 15, then the newest), then ``pg_config --bindir``,
    then wherever ``initdb`` is on PATH.
    """
    for candidate in _bin_dir_candidates():
        if all(os.access(candidate / name, os.X_OK) for name in BINARIES):
            return candidate
    return None


class PostgresMissing(ClusterError):
    """The server binaries, or the system user that runs them when we are root, are missing."""


def find_postgres() -> Path:
    """The server binaries' directory; ``PostgresMissing`` says what is missing otherwise."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise PostgresMissing("PostgreSQL server binaries not found (install postgresql-15)")
    if os.geteuid() == 0 and not _server_user_exists():
        raise PostgresMissing(f"running as root needs the {SERVER_USER!r} system user to run PostgreSQL")
    return bin_dir


@dataclass
class PgServer:
    """One PostgreSQL server: its data directory and its port on 127.0.0.1."""

    bin_dir: Path
    data_dir: Path
    port: int
    log: Path

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL, such as ``postgresql+psycopg://tally@127.0.0.1:PORT/DB``."""
        return f"{driver}://{SUPERUSER}@{HOST}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for ``psycopg.connect``."""
        return make_conninfo(host=HOST, port=self.port, user=SUPERUSER, dbname=database)

    def start(self) -> None:
        """Start the server and wait until it accepts connections (a standby: read-only ones)."""
        self._pg_ctl("start", "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server and wait for it to exit; mode ``immediate`` is a crash (no checkpoint)."""
        self._pg_ctl("stop", "-m", mode)

    def running(self) -> bool:
        # pg_ctl status: 0 running, 3 not running, 4 no data directory.
        done = _run([self._bin("pg_ctl"), "status", "-D", str(self.data_dir)], check=False)
        return done.returncode == 0

    def execute(
        self, query: QueryNoTemplate, database: str = "postgres", params: Sequence[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit; return its rows (none for a statement without any)."""
        with (
            psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=10) as conn,
            conn.cursor() as cursor,
        ):
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def _pg_ctl(self, action: str, *args: str) -> None:
        command = [self._bin("pg_ctl"), action, "-w", "-t", str(START_TIMEOUT), "-D", str(self.data_dir)]
        _run([*command, *args], log=self.log)

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)


@dataclass
class PgCluster:
    """A primary and its streaming replicas (hot standbys), all in one temporary directory."""

    primary: PgServer
    replicas: list[PgServer]
    directory: Path
    stopped: bool = field(default=False, init=False)

    @property
    def replica(self) -> PgServer:
        """The first replica."""
        if not self.replicas:
            raise ClusterError("this cluster has no replica")
        return self.replicas[0]

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a database on the primary (``t_<hex>`` when unnamed), a copy of ``template`` if
        given; return once every replica accepts connections to it."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        self.primary.execute(query)
        self.wait_for_replay()
        for replica in self.replicas:
            _wait_until(partial(_accepts, replica, name), 30, f"replica {replica.port} to open {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database on the primary, closing its sessions (``WITH (FORCE)``)."""
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        self.primary.execute(query)

    def pause_replay(self) -> None:
        """Pause WAL replay on every replica, and wait until it has paused: the replicas still receive
        WAL but apply none of it."""
        for replica in self.replicas:
            replica.execute("SELECT pg_wal_replay_pause()")
        for replica in self.replicas:
            _wait_until(partial(_paused, replica), 30, f"replica {replica.port} to pause")

    def resume_replay(self) -> None:
        """Resume WAL replay on every replica."""
        for replica in self.replicas:
            replica.execute("SELECT pg_wal_replay_resume()")

    def wait_for_replay(self, timeout: float = 30) -> None:
        """Wait until every replica has applied all the WAL the primary had written at this call."""
        target = self.primary.execute("SELECT pg_current_wal_lsn()::text")[0][0]
        for replica in self.replicas:
            replayed = partial(_replayed, replica, target)
            _wait_until(replayed, timeout, f"replica {replica.port} to replay up to {target}")

    def stop(self) -> None:
        """Stop the replicas, then the primary, and remove the directory; again is a no-op.

        Servers already down are skipped. A server that will not stop does not keep the others
        running: its error is raised once all were tried and the directory is gone.
        """
        if self.stopped:
            return
        self.stopped = True
        with suppress(ValueError):
            _live_clusters.remove(self)
        errors: list[ClusterError] = []
        for server in [*self.replicas, self.primary]:
            try:
                _stop_quietly(server)
            except ClusterError as error:
                errors.append(error)
        shutil.rmtree(self.directory, ignore_errors=True)
        if errors:
            raise errors[0]


def start_cluster(*, replicas: int = 1, durable: bool = False) -> PgCluster:
    """Start a primary and ``replicas`` hot standbys streaming from it.

    ``durable=False`` turns off fsync and full-page writes: fast, and still safe when a server
    process is killed, since the written WAL sits in the OS cache, which survives it. Only losing
    the machine would lose commits. If any step fails, what was started is stopped and the
    directory removed before the error is raised.
    """
    bin_dir = find_postgres()
    directory = Path(tempfile.mkdtemp(prefix="tally-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(directory, account.pw_uid, account.pw_gid)
    primary = _server(bin_dir, directory / "primary")
    cluster = PgCluster(primary=primary, replicas=[], directory=directory)
    _live_clusters.append(cluster)
    try:
        _init_primary(primary, durable=durable)
        primary.start()
        for number in range(1, replicas + 1):
            replica = _server(bin_dir, directory / f"replica{number}")
            _clone(primary, replica, durable=durable)
            cluster.replicas.append(replica)
            replica.start()
            _wait_until(partial(_in_recovery, replica), 30, f"replica {replica.port} to stand by")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def cluster(*, replicas: int = 1, durable: bool = False) -> Iterator[PgCluster]:
    """``start_cluster`` for a ``with`` block, stopped at its end."""
    started = start_cluster(replicas=replicas, durable=durable)
    try:
        yield started
    finally:
        started.stop()


# Clusters not yet stopped; stopped at interpreter exit, so an aborted session leaves no server.
_live_clusters: list[PgCluster] = []


@atexit.register
def _stop_live_clusters() -> None:
    for live in _live_clusters.copy():
        with suppress(Exception):
            live.stop()


def _bin_dir_candidates() -> Iterator[Path]:
    def rank(bin_dir: Path) -> tuple[bool, tuple[int, ...]]:
        try:
            version = tuple(int(part) for part in bin_dir.parent.name.split("."))
        except ValueError:
            version = ()
        return version[:1] == (PREFERRED_MAJOR,), version

    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=rank, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        # pg_config found on PATH, like every other PostgreSQL binary here.
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode == 0 and done.stdout.strip():
            yield Path(done.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb is not None:
        yield Path(initdb).resolve().parent


def _server_user_exists() -> bool:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return False
    return True


def _server(bin_dir: Path, data_dir: Path) -> PgServer:
    return PgServer(bin_dir=bin_dir, data_dir=data_dir, port=_free_port(), log=data_dir / "server.log")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _init_primary(primary: PgServer, *, durable: bool) -> None:
    initdb = [str(primary.bin_dir / "initdb"), "-D", str(primary.data_dir), f"--username={SUPERUSER}"]
    initdb += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"]
    _run([*initdb, *([] if durable else ["--no-sync"])], timeout=COMMAND_TIMEOUT)
    # Opening the file for writing keeps its owner (the server user) when we run as root.
    with (primary.data_dir / "pg_hba.conf").open("w") as hba:
        hba.write(f"host all all {HOST}/32 trust\nhost replication all {HOST}/32 trust\n")
    switch = "on" if durable else "off"
    _configure(
        primary,
        listen_addresses=f"'{HOST}'",
        port=str(primary.port),
        # No Unix socket: nothing to clean up, and no 107-byte socket path limit; pg_ctl -w reads
        # readiness from postmaster.pid, so it needs none either.
        unix_socket_directories="''",
        max_connections="200",
        shared_buffers="128MB",
        wal_level="replica",
        max_wal_senders="8",
        max_replication_slots="8",
        wal_keep_size="256MB",
        hot_standby="on",
        fsync=switch,
        full_page_writes=switch,
        synchronous_commit="on",
        logging_collector="off",
        log_min_messages="warning",
    )


def _clone(primary: PgServer, replica: PgServer, *, durable: bool) -> None:
    basebackup = [str(primary.bin_dir / "pg_basebackup"), "-h", HOST, "-p", str(primary.port)]
    basebackup += ["-U", SUPERUSER, "-D", str(replica.data_dir), "-R", "-X", "stream", "-c", "fast"]
    _run([*basebackup, *([] if durable else ["--no-sync"])], timeout=COMMAND_TIMEOUT, log=primary.log)
    # The copy brings the primary's log along; the replica's own starts empty.
    replica.log.unlink(missing_ok=True)
    _configure(
        replica,
        port=str(replica.port),
        hot_standby="on",
        hot_standby_feedback="on",
        # After the primary restarts the standby reconnects after this pause (default 5 s).
        wal_retrieve_retry_interval="'200ms'",
    )


def _configure(server: PgServer, **settings: str) -> None:
    # Appended to postgresql.conf, where the last setting of a name wins; a replica's copy of the
    # primary's file thus takes its own port below the primary's.
    lines = [f"{name} = {value}\n" for name, value in settings.items()]
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# tally.harness.postgres\n")
        conf.writelines(lines)


def _stop_quietly(server: PgServer) -> None:
    """Stop a server if it runs: fast, else immediate; a server already down is left as it is."""
    if not server.data_dir.exists() or not server.running():
        return
    try:
        server.stop("fast")
    except ClusterError:
        server.stop("immediate")


def _run(
    command: list[str], *, check: bool = True, timeout: float = START_TIMEOUT + 30, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a server command, as the server user when we are root, with its output captured."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", SERVER_USER, "--", *command]
    # PG* variables (PGDATA, PGPORT, ...) would override what the commands are told.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    done = subprocess.run(  # noqa: S603 - the PostgreSQL binaries found above, with arguments built here
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False
    )
    if check and done.returncode != 0:
        message = f"{' '.join(command)} exited with {done.returncode}\n{done.stdout}{done.stderr}"
        if log is not None:
            message += f"\n--- last lines of {log} ---\n{_tail(log)}"
        raise ClusterError(message)
    return done


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _accepts(server: PgServer, database: str) -> bool:
    try:
        server.execute("SELECT 1", database)
    except psycopg.OperationalError:
        return False
    return True


def _in_recovery(server: PgServer) -> bool:
    try:
        return bool(server.execute("SELECT pg_is_in_recovery()")[0][0])
    except psycopg.OperationalError:
        return False


def _paused(server: PgServer) -> bool:
    return server.execute("SELECT pg_get_wal_replay_pause_state()") == [("paused",)]


def _replayed(server: PgServer, lsn: str) -> bool:
    query = "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)"
    return bool(server.execute(query, params=(lsn,))[0][0])
