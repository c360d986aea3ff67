"""Every operation of the OpenAPI document, called by every kind of caller, answers as API.md says.

The operations come from the served ``/openapi.json``, so a new route is in the matrix the moment it
exists, and one without ``x-tally-access`` fails it. Each operation is called by: no key, a
malformed key, a key with a bad checksum, a revoked key, an expired key, a key rotated with no
overlap, the root key, a ``read``, a ``write`` and an ``admin`` key of the ledger the call names,
and the ops token (as a bearer and as ``?token=``). The first six get 401 ``unauthenticated``; a
key without the access level's scope gets 403 ``forbidden``; a sufficient one gets anything but 401
and 403 (the call may still be 404 or 409 — the matrix is about who, not what). Every error answer
is problem+json with a ``code``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tally.store.codec import to_micros
from tests.security.examples import body_for, headers_for, query_for
from tests.security.inventory import Operation, committed_operations, operations
from tests.security.matrix_app import matrix_app, problem_error
from tests.security.principals import Outcome, Principal, principals
from tests.security.tenant import Tenant, populated_ledger
from tests.support import BACKENDS, ROOT, ROOT_KEY, bearer

# The count in the test id, from the committed document; the printed one is the served document's
# (test_openapi checks they are the same).
CALLERS = 12  # len(principals(...))
CASES = len(committed_operations()) * CALLERS


async def _callers(client: httpx.AsyncClient, directory: Path, tenant: Tenant) -> list[Principal]:
    """The matrix's callers. The revoked, expired and rotated keys are admin keys, so only their
    state refuses them; the revoked and the rotated one were used first, so a cached key must
    learn of the change."""
    made: dict[str, dict[str, str]] = {}
    keys = f"/v1/ledgers/{tenant.ledger_id}/keys"
    for name in ("revoked", "expired", "rotated"):
        response = await client.post(keys, json={"name": name, "scopes": ["admin"]}, headers=ROOT)
        assert response.status_code == 201, response.text
        made[name] = response.json()
    for name in ("revoked", "rotated"):
        used = await client.get("/v1/accounts", headers=bearer(made[name]["key"]))
        assert used.status_code == 200, used.text
    assert (await client.delete(f"{keys}/{made['revoked']['id']}", headers=ROOT)).status_code == 204
    rotate = f"{keys}/{made['rotated']['id']}/rotate"
    rotated = await client.post(rotate, json={"overlap_seconds": 0}, headers=ROOT)
    assert rotated.status_code == 201, rotated.text
    # Expired a minute ago, written straight to the database: no clock to wait for.
    expired_at = to_micros(datetime.now(UTC) - timedelta(minutes=1))
    BACKENDS.rows(
        directory, "UPDATE api_keys SET expires_at = ? WHERE id = ?", (expired_at, made["expired"]["id"])
    )
    return principals(
        root=ROOT_KEY,
        read=tenant.secrets["read"],
        write=tenant.secrets["write"],
        admin=tenant.secrets["admin"],
        refused={name: made[name]["key"] for name in ("revoked", "expired", "rotated")},
    )


async def _mismatch(
    client: httpx.AsyncClient, operation: Operation, caller: Principal, ids: dict[str, str]
) -> str | None:
    """Call ``operation`` as ``caller``; what is wrong with the answer, or ``None``."""
    try:
        url = operation.url(ids)
    except KeyError as unknown:
        return f"path parameter {unknown} has no value in the matrix: add it to the tenant's ids"
    response = await client.request(
        operation.method,
        url,
        params={**query_for(operation), **caller.query},
        json=body_for(operation, ids),
        headers={**headers_for(operation), **caller.headers},
    )
    expected = caller.expects(operation.access)
    wrong = problem_error(response)
    if expected is Outcome.ALLOWED:
        if response.status_code in (401, 403):
            wrong = f"refused although allowed: {response.status_code} {response.text[:200]}"
    elif response.status_code != expected.status:
        wrong = (
            f"expected {expected.status} {expected.value}, got {response.status_code} {response.text[:200]}"
        )
    elif response.json().get("code") != expected.value:
        wrong = f"expected code {expected.value}: {response.text[:200]}"
    return None if wrong is None else f"{operation} [{operation.access}] as {caller.name}: {wrong}"


@pytest.mark.parametrize("cases", [CASES], ids=[f"{CASES}-cases"])
async def test_every_operation_answers_every_caller_as_documented(
    backend: str, tmp_path: Path, cases: int, record_property: Callable[[str, object], None]
) -> None:
    async with matrix_app(tmp_path) as (_, client):
        served = (await client.get("/openapi.json")).json()
        inventory = operations(served)
        tenant = await populated_ledger(client, "scopes")
        callers = await _callers(client, tmp_path, tenant)
        ids = {**tenant.first_ids(), "code": "not_found"}  # ``code``: a problem page (public)
        failures = [
            wrong
            for operation in inventory
            for caller in callers
            if (wrong := await _mismatch(client, operation, caller, ids)) is not None
        ]
    total = len(inventory) * len(callers)
    summary = f"scope matrix: {len(inventory)} operations x {len(callers)} callers = {total} cases"
    print(f"\n{summary}")
    record_property("summary", f"{summary} ({backend})")
    assert not failures, f"{len(failures)} of {total} cases:\n" + "\n".join(failures)
