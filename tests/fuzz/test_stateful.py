"""Sequences of calls that follow the document's links: what one operation creates, the next one uses.

Schemathesis builds a state machine from the OpenAPI links (``tally.api.openapi_links``): it opens an
account and then reads, changes and lists it with the id from the answer; it moves money and then
posts, voids or reverses that transfer; it creates a ledger, a key of it and revokes it. So the
fuzzer reaches the states a random id never finds. Each step keeps the stateless invariants (no
5xx, the documented answer, problem+json with a registered code) and Schemathesis' stateful ones
(what was created can be read; what was deleted is gone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import Phase
from hypothesis.errors import Flaky
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ensure_resource_availability, use_after_free

from tests.fuzz.fuzzing import (
    CHECKS,
    FuzzTarget,
    examples,
    fuzz_target,
    hypothesis_settings,
    load_schema,
)

pytestmark = pytest.mark.server

STEPS = 10  # calls per scenario at most
# No shrinking: the server keeps what earlier scenarios created, so a replay draws from other
# bundles and Hypothesis reports a flaky strategy instead of the failure; the first failure is shown.
PHASES = (Phase.explicit, Phase.generate)
RUNS = 3  # state machine runs at most, when Hypothesis stops one as flaky
# Not Schemathesis' positive_data_acceptance: JSON Schema cannot say every rule of a valid request
# ("*" stands alone among event types, a webhook URL is https), so a schema-valid body may be a 422.
KEY = "/v1/ledgers/{ledger_id}/keys/{key_id}"


def deleted_stays_gone(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Schemathesis' use_after_free, except under a key: its DELETE revokes it, and a revoked key
    stays readable, its usage too (API.md: listed with ``revoked_at``)."""
    if case.operation.path.startswith(KEY):
        return None
    return use_after_free(ctx, response, case)


STATEFUL_CHECKS = [*CHECKS, deleted_stays_gone, ensure_resource_availability]


def _machine(target: FuzzTarget, session: requests.Session, found: list[str]) -> Any:
    schema = load_schema()
    # Valid inputs only: malformed ones are the stateless run's, and they would end most scenarios
    # at their first step.
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])

    class TallyStateMachine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": target.base_url, "headers": target.prepare(case), "session": session}

        def after_call(self, response: Response, case: Case[Any]) -> None:
            super().after_call(response, case)
            target.observe(response)

        def validate_response(
            self, response: Response, case: Case[Any], additional_checks: Any = None, **kwargs: Any
        ) -> None:
            try:
                case.validate_response(
                    response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs, recorder=self.recorder
                )
            except FailureGroup as failure:
                found.append(str(failure))  # kept: Hypothesis' replay may end in Flaky instead
                raise

    return TallyStateMachine


def test_linked_calls_keep_the_contract_from_create_to_use(
    tmp_path: Path, backend: str, record_property: Any
) -> None:
    found: list[str] = []
    with fuzz_target(tmp_path) as target, requests.Session() as session:
        settings = hypothesis_settings(examples(), stateful_step_count=STEPS, phases=PHASES)
        try:
            for _ in range(RUNS):
                try:
                    _machine(target, session, found).run(settings=settings)
                    break
                except Flaky:
                    # The server keeps what earlier scenarios made, so choices that once led to one
                    # state lead to another and Hypothesis stops, calling it flaky. Schemathesis' own
                    # runner counts that a pass unless a check failed (``found``) and runs again.
                    if found:
                        break
        finally:
            record_property("summary", f"fuzz: {backend} stateful {target.cases} cases")
        assert target.server.running(), target.server.log_tail()
    assert not found, "\n\n".join(found)
