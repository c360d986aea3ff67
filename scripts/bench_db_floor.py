"""The floor under issue 9's targets: a Python HTTP service that does only the ceiling's transaction.

Tally's figures are ratios of the database's ceiling. This script asks what the same stack without
Tally reaches: uvicorn (configured as ``tally serve`` configures it), a bare ASGI app, the event
loop and the ceiling's own statements. Whatever this floor misses, no service on this stack and this
machine reaches; whatever it meets, the gap to Tally is Tally's own work.

The stand-in server serves:

- ``POST /v1/transfers``: the body parsed with orjson; the request joins a group, as in Tally
  (ADR 0042): one runner writes each group in one transaction (``BEGIN IMMEDIATE`` and the catch-up
  read, then for each member its idempotency lookup and the ceiling's statements for one transfer,
  ``bench.ceiling.write_transfer``), COMMITs in a worker thread as Tally does (ADR 0035,
  ``store.sqlite_threads.see_through``; ``--commit loop`` on the loop's own thread), then answers
  each member with its transfer's view;
- ``POST /v1/transfers/batch``: the transfers of the body, written in one transaction by
  ``bench.ceiling.write_batch`` (one statement per table), its reply returned.

It checks no business rule, keeps the balances in memory and authenticates nothing.
``--spin-us N`` (repeatable) burns N µs of CPU on the loop in each single transfer's request,
standing in for the work a real service adds, so the latency that a CPU cost per transfer
allows at the open loop's rate can be read off the table.

Measured with the bench's own loops (``tally.bench.loops``), after the ceilings of the same run:
``single`` in an open loop at ``--rate`` and in a closed loop of 16 clients (with the server's CPU
per transfer, from ``/proc``); ``batch`` in a closed loop of 2 clients, 1,000 transfers a request.

    .venv/bin/python scripts/bench_db_floor.py [--seconds 10] [--rate 1000] [--spin-us 0 --spin-us 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tally.bench import ceiling
from tally.bench.ceiling import Books, Move, write_batch, write_transfer
from tally.bench.loops import Call, closed_loop, open_loop
from tally.bench.results import Measured
from tally.bench.server_load import cpu_seconds, serve_like_tally, wait_for_port
from tally.domain.ids import new_id
from tally.harness.tally_server import free_port
from tally.services.transfer_groups import MOST_MEMBERS
from tally.store.sqlite_threads import see_through

T = TypeVar("T")
GROUP_LIMIT = MOST_MEMBERS  # members of one group, as TALLY_TRANSFER_GROUP_LIMIT's default
BATCH_SIZE = 1000
WARMUP = 2.0


class Floor:
    """The stand-in service: an ASGI app over one ``Books`` (see the module docstring)."""

    def __init__(self, books: Books, *, commit_on_loop: bool, spin_us: int) -> None:
        self._books = books
        self._commit_on_loop = commit_on_loop
        self._spin = spin_us / 1e6
        self._queue: list[tuple[Move, str, asyncio.Future[dict[str, Any]]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._writer = asyncio.Lock()  # one write transaction at a time: a group's or a batch's

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        key = dict(scope["headers"]).get(b"idempotency-key", b"").decode() or uuid.uuid4().hex
        data = orjson.loads(body)
        if scope["path"] == "/v1/transfers/batch":
            status, reply = 200, await self._batch([self._move(item) for item in data["transfers"]], key)
        else:
            until = time.perf_counter() + self._spin
            while time.perf_counter() < until:  # the stand-in for a service's own work
                pass
            status, reply = 201, orjson.dumps(await self._single(self._move(data), key))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    def _move(self, item: dict[str, Any]) -> Move:
        by_id = self._books.by_id
        return Move(
            new_id("tr"), by_id[item["debit_account_id"]], by_id[item["credit_account_id"]], item["amount"]
        )

    async def _single(self, move: Move, key: str) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((move, key, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        """Write the queued requests group by group; each group's members wait for its COMMIT."""
        while self._queue:
            group, self._queue = self._queue[:GROUP_LIMIT], self._queue[GROUP_LIMIT:]
            try:
                moves = [move for move, _, _ in group]
                views = await self._transaction(partial(self._write_group, group), moves)
            except Exception as error:  # every member hears of it
                for _, _, future in group:
                    future.set_exception(error)
            else:
                for (_, _, future), view in zip(group, views, strict=True):
                    future.set_result(view)

    def _write_group(
        self, group: list[tuple[Move, str, asyncio.Future[dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        views = []
        for move, key, _ in group:
            self._books.look_up(key)
            views.append(write_transfer(self._books, move, key, f"req_{uuid.uuid4().hex}"))
        return views

    async def _batch(self, moves: list[Move], key: str) -> bytes:
        def write() -> bytes:
            self._books.look_up(key)
            return write_batch(self._books, moves, key, f"req_{uuid.uuid4().hex}")

        return await self._transaction(write, moves)

    async def _transaction(self, work: Callable[[], T], moves: list[Move]) -> T:
        """``work`` in one write transaction, a group's or a batch's, one at a time; rolled back if
        ``work`` or its COMMIT fails, so that the next transaction can begin, with the balances
        ``moves`` changed in memory put back as they were."""
        db = self._books.db
        async with self._writer:
            held = [(a, a.posted, a.version) for move in moves for a in (move.debit, move.credit)]
            self._books.begin()
            try:
                done = work()
                await self._commit()
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                for account, posted, version in held:
                    account.posted, account.version = posted, version
                raise
            return done

    async def _commit(self) -> None:
        db = self._books.db
        if self._commit_on_loop:
            db.execute("COMMIT")
            return
        # As Tally's writer does (ADR 0035): the connection is the thread's until its COMMIT ends.
        _, cancelled = await see_through(partial(db.execute, "COMMIT"))
        if cancelled:
            raise asyncio.CancelledError


def serve(port: int, path: Path, accounts: int, *, commit_on_loop: bool, spin_us: int) -> None:
    """The server process: the stand-in on ``port``, configured as ``tally serve`` configures uvicorn."""
    app = Floor(Books(path, accounts), commit_on_loop=commit_on_loop, spin_us=spin_us)
    serve_like_tally(app, port)


class Calls:
    """The clients' requests: transfers between two random distinct accounts of the books."""

    def __init__(self, accounts: int) -> None:
        self._ids = [f"a{number:05d}" for number in range(accounts)]  # as ``Books`` opens them
        self._random = random.Random()  # noqa: S311 - picks accounts, not secrets

    def _transfer(self) -> dict[str, Any]:
        debit, credit = self._random.sample(self._ids, 2)
        return {
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": self._random.randint(1, 1000),
        }

    def _call(self, path: str, body: dict[str, Any], transfers: int) -> Call:
        headers = (("authorization", "Bearer x"), ("idempotency-key", uuid.uuid4().hex))
        return Call("POST", path, orjson.dumps(body), headers, transfers=transfers)

    def single(self) -> Call:
        return self._call("/v1/transfers", self._transfer(), 1)

    def batch(self) -> Call:
        body = {"transfers": [self._transfer() for _ in range(BATCH_SIZE)]}
        return self._call("/v1/transfers/batch", body, BATCH_SIZE)


def measure(options: argparse.Namespace, spin_us: int, work: Path) -> list[tuple[str, Measured, str]]:
    """One stand-in server with ``spin_us``: its open loop, closed loop and (at 0 µs) batch."""
    port, path = free_port(), work / f"floor-{spin_us}.db"
    command = [sys.executable, __file__, "--serve", str(port), "--db", str(path)]
    command += ["--accounts", str(options.accounts), "--spin-us", str(spin_us)]
    command += ["--commit", options.commit]
    server = subprocess.Popen(command)
    base_url, calls = f"http://127.0.0.1:{port}", Calls(options.accounts)
    rows: list[tuple[str, Measured, str]] = []
    try:
        wait_for_port(port)
        name = f"single +{spin_us} µs"
        opened = Measured(name, "floor", "open", 0, options.seconds, intended_rate=options.rate)
        asyncio.run(open_loop(base_url, calls.single, opened, warmup=WARMUP, seconds=options.seconds))
        rows.append((name, opened, ""))
        closed = Measured(name, "floor", "closed", 16, options.seconds)
        before = cpu_seconds(server.pid)
        asyncio.run(closed_loop(base_url, calls.single, closed, warmup=WARMUP, seconds=options.seconds))
        cpu = (cpu_seconds(server.pid) - before) / max(closed.requests, 1)  # the warm-up's share is small
        rows.append((name, closed, f"{1000 * cpu:.3f} ms CPU/transfer"))
        if spin_us == 0:
            batch = Measured("batch", "floor", "closed", 2, options.seconds, units_per_request=BATCH_SIZE)
            asyncio.run(closed_loop(base_url, calls.batch, batch, warmup=WARMUP, seconds=options.seconds))
            rows.append(("batch", batch, ""))
    finally:
        server.terminate()
        server.wait()
    return rows


def _line(name: str, measured: Measured, ceiling_rate: float, note: str) -> str:
    how = f"open {measured.intended_rate:,.0f}/s" if measured.mode == "open" else f"closed {measured.clients}"
    p50, p99, top = measured.percentile_ms(50), measured.percentile_ms(99), measured.max_ms()
    errors = measured.errors or "-"
    rate = measured.units_per_second
    return (
        f"{name:<16} {how:<14} {rate:>11,.0f} {rate / ceiling_rate:>7.0%}"
        f" {p50 or 0:>8.2f} {p99 or 0:>8.2f} {top or 0:>8.2f} {errors!s:>6}  {note}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s (1000)")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--spin-us", type=int, action="append", help="CPU added per transfer (0)")
    parser.add_argument("--commit", choices=["thread", "loop"], default="thread")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    spins = options.spin_us or [0]
    if options.serve:
        serve(
            options.serve,
            options.db,
            options.accounts,
            commit_on_loop=options.commit == "loop",
            spin_us=spins[0],
        )
        return
    with tempfile.TemporaryDirectory(prefix="tally-floor-") as tmp:
        work = Path(tmp)
        single = asyncio.run(
            ceiling.sqlite_single(work / "c1.db", options.accounts, options.seconds, warmup=WARMUP)
        )
        batch = asyncio.run(
            ceiling.sqlite_batch(work / "c2.db", options.accounts, options.seconds, warmup=WARMUP)
        )
        header = ("", "mode", "transfers/s", "of ceil", "P50 ms", "P99 ms", "max ms", "errors")
        print("{:<16} {:<14} {:>11} {:>7} {:>8} {:>8} {:>8} {:>6}".format(*header))
        print(_line("ceiling single", single, single.units_per_second, ""), flush=True)
        print(_line("ceiling batch", batch, batch.units_per_second, ""), flush=True)
        for spin_us in spins:
            for name, measured, note in measure(options, spin_us, work):
                ceiling_rate = batch.units_per_second if name == "batch" else single.units_per_second
                print(_line(name, measured, ceiling_rate, note), flush=True)


if __name__ == "__main__":
    main()
