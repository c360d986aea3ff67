"""A key of ledger A naming anything of ledger B finds nothing, and changes nothing of B.

Generated from the served OpenAPI document: every keyed operation with a path id is called by A's
key holding every scope (admin, read and write) with B's ids — each parameter A's or B's, at least
one B's — and must answer 404 ``not_found``, as for an id that does not exist (API.md). Every list
with an id filter answers with B's id exactly as with an id that does not exist (``account_id``:
an empty page; ``after``: 422), and so does every body naming B's accounts. No answer (every list
of A's, unfiltered, included) shows an id of B it was not sent, and every row of B in the database
is the same after the matrix as before. B's own POSTs, sent again by A with B's Idempotency-Keys,
are answered as with fresh keys (never with B's stored answers), and A may create its own resources
with B's ids as client-supplied ids.

Ids are substituted by parameter name; a parameter the tables here do not know fails the test, so
a new route or filter is placed deliberately.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally.api.routing import Access
from tests.security.examples import BODIES, body_for, headers_for, placeholders, query_for
from tests.security.inventory import KEYED, Operation, committed_operations, operations
from tests.security.matrix_app import matrix_app, problem_error
from tests.security.snapshot import ledger_rows
from tests.security.tenant import STRONG, WAIT_SECONDS, Tenant, populated_ledger, statements_of_today

# Query parameters that name a resource, and the tenant id they take (``Tenant.ids``).
ID_FILTERS = {"account_id": "account_id", "after": "event_id"}
# Query parameters that name none: ``cursor`` is a position in the caller's own list.
NOT_IDS = frozenset(
    {"limit", "cursor", "currency", "status", "type", "as_of", "from", "to", "action", "order"}
)
# Body placeholders that name a resource (examples.BODIES).
BODY_IDS = frozenset({"account_id", "world_id"})
# Creates that take a client-supplied ``id``, and the tenant id of that kind (``Tenant.ids``).
CLIENT_IDS = {"/v1/accounts": "account_id", "/v1/transfers": "transfer_id"}
NO_SUCH_ID = "no-such-id-anywhere"
# What identifies a resource read back: fields that do not change as it is used.
IDENTITY = ("id", "name", "currency", "normal_balance", "legs", "metadata", "created_at")


def _path_cases(operation: Operation, mine: Tenant, theirs: Tenant) -> list[dict[str, str]]:
    """Every choice of ids for the path: each parameter mine (the first) or any of theirs, not all
    mine."""
    choices = [[mine.ids[name][0], *theirs.ids[name]] for name in operation.path_params]
    own = tuple(mine.ids[name][0] for name in operation.path_params)
    return [
        dict(zip(operation.path_params, chosen, strict=True))
        for chosen in itertools.product(*choices)
        if chosen != own
    ]


def _unknown_names(inventory: list[Operation], ids: dict[str, list[str]]) -> list[str]:
    unknown = []
    for operation in inventory:
        if operation.access not in KEYED:
            continue
        unknown += [f"{operation}: path {p}" for p in operation.path_params if p not in ids]
        unknown += [
            f"{operation}: query {q}"
            for q in operation.query_params
            if q not in ID_FILTERS and q not in NOT_IDS
        ]
    return unknown


class Matrix:
    """The calls of the matrix, made with A's key; collects what was wrong with their answers."""

    def __init__(
        self, client: httpx.AsyncClient, inventory: list[Operation], mine: Tenant, theirs: Tenant
    ) -> None:
        self.client = client
        self.inventory = inventory
        self.mine = mine
        self.theirs = theirs
        self.headers = mine.headers("all")
        self.their_ids = {i for values in theirs.ids.values() for i in values}
        self.failures: list[str] = []
        self.calls = 0

    async def call(
        self, operation: Operation, ids: dict[str, str], query: dict[str, str], body: Any
    ) -> httpx.Response:
        self.calls += 1
        response = await self.client.request(
            operation.method,
            operation.url(ids),
            params=query,
            json=body,
            headers={**headers_for(operation), **self.headers},
        )
        sent = f"{operation.url(ids)} {query} {body}"
        shown = [i for i in self.their_ids if i in response.text and i not in sent]
        if shown:
            self.fail(operation, ids, f"the answer shows ids of B it was not sent: {shown}")
        if (wrong := problem_error(response)) is not None:
            self.fail(operation, ids, wrong)
        return response

    def fail(self, operation: Operation, where: Any, why: str) -> None:
        self.failures.append(f"{operation} {where}: {why}")

    async def own_ids(self, operation: Operation) -> None:
        """A's own ids in the path of a read: 200, so B's 404s are not those of a malformed call."""
        ids = self.mine.first_ids()
        response = await self.call(operation, ids, query_for(operation), body_for(operation, ids))
        if response.status_code != 200:
            self.fail(
                operation, ids, f"A's own id: expected 200, got {response.status_code} {response.text[:200]}"
            )

    async def path_ids(self, operation: Operation) -> None:
        """B's ids in the path: 404 ``not_found``."""
        own = self.mine.first_ids()
        for ids in _path_cases(operation, self.mine, self.theirs):
            response = await self.call(operation, ids, query_for(operation), body_for(operation, own))
            if response.status_code != 404 or response.json().get("code") != "not_found":
                self.fail(
                    operation,
                    ids,
                    f"expected 404 not_found, got {response.status_code} {response.text[:200]}",
                )

    async def listing(self, operation: Operation) -> None:
        """A's list, unfiltered: 200, and (``call``) nothing of B in it."""
        own = self.mine.first_ids()
        response = await self.call(operation, own, query_for(operation), None)
        if response.status_code != 200:
            self.fail(
                operation, {}, f"A's list: expected 200, got {response.status_code} {response.text[:200]}"
            )

    async def filter_ids(self, operation: Operation) -> None:
        """B's id in a filter: the same answer as an id that does not exist."""
        own = self.mine.first_ids()
        for name in (q for q in operation.query_params if q in ID_FILTERS):
            nowhere = await self._answer(operation, own, {**query_for(operation), name: NO_SUCH_ID}, None)
            for theirs in self.theirs.ids[ID_FILTERS[name]]:
                answer = await self._answer(operation, own, {**query_for(operation), name: theirs}, None)
                if answer != nowhere:
                    self.fail(operation, {name: theirs}, f"{answer} differs from an unknown id's {nowhere}")

    async def body_ids(self, operation: Operation) -> None:
        """B's accounts named in the body: the same answer as accounts that do not exist."""
        own = self.mine.first_ids()
        theirs = {**own, **{name: self.theirs.ids[name][0] for name in BODY_IDS}}
        nowhere = {**own, **{name: f"{NO_SUCH_ID}-{name}" for name in BODY_IDS}}
        expected = await self._answer(operation, own, query_for(operation), body_for(operation, nowhere))
        answer = await self._answer(operation, own, query_for(operation), body_for(operation, theirs))
        if answer != expected:
            self.fail(operation, theirs, f"{answer} differs from unknown accounts' {expected}")

    async def client_ids(self, operation: Operation) -> None:
        """A create with B's id as its client-supplied id makes A's own resource, as a fresh id does
        (ids are scoped to their ledger; a conflict would tell B's id exists), and A reads back what
        it made, not B's (a cache keyed by id alone would serve B's)."""
        own = self.mine.first_ids()
        if operation.path not in CLIENT_IDS:
            self.fail(operation, "id", "takes a client-supplied id: add it to CLIENT_IDS")
            return
        read = self.read_of(operation.path)
        body = body_for(operation, own)
        for theirs in self.theirs.ids[CLIENT_IDS[operation.path]]:
            made = await self.call(operation, own, query_for(operation), {**body, "id": theirs})
            fresh = await self.call(operation, own, query_for(operation), {**body, "id": f"{theirs}-fresh"})
            if (made.status_code, fresh.status_code) != (201, 201):
                self.fail(operation, {"id": theirs}, f"{made.text[:200]}; with a fresh id {fresh.text[:200]}")
                continue
            again = await self.call(read, {read.path_params[0]: theirs}, {}, None)
            if again.status_code != 200 or again.json() != made.json():
                self.fail(read, theirs, f"A reads {again.text[:200]}, not what it made {made.text[:200]}")

    def read_of(self, collection: str) -> Operation:
        """The ``GET {collection}/{id}`` of the inventory."""
        reads = [
            o
            for o in self.inventory
            if o.method == "GET"
            and o.path.startswith(f"{collection}/{{")
            and o.path.count("/") == collection.count("/") + 1
        ]
        assert len(reads) == 1, f"no single read of one item of {collection}: {reads}"
        return reads[0]

    async def replays(self) -> None:
        """B's POSTs sent again by A with B's Idempotency-Keys: answered as with fresh keys, never
        with B's stored answers (idempotency keys are scoped to their ledger)."""
        for sent in self.theirs.posts:
            answers = []
            for key in (sent.idempotency_key, f"{sent.idempotency_key}-fresh"):
                response = await self.client.post(
                    sent.path, json=sent.body, headers={**self.headers, "Idempotency-Key": key}
                )
                self.calls += 1
                shown = [i for i in self.their_ids if i in response.text and i not in repr(sent)]
                if shown or response.headers.get("idempotent-replayed"):
                    self.failures.append(f"POST {sent.path} with B's Idempotency-Key: B's answer {shown}")
                body = response.json() if response.content else {}
                answers.append(
                    (response.status_code, body.get("code") if response.status_code >= 400 else None)
                )
            if answers[0] != answers[1]:
                self.failures.append(
                    f"POST {sent.path}: B's Idempotency-Key {answers[0]}, a fresh one {answers[1]}"
                )

    async def still_theirs(self) -> list[str]:
        """B reads each of its resources that A made a namesake of, and must get its own (what B's
        creation answered: id, name, legs, ...). Run after the last snapshot: B's key is used."""
        wrong = []
        for collection, kind in CLIENT_IDS.items():
            read = self.read_of(collection)
            for theirs in self.theirs.ids[kind]:
                if theirs not in self.theirs.made:
                    continue
                made = self.theirs.made[theirs]
                url = read.url({read.path_params[0]: theirs})
                response = await self.client.get(url, headers=self.theirs.headers("read"))
                found = response.json()
                if response.status_code != 200 or {k: found.get(k) for k in IDENTITY if k in made} != {
                    k: made[k] for k in IDENTITY if k in made
                }:
                    wrong.append(f"B reads {url}: {response.text[:200]}")
        return wrong

    async def _answer(
        self, operation: Operation, ids: dict[str, str], query: dict[str, str], body: Any
    ) -> tuple[int, Any, list[str]]:
        """What an answer says that must not depend on whose the id is: the status, the listed data,
        and every problem code in it — of each item of a batch too, and of a queued batch's
        results once its worker has finished it."""
        response = await self.call(operation, ids, query, body)
        found = response.json() if response.content else None
        if response.status_code == 202 and isinstance(found, dict):
            found = await self._finished(operation, found["id"])
        data = found.get("data") if isinstance(found, dict) else None
        return response.status_code, data, _codes(found)

    async def _finished(self, operation: Operation, queued_id: str) -> Any:
        """The resource a 202 queued, read until no worker still has it (``status``)."""
        read = self.read_of(operation.path)
        url = read.url({read.path_params[0]: queued_id})
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            response = await self.client.get(url, headers={**self.headers, **STRONG})
            found = response.json()
            if found.get("status") not in ("queued", "processing"):
                return found
            assert time.monotonic() < deadline, f"{url} still {found.get('status')}"
            await asyncio.sleep(0.02)


def _codes(found: Any) -> list[str]:
    """Every ``code`` in a JSON answer, at any depth, in order."""
    if isinstance(found, dict):
        own = [found["code"]] if isinstance(found.get("code"), str) else []
        return own + [c for key, value in found.items() if key != "code" for c in _codes(value)]
    if isinstance(found, list):
        return [c for value in found for c in _codes(value)]
    return []


# The count in the test id, from the committed document; the printed one is the served document's.
COUNT = sum(len(o.path_params) > 0 for o in committed_operations() if o.access in KEYED)


@pytest.mark.parametrize("routes", [COUNT], ids=[f"{COUNT}-routes-with-ids"])
async def test_a_key_of_one_ledger_finds_and_changes_nothing_of_another(
    backend: str, tmp_path: Path, routes: int, record_property: Callable[[str, object], None]
) -> None:
    async with matrix_app(tmp_path) as (tally, client):
        inventory = operations((await client.get("/openapi.json")).json())
        mine = await populated_ledger(client, "a")
        theirs = await populated_ledger(client, "b")
        await statements_of_today(tally)
        assert not _unknown_names(inventory, theirs.ids), "place these parameters in the matrix"
        await tally.key_usage.flush(tally.database)  # B's keys are not used again from here
        before = ledger_rows(tmp_path, theirs.ledger_id)
        held = ("accounts", "transfers", "webhooks", "statements", "audit_events", "transfer_batches")
        assert all(before[table] for table in held), {table: len(before[table]) for table in held}

        matrix = Matrix(client, inventory, mine, theirs)
        keyed = [o for o in inventory if o.access in KEYED and o.access is not Access.ROOT]
        for operation in keyed:
            if operation.path_params:
                if operation.method == "GET":
                    await matrix.own_ids(operation)
                await matrix.path_ids(operation)
            elif operation.method == "GET":
                await matrix.listing(operation)
            await matrix.filter_ids(operation)
            if placeholders(BODIES.get(operation.operation_id)) & BODY_IDS:
                await matrix.body_ids(operation)
        await matrix.replays()
        for operation in keyed:  # last: from here A has resources with B's ids
            if operation.method == "POST" and "id" in operation.body_fields:
                await matrix.client_ids(operation)
        await tally.key_usage.flush(tally.database)
        after = ledger_rows(tmp_path, theirs.ledger_id)
        mixed_up = await matrix.still_theirs()
    with_ids = sum(bool(o.path_params) for o in keyed)
    summary = f"tenant isolation: {with_ids} routes with ids; {matrix.calls} calls by ledger A's key"
    print(f"\n{summary}")
    record_property("summary", f"{summary} ({backend})")
    assert not matrix.failures, f"{len(matrix.failures)} failures:\n" + "\n".join(matrix.failures)
    changed = [table for table in before if before[table] != after[table]]
    assert not changed, f"B's rows changed in {changed}"
    assert not mixed_up, "\n".join(mixed_up)
