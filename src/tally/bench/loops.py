"""The closed loop and the open loop: how the bench sends requests, times them and counts them.

Closed loop: ``clients`` connections, each sending its next request as soon as the last is answered.
It finds the most the server does at that concurrency, but a slow answer also delays the requests
behind it, so its latencies understate what users of a busy service would see.

Open loop: requests leave on a fixed schedule (``rate`` per second) whether or not earlier ones
were answered, each on a free connection (a new one if none is free), and a latency is measured
from the request's *intended* send time. A stall of the server, or of the generator itself, thus
shows in the latency of every request scheduled during it: no coordinated omission. At most
``max_in_flight`` requests are outstanding; one that would pass the cap is not sent but counted
as ``refused in_flight_cap``.

Both loops run a warm-up first, whose requests are not counted. The measurement window then lasts
``seconds``; a request counts if it was (meant to be) sent inside the window, and the loops wait
for every such request's answer. The measured duration runs from the window's opening to the last
of those answers (at least the window), so an achieved rate counts answers per second: a server
that falls behind an open loop's schedule shows a lower achieved rate than the intended one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from tally.bench.http_client import TRANSPORT_ERRORS, HttpConnection, Response
from tally.bench.results import Measured, record

MAX_IN_FLIGHT = 10_000
REFUSED = "refused in_flight_cap"


@dataclass(frozen=True)
class Call:
    """One request of a scenario; ``transfers`` is how many transfers it asks for (0: a read)."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    transfers: int = 0


Calls = Callable[[], Call]  # a scenario's next request, drawn afresh each time


@dataclass
class Measurement:
    """A ``Measured`` and the transfers its requests asked for (a mix has reads among them)."""

    measured: Measured
    transfers: int

    @property
    def transfers_per_second(self) -> float:
        seconds = self.measured.seconds
        return self.transfers / seconds if seconds > 0 else 0.0


def status_key(response: Response) -> str:
    """``"201"``; a non-2xx answer adds its problem ``code`` when the body has one."""
    if 200 <= response.status < 300:
        return str(response.status)
    try:
        code = orjson.loads(response.body).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        code = None
    return f"{response.status} {code}" if isinstance(code, str) else str(response.status)


class Window:
    """The measurement window, from ``opens`` to ``closes`` (event-loop time, in seconds).

    Counts into ``measured`` what was sent inside it; ``finish`` sets the measured duration.
    """

    def __init__(self, measured: Measured, opens: float, closes: float) -> None:
        self.measured = measured
        self.opens = opens
        self.closes = closes
        self.transfers = 0
        self.last_answer = closes

    def holds(self, sent_at: float) -> bool:
        return self.opens <= sent_at < self.closes

    def count(self, call: Call, sent_at: float, status: str, answered_at: float, timed: bool) -> None:
        """One request sent at ``sent_at``; ``timed``: its latency goes into the histogram (HTTP
        answers do; a transport error or a refusal has no meaningful latency)."""
        if not self.holds(sent_at):
            return
        self.measured.statuses[status] += 1
        self.transfers += call.transfers
        self.last_answer = max(self.last_answer, answered_at)
        latency = answered_at - sent_at if timed else None
        if latency is not None:
            record(self.measured.histogram, latency)
        self.measured.timeline.add(sent_at - self.opens, latency, failed=not status.startswith("2"))

    def finish(self) -> Measurement:
        self.measured.seconds = self.last_answer - self.opens
        return Measurement(self.measured, self.transfers)


async def exchange(connection: HttpConnection, call: Call, sent_at: float, window: Window) -> None:
    """Send ``call`` and count its outcome; a transport error counts as ``error <ExceptionName>``."""
    loop = asyncio.get_running_loop()
    try:
        response = await connection.request(call.method, call.path, call.body, call.headers)
    except TRANSPORT_ERRORS as error:
        window.count(call, sent_at, f"error {type(error).__name__}", loop.time(), timed=False)
    else:
        window.count(call, sent_at, status_key(response), loop.time(), timed=True)


async def closed_loop(
    base_url: str, calls: Calls, measured: Measured, *, warmup: float, seconds: float
) -> Measurement:
    """Run ``measured.clients`` clients for ``warmup`` then ``seconds`` seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    window = Window(measured, started + warmup, started + warmup + seconds)

    async def client() -> None:
        connection = HttpConnection(base_url)
        try:
            while (sent_at := loop.time()) < window.closes:
                await exchange(connection, calls(), sent_at, window)
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(measured.clients)))
    return window.finish()


async def open_loop(
    base_url: str,
    calls: Calls,
    measured: Measured,
    *,
    warmup: float,
    seconds: float,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> Measurement:
    """Send ``measured.intended_rate`` requests per second for ``warmup`` then ``seconds`` seconds.

    ``measured.clients`` is set to the connections it took (the most requests in flight at once).
    """
    if not measured.intended_rate or measured.intended_rate <= 0:
        raise ValueError("an open loop needs an intended rate above 0")
    loop = asyncio.get_running_loop()
    started = loop.time()
    window = Window(measured, started + warmup, started + warmup + seconds)
    interval = 1 / measured.intended_rate
    free: list[HttpConnection] = []  # a stack: the connection used last is warm and reused first
    connections: list[HttpConnection] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def send(call: Call, sent_at: float) -> None:
        if free:
            connection = free.pop()
        else:
            connection = HttpConnection(base_url)
            connections.append(connection)
        try:
            await exchange(connection, call, sent_at, window)
        finally:
            free.append(connection)

    number = 0
    while (intended := started + number * interval) < window.closes:
        number += 1
        delay = intended - loop.time()
        if delay > 0:
            # Late (the loop was busy): send at once, still timed from the intended instant.
            await asyncio.sleep(delay)
        call = calls()
        if len(in_flight) >= max_in_flight:
            window.count(call, intended, REFUSED, intended, timed=False)
            continue
        task = loop.create_task(send(call, intended))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    try:
        await asyncio.gather(*in_flight)
    finally:
        for connection in connections:
            connection.close()
    measured.clients = len(connections)
    return window.finish()
