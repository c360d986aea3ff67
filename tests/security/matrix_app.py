"""The app both matrices call: in process (ASGI), on the test's backend, with the ops token set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tally.bootstrap import Tally
from tests.security.principals import OPS_TOKEN
from tests.support import serving_in_process, settings_for


@asynccontextmanager
async def matrix_app(directory: Path) -> AsyncIterator[tuple[Tally, httpx.AsyncClient]]:
    """A fresh Tally on ``directory``'s database and a client of it.

    The ops token is set so operations routes are guarded. Holds are not swept, no batch job is
    scheduled and key usage is written only when a test flushes it (``tally.key_usage.flush``), so
    nothing changes a ledger behind the matrix's back.
    """
    tally = Tally(
        settings_for(
            directory,
            ops_token=OPS_TOKEN,
            secret_key_file=directory / "tally.key",
            hold_sweep_seconds=3600.0,
            job_schedule=[],
            key_usage_flush_ms=3_600_000,
        )
    )
    async with serving_in_process(tally) as client:
        yield tally, client


def problem_error(response: httpx.Response) -> str | None:
    """Why an error answer is not problem+json with a ``code``; ``None`` when it is (or no error)."""
    if response.status_code < 400:
        return None
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return f"not problem+json: {response.headers.get('content-type')}"
    body: Any = response.json()
    if not isinstance(body, dict) or not body.get("code"):
        return f"no code: {response.text[:200]}"
    return None
