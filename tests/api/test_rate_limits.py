"""Rate limits per API key (ADR 0029), through the app, on the in-process backend.

Specifications:
- each key has its own quota; past it, 429 ``rate_limited`` with ``Retry-After`` and the
  ``RateLimit`` / ``RateLimit-Policy`` headers, and the other keys are unaffected;
- the root key counts as one key, ``root``;
- the limit is checked after authentication and scope and before the body is read;
- a refused key passes again once its window has moved on;
- ``TALLY_RATE_LIMIT=off`` disables limits; routes without a key are never limited.

Quotas are per day here (``5/day``) so that the test never straddles a window boundary, where the
sliding window counter's estimate may let one more request through; the recovery test alone uses a
one-second window, and waits for the key to pass again rather than for a set time.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, asgi_client, assert_problem, new_ledger, settings_for

QUOTA = 5
DAILY = f"{QUOTA}/day"
POLICY = f'"default";q={QUOTA};w=86400'
RATE_LIMIT = re.compile(r'^"default";r=0;t=(\d+)$')
POLICY_FORM = re.compile(r'^"default";q=\d+;w=\d+$')


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings_for(tmp_path, rate_limit=DAILY)) as c:
        yield c


async def _spend(client: httpx.AsyncClient, headers: dict[str, str], requests: int = QUOTA) -> None:
    for _ in range(requests):
        response = await client.get("/v1/accounts", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-policy"] == POLICY


def _assert_rate_limited(response: httpx.Response) -> int:
    """A 429 ``rate_limited`` problem with its headers; returns ``Retry-After``."""
    body = assert_problem(response, 429, "rate_limited")
    assert body["detail"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    assert POLICY_FORM.match(response.headers["ratelimit-policy"]), response.headers["ratelimit-policy"]
    match = RATE_LIMIT.match(response.headers["ratelimit"])
    assert match is not None, response.headers["ratelimit"]
    assert int(match.group(1)) == retry_after
    return retry_after


async def test_a_key_past_its_quota_gets_429_rate_limited_with_retry_after_and_ratelimit_headers(
    limited: httpx.AsyncClient,
) -> None:
    keys = await new_ledger(limited)
    await _spend(limited, keys.read)

    refused = await limited.get("/v1/accounts", headers=keys.read)

    _assert_rate_limited(refused)
    assert refused.headers["ratelimit-policy"] == POLICY
    metrics = (await limited.get("/metrics")).text
    assert 'tally_rate_limit_decisions_total{backend="memory",result="limited"} 1.0' in metrics
    assert 'tally_rate_limit_decisions_total{backend="memory",result="allowed"}' in metrics


async def test_other_keys_keep_their_own_quota(limited: httpx.AsyncClient) -> None:
    keys = await new_ledger(limited)
    await _spend(limited, keys.write)
    _assert_rate_limited(await limited.get("/v1/accounts", headers=keys.write))

    assert (await limited.get("/v1/accounts", headers=keys.read)).status_code == 200
    assert (await limited.get(f"/v1/ledgers/{keys.ledger_id}/keys", headers=keys.admin)).status_code == 200


async def test_the_root_key_counts_as_one_key(limited: httpx.AsyncClient) -> None:
    await new_ledger(limited)  # the root key's first four requests: a ledger and three keys
    assert (await limited.post("/v1/ledgers", json={"name": "fifth"}, headers=ROOT)).status_code == 201

    _assert_rate_limited(await limited.post("/v1/ledgers", json={"name": "sixth"}, headers=ROOT))


async def test_the_limit_comes_after_authentication_and_scope_and_before_the_body(
    limited: httpx.AsyncClient,
) -> None:
    keys = await new_ledger(limited)
    # Refused for scope: counted against nothing.
    for _ in range(QUOTA + 1):
        forbidden = await limited.post("/v1/accounts", json={"currency": "USD"}, headers=keys.read)
        assert_problem(forbidden, 403, "forbidden")
    await _spend(limited, keys.read)

    assert_problem(await limited.get("/v1/accounts"), 401, "unauthenticated")
    assert_problem(await limited.post("/v1/accounts", json={}, headers=keys.read), 403, "forbidden")
    await _spend(limited, keys.write)
    _assert_rate_limited(await limited.post("/v1/accounts", content=b"{not json", headers=keys.write))
    _assert_rate_limited(await limited.get("/v1/accounts?limit=0", headers=keys.write))


async def test_a_refused_key_passes_again_once_its_window_has_moved_on(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path, rate_limit=f"{QUOTA}/second")) as client:
        keys = await new_ledger(client)
        answers = [await client.get("/v1/accounts", headers=keys.read) for _ in range(4 * QUOTA)]
        refused = [answer for answer in answers if answer.status_code == 429]
        assert refused, "a key sending four times its quota at once is refused"
        retry_after = _assert_rate_limited(refused[-1])

        for _ in range(20):  # generous: the window is one second and Retry-After says how long
            await asyncio.sleep(retry_after)
            again = await client.get("/v1/accounts", headers=keys.read)
            if again.status_code == 200:
                break
            retry_after = _assert_rate_limited(again)
        assert again.status_code == 200, again.text


async def test_off_disables_rate_limits(tmp_path: Path) -> None:
    async with asgi_client(settings_for(tmp_path, rate_limit="off")) as client:
        keys = await new_ledger(client)
        for _ in range(4 * QUOTA):
            response = await client.get("/v1/accounts", headers=keys.read)
            assert response.status_code == 200, response.text
            assert "ratelimit-policy" not in response.headers
        assert "tally_rate_limit_decisions_total{" not in (await client.get("/metrics")).text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/problems/rate_limited"])
async def test_routes_without_a_key_are_never_limited(limited: httpx.AsyncClient, path: str) -> None:
    for _ in range(4 * QUOTA):
        response = await limited.get(path)
        assert response.status_code == 200, response.text
        assert "ratelimit-policy" not in response.headers
