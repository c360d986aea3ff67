"""Shared test helpers: a Tally app over ASGI or as a real process, and a small API client."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import create_engine

from tally.api.app import create_app
from tally.bootstrap import Tally
from tally.config import Settings
from tally.domain.keys import new_secret
from tally.services.consistency import Consistency, reading_at
from tally.services.deadline import set_deadline
from tally.services.ports import Database, Transaction
from tally.store.migrations import ensure_schema
from tally.store.sqlite import SqliteDatabase
from tests.pg_cluster import PgCluster, require_postgres, start_cluster

ROOT_KEY = new_secret("root")


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'tally.db'}"


class Backends:
    """Which database the current test runs on, and the databases it made there.

    ``tests/api/conftest.py`` runs each test once per backend. On ``postgresql`` every test
    directory gets a fresh database on one shared primary + streaming replica cluster (started once
    per session, stopped at exit), and it is dropped when the test ends.
    """

    def __init__(self) -> None:
        self.name = "sqlite"
        self._cluster: PgCluster | None = None
        self._made: dict[Path, str] = {}
        self._template: str | None = None

    def cluster(self) -> PgCluster:
        if self._cluster is None:
            require_postgres()
            self._cluster = start_cluster()
        return self._cluster

    def urls(self, directory: Path, *, empty: bool = False) -> tuple[str, list[str]]:
        """The primary's URL and the replicas' for the test directory ``directory``.

        On PostgreSQL the database is a copy of one holding Tally's schema already (a start that
        creates it costs ~150 ms more than the copy), unless ``empty``: then it has no table.
        """
        if self.name == "sqlite":
            return sqlite_url(directory), []
        cluster = self.cluster()
        if directory not in self._made:
            template = None if empty else self._schema_template(cluster)
            self._made[directory] = cluster.create_database(template=template)
        name = self._made[directory]
        return cluster.primary.url(name), [replica.url(name) for replica in cluster.replicas]

    def _schema_template(self, cluster: PgCluster) -> str:
        """A database on ``cluster`` with the head schema, made once; new databases copy it."""
        if self._template is None:
            name = cluster.create_database("tally_schema_template")
            engine = create_engine(cluster.primary.url(name))
            try:
                with engine.begin() as conn:
                    ensure_schema(conn)
            finally:
                engine.dispose()  # a template must have no session open while it is copied
            self._template = name
        return self._template

    def rows(self, directory: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` (``?`` placeholders) on the primary of ``directory``'s database."""
        if self.name == "sqlite":
            with sqlite3.connect(directory / "tally.db", timeout=30) as connection:
                found = connection.execute(query, params).fetchall()
            connection.close()
            return found
        self.urls(directory)
        return self.cluster().primary.execute(query.replace("?", "%s"), self._made[directory], params)

    @contextmanager
    def using(self, name: str) -> Iterator[str]:
        """Run the block on backend ``name``; drop its databases afterwards."""
        self.name = name
        try:
            yield name
        finally:
            self.finish()

    def finish(self) -> None:
        """Drop the test's PostgreSQL databases; back to SQLite for the next test."""
        for name in self._made.values():
            if self._cluster is not None:
                self._cluster.drop_database(name)
        self._made.clear()
        self.name = "sqlite"
        SESSION.token = None

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None
            self._template = None


BACKENDS = Backends()


class ClientSession:
    """Read-your-writes for test clients: every response's consistency token is sent on later requests.

    A real client that reads what it just wrote sends ``Tally-Consistency-Token`` back (API.md);
    tests do the same through these hooks, so their reads are right whatever replica answers.
    """

    def __init__(self) -> None:
        self.token: str | None = None

    async def before(self, request: httpx.Request) -> None:
        if self.token is not None and "tally-consistency-token" not in request.headers:
            request.headers["Tally-Consistency-Token"] = self.token

    async def after(self, response: httpx.Response) -> None:
        token = response.headers.get("tally-consistency-token")
        if token is not None:
            self.token = token

    def hooks(self) -> dict[str, Any]:
        return {"request": [self.before], "response": [self.after]}


SESSION = ClientSession()


def client_for(base_url: str, **options: Any) -> httpx.AsyncClient:
    """A client of a real server that carries consistency tokens like an application would."""
    return httpx.AsyncClient(base_url=base_url, timeout=30, event_hooks=SESSION.hooks(), **options)


def settings_for(directory: Path, **overrides: Any) -> Settings:
    url, replicas = BACKENDS.urls(directory)
    values: dict[str, Any] = {
        "database_url": url,
        "replica_urls": replicas,
        "root_key": ROOT_KEY,
        "log_format": "json",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def primary_read(database: Database) -> AsyncIterator[Transaction]:
    """A read on the primary, for what was written without a consistency token (a job's writes, a
    test's own): an available read may come from a replica that has not replayed it yet."""
    with reading_at(Consistency.STRONG):
        async with database.read() as tx:
            yield tx


@asynccontextmanager
async def running_sqlite(path: Path, **options: Any) -> AsyncIterator[SqliteDatabase]:
    """The SQLite adapter on the file ``path``, started; stopped after, and the deadline a test may
    have set cleared."""
    db = SqliteDatabase(f"sqlite:///{path}", **options)
    await db.start()
    try:
        yield db
    finally:
        set_deadline(None)
        await db.stop()


@asynccontextmanager
async def asgi_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to a fresh app in this process, lifespan included."""
    async with serving_in_process(Tally(settings)) as client:
        yield client


# asgi-lifespan's default is 5 s each: a start on PostgreSQL (a fresh database, its pools, the
# schema check) took longer than that once on this 2-core machine while the suite ran beside it.
# A start or stop that hangs still fails, in 30 s.
LIFESPAN_SECONDS = {"startup_timeout": 30.0, "shutdown_timeout": 30.0}


@asynccontextmanager
async def serving_in_process(tally: Tally, *, tokens: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``tally``'s app in this process, lifespan included; the caller keeps ``tally``
    to reach what the API does not show. ``tokens``: send back the last consistency token."""
    async with LifespanManager(create_app(tally), **LIFESPAN_SECONDS) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        hooks = SESSION.hooks() if tokens else {}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tally", event_hooks=hooks
        ) as client:
            yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ROOT = bearer(ROOT_KEY)


def idem(key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or uuid.uuid4().hex}


@dataclass
class LedgerKeys:
    ledger_id: str
    admin: dict[str, str]
    write: dict[str, str]
    read: dict[str, str]


async def new_ledger(client: httpx.AsyncClient, name: str = "test") -> LedgerKeys:
    """A ledger with an admin, a write and a read key."""
    response = await client.post("/v1/ledgers", json={"name": name}, headers=ROOT)
    assert response.status_code == 201, response.text
    ledger_id = response.json()["id"]
    keys = {}
    for scope in ("admin", "write", "read"):
        created = await client.post(
            f"/v1/ledgers/{ledger_id}/keys", json={"name": scope, "scopes": [scope]}, headers=ROOT
        )
        assert created.status_code == 201, created.text
        keys[scope] = bearer(created.json()["key"])
    return LedgerKeys(ledger_id, keys["admin"], keys["write"], keys["read"])


async def open_account(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("currency", "USD")
    response = await client.post("/v1/accounts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def transfer(
    client: httpx.AsyncClient, headers: dict[str, str], debit: str, credit: str, amount: int, **extra: Any
) -> httpx.Response:
    body = {"debit_account_id": debit, "credit_account_id": credit, "amount": amount, **extra}
    return await client.post("/v1/transfers", json=body, headers={**headers, **idem()})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A real ``tally serve`` process on loopback."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


def start_server(
    directory: Path, env: dict[str, str] | None = None, *, root_key: str | None = ROOT_KEY
) -> Server:
    """Start ``tally serve`` on a free port; stdout and stderr go to a log file in ``directory``."""
    port = free_port()
    log_path = directory / f"server-{port}.log"
    url, replicas = BACKENDS.urls(directory)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TALLY_")},
        "TALLY_DATABASE_URL": url,
        "TALLY_REPLICA_URLS": ",".join(replicas),
        "TALLY_LOG_FORMAT": "json",
        **(env or {}),
    }
    if root_key is not None:
        full_env["TALLY_ROOT_KEY"] = root_key
    tally = Path(sys.executable).parent / "tally"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(tally), "serve", "--port", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tally serve exited: {log_path.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"tally serve did not become healthy: {log_path.read_text()}")


RFC3339_UTC_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A problem+json answer (RFC 9457) with ``status``, its ``code`` when given, and the request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["code"] == code, body
    assert body["type"] == f"/problems/{body['code']}"
    assert body["status"] == status
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def funded_account(client: httpx.AsyncClient, keys: LedgerKeys, account_id: str, amount: int) -> None:
    """Open ``world`` (unbounded, debit-normal) and ``account_id``, and move ``amount`` between them."""
    await open_account(client, keys.write, id="world", normal_balance="debit", min_balance=None)
    await open_account(client, keys.write, id=account_id)
    funded = await transfer(client, keys.write, "world", account_id, amount)
    assert funded.status_code == 201, funded.text


def assert_no_defaults(value: Any) -> None:
    """Every field of the dataclass ``value`` that has a default is set to something else, so that a
    hand-written copy which loses a field shows in a comparison with ``dataclasses.replace``."""
    for f in fields(value):
        if f.default is not MISSING:
            assert getattr(value, f.name) != f.default, f"set {f.name} in the test's sample"
