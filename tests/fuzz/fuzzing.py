"""What the fuzz tests share: the committed document, a real server with keys, the checks, the budget.

The fuzzer reads ``docs/openapi.json`` (the committed document; ``tests/api/test_openapi.py`` checks
it is the one the code serves) and sends what it generates to a real ``tally serve`` process. Each
request carries the credentials its operation declares (``x-tally-access``): the root key for
root and key routes, one key of a fresh ledger with the ``admin``, ``read`` and ``write`` scopes for
ledger routes, nothing for public and ops routes; every POST gets a fresh ``Idempotency-Key``. So
what is fuzzed is mostly the input past authentication, which is where a crash would hide; the
negative cases that spoil the credentials on purpose are sent as generated (``FuzzTarget.prepare``).

Examples per operation and generation mode, and scenarios per stateful run: ``TALLY_FUZZ_EXAMPLES``
(default 15). Runs are derandomized (the same cases each run, so CI is stable) unless
``TALLY_FUZZ_RANDOM=1``: then each run draws new ones.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tally.api.problems import BY_CODE
from tally.api.routing import ACCESS_KEY, Access
from tally.harness.tally_server import TallyServer, start_tally
from tests.support import BACKENDS, ROOT, ROOT_KEY, bearer

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
DEFAULT_EXAMPLES = 15
PROBLEM_JSON = "application/problem+json"


def examples() -> int:
    """Examples per operation and generation mode (``TALLY_FUZZ_EXAMPLES``, default 15)."""
    return int(os.environ.get("TALLY_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))


def hypothesis_settings(max_examples: int, **extra: Any) -> settings:
    """Bounded, quiet about slow data and filtering, reproducible unless ``TALLY_FUZZ_RANDOM=1``."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=os.environ.get("TALLY_FUZZ_RANDOM") != "1",
        suppress_health_check=list(HealthCheck),
        **extra,
    )


def load_schema() -> Any:
    """The committed document; any 4xx (Tally's 413 and 431 too) counts as refusing malformed input."""
    schema = schemathesis.openapi.from_path(str(DOCUMENT))
    schema.config.checks.negative_data_rejection.expected_statuses = ["4xx", "5xx"]
    return schema


def problem_details(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every error is ``application/problem+json`` whose ``code`` is in the problem registry."""
    if response.status_code < 400:
        return None
    content_type = next(iter(response.headers.get("content-type", [])), "")
    assert content_type.startswith(PROBLEM_JSON), (
        f"{response.status_code} answered as {content_type!r}, not {PROBLEM_JSON}"
    )
    body = response.json()
    assert isinstance(body, dict), f"a problem is a JSON object, not {body!r}"
    code = body.get("code")
    assert code in BY_CODE, f"problem code {code!r} is not in the registry (tally.api.problems)"
    assert body.get("status") == response.status_code, (
        f"problem status {body.get('status')} in a {response.status_code}"
    )
    assert body.get("type") == f"/problems/{code}", f"problem type {body.get('type')!r} for code {code!r}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    problem_details,
]


@dataclass
class FuzzTarget:
    """A running server, the credentials each kind of operation is called with, and what was sent."""

    server: TallyServer
    ledger_key: str
    cases: int = 0
    token: str | None = None  # the last Tally-Consistency-Token, sent back to read our own writes

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def prepare(self, case: Case[Any]) -> dict[str, str]:
        """Make ``case`` ready to send; return the headers to send with it.

        The headers: the credentials ``case``'s operation declares, an Idempotency-Key on a POST,
        and the last consistency token (API.md: a client reads its own writes by sending it back).
        A negative case that left out or spoilt the credentials on purpose is sent as generated: it
        must be refused (401), which ``negative_data_rejection`` checks. A valid body gets the
        values a generator cannot guess (``ANCHORS``), so that it can succeed and the links from
        what it creates lead somewhere: a simple transfer moves money between the two funded
        accounts, a webhook targets a loopback port the server may call.
        """
        self.cases += 1
        access = Access(case.operation.definition.raw[ACCESS_KEY])
        headers: dict[str, str] = {}
        spoilt = case.operation.schema.is_security_param_negated(case)
        if access in (Access.ROOT, Access.KEYS) and not spoilt:
            headers.update(ROOT)
        elif access in (Access.READ, Access.WRITE, Access.ADMIN) and not spoilt:
            headers.update(bearer(self.ledger_key))
        if case.operation.method.lower() == "post":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        if self.token is not None:
            headers["Tally-Consistency-Token"] = self.token
        route = (case.operation.method.lower(), case.operation.path)
        if route in ANCHORS and _is_valid_simple_body(case) and isinstance(case.body, dict):
            filled = {
                name: value for name, value in FILLED.get(route, {}).items() if case.body.get(name) is None
            }
            case.body = {**case.body, **filled, **ANCHORS[route]}
        return headers

    def observe(self, response: Response) -> None:
        """Keep the consistency token of ``response``, if it has one."""
        token = response.headers.get("tally-consistency-token")
        if token:
            self.token = token[0]


FUNDED = {"debit_account_id": "fuzz-world", "credit_account_id": "fuzz-wallet", "currency": "USD"}
WEBHOOK_HOST = "127.0.0.1"  # TALLY_WEBHOOK_ALLOWED_HOSTS; port 9 (discard) refuses deliveries at once
ANCHORS: dict[tuple[str, str], dict[str, str]] = {
    ("post", "/v1/transfers"): FUNDED,
    ("post", "/v1/webhooks"): {"url": f"http://{WEBHOOK_HOST}:9/fuzz"},
}
# Fields the schema lets a generator leave out or null that the simple form needs (API.md).
FILLED: dict[tuple[str, str], dict[str, Any]] = {("post", "/v1/transfers"): {"amount": 100}}


def _is_valid_simple_body(case: Case[Any]) -> bool:
    """A body of the positive mode, as an object, not a multi-leg transfer."""
    positive = case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE
    return positive and isinstance(case.body, dict) and case.body.get("legs") is None


@contextmanager
def fuzz_target(directory: Path) -> Iterator[FuzzTarget]:
    """A real ``tally serve`` on the current backend, with a ledger, its admin+read+write key, and
    the ``FUNDED`` accounts in USD (``fuzz-world`` debit-normal and unbounded, ``fuzz-wallet``)."""
    url, replicas = BACKENDS.urls(directory)
    env = {
        "TALLY_DATABASE_URL": url,
        "TALLY_REPLICA_URLS": ",".join(replicas),
        "TALLY_ROOT_KEY": ROOT_KEY,
        "TALLY_LOG_FORMAT": "json",
        "TALLY_JOB_SCHEDULE": "off",
        "TALLY_WEBHOOK_ALLOWED_HOSTS": WEBHOOK_HOST,
    }
    server = start_tally(directory, env)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            ledger = client.post("/v1/ledgers", json={"name": "fuzz"}, headers=ROOT)
            assert ledger.status_code == 201, ledger.text
            ledger_id = ledger.json()["id"]
            key = client.post(
                f"/v1/ledgers/{ledger_id}/keys",
                json={"name": "fuzz", "scopes": ["admin", "read", "write"]},
                headers=ROOT,
            )
            assert key.status_code == 201, key.text
            headers = bearer(key.json()["key"])
            for account in (
                {"id": FUNDED["debit_account_id"], "normal_balance": "debit", "min_balance": None},
                {"id": FUNDED["credit_account_id"]},
            ):
                opened = client.post("/v1/accounts", json={**account, "currency": "USD"}, headers=headers)
                assert opened.status_code == 201, opened.text
        yield FuzzTarget(server, key.json()["key"])
    finally:
        server.stop()
