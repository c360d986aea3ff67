"""The HTTP stack's own floor: what uvicorn, and FastAPI on it, cost per request with no Tally in it.

Tally's figures are ratios of the database's ceiling; this one says how much of the rest the HTTP
layers could explain. It serves ``POST /v1/transfers`` from a stand-in app in a ``uvicorn``
process started the way ``tally serve`` starts its own (uvloop, httptools with Tally's connection
limits), and drives it with the bench's own client (``tally.bench.http_client``) from
``--clients`` keep-alive connections, closed loop, a transfer-sized body and reply:

- ``bare``: a plain ASGI app that reads the body, parses it with orjson and sends a fixed reply;
- ``fastapi``: one FastAPI route with a pydantic body model and a ``Response`` of the same bytes.

It prints requests/s, the server's CPU per request (user + system, from ``/proc``) and the
client's, for each app in turn.

    .venv/bin/python scripts/bench_http_floor.py [--seconds 10] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid

import orjson
from fastapi import FastAPI, Response
from pydantic import BaseModel

from tally.bench.loops import Call
from tally.bench.server_load import cpu_seconds, drive, serve_like_tally, wait_for_port
from tally.harness.tally_server import free_port

REPLY = orjson.dumps(
    {
        "id": "tr_" + "0" * 32,
        "status": "posted",
        "legs": [
            {"account_id": "a" * 20, "direction": "debit", "amount": 1},
            {"account_id": "b" * 20, "direction": "credit", "amount": 1},
        ],
        "debit_account_id": "a" * 20,
        "credit_account_id": "b" * 20,
        "amount": 1,
        "currency": "USD",
        "description": None,
        "metadata": {},
        "created_at": "2026-11-30T18:00:00.000000Z",
        "posted_at": "2026-11-30T18:00:00.000000Z",
    }
)


async def bare(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def,type-arg]
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    orjson.loads(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(REPLY)).encode())]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": REPLY})


class Transfer(BaseModel):
    debit_account_id: str
    credit_account_id: str
    amount: int


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/transfers", status_code=201)
    async def create(body: Transfer) -> Response:
        return Response(REPLY, status_code=201, media_type="application/json")

    return app


def serve(app: str, port: int) -> None:
    """The server process: ``app`` on ``port``, configured as ``tally serve`` configures uvicorn."""
    target = bare if app == "bare" else fastapi_app()
    serve_like_tally(target, port)


def transfer() -> Call:
    body = orjson.dumps({"debit_account_id": uuid.uuid4().hex, "credit_account_id": "b", "amount": 1})
    headers = (("authorization", "Bearer x"), ("idempotency-key", uuid.uuid4().hex))
    return Call("POST", "/v1/transfers", body, headers, transfers=1)


def measure(app: str, clients: int, seconds: float) -> str:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, __file__, "--serve", app, "--port", str(port)])
    try:
        wait_for_port(port)
        asyncio.run(drive(base_url, transfer, clients, 2.0))  # warm-up
        server_before, client_before, started = cpu_seconds(server.pid), time.process_time(), time.monotonic()
        done = asyncio.run(drive(base_url, transfer, clients, seconds))
        elapsed = time.monotonic() - started
        server_cpu = cpu_seconds(server.pid) - server_before
        client_cpu = time.process_time() - client_before
    finally:
        server.terminate()
        server.wait()
    return (
        f"{app}: {done / elapsed:,.0f} requests/s, server CPU {1000 * server_cpu / done:.3f} ms per request, "
        f"client CPU {1000 * client_cpu / done:.3f} ms per request"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--serve", choices=["bare", "fastapi"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    for app in ("bare", "fastapi"):
        print(measure(app, args.clients, args.seconds), flush=True)


if __name__ == "__main__":
    main()
