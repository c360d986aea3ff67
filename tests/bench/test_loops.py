"""The loops' bookkeeping: what is sent, what is counted, and how.

Invariants, in plain words:
- a status is ``"201"``, or a non-2xx status with its problem ``code`` when the body has one, or
  ``error <ExceptionName>`` for a request that got no answer;
- every counted request is in the statuses; every answered one, and only those, has a latency in
  the histogram; the transfers counted are those of the counted requests;
- requests sent during the warm-up are not counted; the measured duration is at least the window;
- the open loop never waits for an answer before sending the next request: with every answer held
  back, all the requests of the schedule are in flight at once, one connection each; past the
  in-flight cap a request is not sent but counted as refused;
- a connection that fails is counted as an error, and the client goes on with a new one;
- the timeline places a request by its intended send time, whenever its answer came.
"""

from __future__ import annotations

import asyncio

import pytest

from tally.bench.http_client import Response
from tally.bench.loops import REFUSED, Call, closed_loop, open_loop, status_key
from tally.bench.results import Measured, Timeline
from tests.bench.scripted_server import Close, ScriptedServer, Seen, answer, created

TRANSFER = Call("POST", "/v1/transfers", b"{}", (("idempotency-key", "k"),), transfers=1)
READ = Call("GET", "/v1/accounts/a/balance")
RATE = 64  # requests/s: the schedule's instants are exact binary fractions of a second
SECONDS = 0.5  # so the window holds RATE * SECONDS = 32 of them
SCHEDULED = int(RATE * SECONDS)
HANG = 60  # seconds: a guard against a hung test, not a timing


def transfers() -> Call:
    return TRANSFER


@pytest.mark.parametrize(
    ("status", "body", "key"),
    [
        (201, b'{"id": "t"}', "201"),
        (200, b"{}", "200"),
        (409, b'{"code": "insufficient_funds", "status": 409}', "409 insufficient_funds"),
        (422, b'{"detail": "no code"}', "422"),
        (502, b"<html>bad gateway</html>", "502"),
        (500, b"[1, 2]", "500"),
    ],
)
def test_a_status_key_is_the_status_with_the_problem_code_when_there_is_one(
    status: int, body: bytes, key: str
) -> None:
    assert status_key(Response(status, {}, body)) == key


async def test_the_closed_loop_counts_the_window_only_and_times_every_answer() -> None:
    async with ScriptedServer() as server:
        measured = Measured("single", "sqlite", "closed", clients=3, seconds=0)
        measurement = await closed_loop(server.base_url, transfers, measured, warmup=0.05, seconds=0.2)
    assert set(measured.statuses) == {"201"}
    assert measured.requests > 0
    assert measured.histogram.get_total_count() == measured.requests
    assert measurement.transfers == measured.requests
    assert measured.seconds >= 0.2
    assert len(server.seen) > measured.requests  # the first requests left during the warm-up
    assert server.connections == 3


async def test_the_closed_loop_counts_a_mix_of_reads_and_transfers() -> None:
    calls = iter([READ, TRANSFER] * 100_000)
    async with ScriptedServer() as server:
        measured = Measured("mix", "sqlite", "closed", clients=1, seconds=0)
        measurement = await closed_loop(server.base_url, lambda: next(calls), measured, warmup=0, seconds=0.1)
    # One client alternates: the window holds as many transfers as reads, give or take one.
    assert abs(2 * measurement.transfers - measured.requests) <= 1


async def test_failed_connections_are_counted_as_errors_with_no_latency_and_the_client_goes_on() -> None:
    replies = iter([None, Close(b"HTTP/1.1 201 Created\r\ncontent-le")])

    def reply(seen: Seen) -> bytes | None:
        return next(replies, created(seen))

    async with ScriptedServer(reply) as server:
        measured = Measured("single", "sqlite", "closed", clients=1, seconds=0)
        await closed_loop(server.base_url, transfers, measured, warmup=0, seconds=0.2)
    assert measured.statuses["error ConnectionClosed"] == 2
    assert measured.statuses["201"] > 0
    assert measured.histogram.get_total_count() == measured.statuses["201"]
    assert server.connections == 3


async def test_problem_answers_are_counted_by_code_and_timed() -> None:
    def reply(_: Seen) -> bytes:
        return answer(409, b'{"code": "insufficient_funds"}')

    async with ScriptedServer(reply) as server:
        measured = Measured("hot", "sqlite", "closed", clients=2, seconds=0)
        await closed_loop(server.base_url, transfers, measured, warmup=0, seconds=0.1)
    assert set(measured.statuses) == {"409 insufficient_funds"}
    assert measured.errors == measured.requests == measured.histogram.get_total_count()


async def test_the_open_loop_sends_on_schedule_without_waiting_for_answers() -> None:
    hold = asyncio.Event()
    async with ScriptedServer(hold=hold) as server:
        measured = Measured("single", "sqlite", "open", clients=0, seconds=0, intended_rate=RATE)
        running = asyncio.create_task(
            open_loop(server.base_url, transfers, measured, warmup=0, seconds=SECONDS)
        )
        await asyncio.wait_for(server.received(SCHEDULED), HANG)
        assert not any(measured.statuses.values())  # all of them sent, none answered yet
        hold.set()
        measurement = await running
    assert measured.statuses == {"201": SCHEDULED}
    assert measured.clients == server.connections == SCHEDULED  # one connection per request
    assert measured.histogram.get_total_count() == measurement.transfers == SCHEDULED


async def test_past_the_in_flight_cap_the_open_loop_refuses_and_counts() -> None:
    hold = asyncio.Event()
    scheduled = 0
    all_scheduled = asyncio.Event()

    def counted() -> Call:
        # Drawn for every instant of the schedule, sent or refused; the last one ends the schedule.
        nonlocal scheduled
        scheduled += 1
        if scheduled == SCHEDULED:
            all_scheduled.set()
        return TRANSFER

    async with ScriptedServer(hold=hold) as server:
        measured = Measured("single", "sqlite", "open", clients=0, seconds=0, intended_rate=RATE)
        running = asyncio.create_task(
            open_loop(server.base_url, counted, measured, warmup=0, seconds=SECONDS, max_in_flight=5)
        )
        await asyncio.wait_for(all_scheduled.wait(), HANG)
        hold.set()
        await running
    assert measured.statuses == {"201": 5, REFUSED: SCHEDULED - 5}
    assert measured.histogram.get_total_count() == 5
    assert measured.clients == 5


async def test_an_open_loop_needs_a_rate() -> None:
    measured = Measured("single", "sqlite", "open", clients=0, seconds=0)
    with pytest.raises(ValueError, match="rate"):
        await open_loop("http://127.0.0.1:1", transfers, measured, warmup=0, seconds=1)


async def test_the_timeline_places_each_request_in_the_slice_of_its_intended_send_time() -> None:
    hold = asyncio.Event()
    async with ScriptedServer(hold=hold) as server:
        measured = Measured("single", "sqlite", "open", clients=0, seconds=0, intended_rate=RATE)
        measured.timeline = Timeline(slice_seconds=SECONDS / 4)
        running = asyncio.create_task(
            open_loop(server.base_url, transfers, measured, warmup=0, seconds=SECONDS)
        )
        await asyncio.wait_for(server.received(SCHEDULED), HANG)
        hold.set()  # every answer comes after the last request left, whenever it was meant to leave
        await running
    slices = measured.timeline.as_json()
    # The schedule's instants are exact binary fractions: SCHEDULED / 4 in each quarter.
    assert [point["requests"] for point in slices] == [SCHEDULED // 4] * 4
    assert [point["errors"] for point in slices] == [0] * 4
    assert all(point["p50_ms"] is not None for point in slices)
