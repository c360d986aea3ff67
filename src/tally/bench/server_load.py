"""Closed-loop load for the focused benchmark scripts, and a process's CPU time from ``/proc``.

``scripts/bench_server_cpu.py``, ``scripts/bench_http_floor.py``, ``scripts/bench_db_floor.py``
and ``scripts/bench_observability.py`` measure a server's own CPU per request: the CPU time it
spent (user + system) over a window, divided by the requests answered in it. ``tally bench``
measures latency and rates instead (``bench.loops``). The two floor scripts serve stand-in apps
as ``tally serve`` serves Tally (``serve_like_tally``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import uvicorn

from tally.api.connections import ConnectionLimits, http_protocol
from tally.bench.http_client import HttpConnection
from tally.bench.loops import Calls


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(base_url: str, make: Calls, clients: int, seconds: float) -> int:
    """Requests answered with 2xx by ``clients`` connections in ``seconds``; any other answer raises."""
    done = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        connection = HttpConnection(base_url)
        try:
            while time.monotonic() < stop:
                call = make()
                answer = await connection.request(call.method, call.path, call.body, call.headers)
                if not 200 <= answer.status < 300:
                    raise RuntimeError(f"{call.method} {call.path}: {answer.status} {answer.body[:300]!r}")
                done += 1
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def serve_like_tally(app: Any, port: int) -> None:
    """Run the ASGI ``app`` on 127.0.0.1:``port`` with uvicorn configured as ``tally serve``
    configures it (httptools with Tally's connection limits, no access log), until terminated."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
        http=http_protocol(ConnectionLimits(16_384, 10.0)),
    )


def wait_for_port(port: int, seconds: float = 60.0) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; raise after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return
