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
from schemathesis import Case, GenerationMode, Response
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
# Not Schemathesis' positive_data_acceptance: JSON Schema cannot say every rule of a valid request
# ("*" stands alone among event types, a webhook URL is https), so a schema-valid body may be a 422.
STATEFUL_CHECKS = [*CHECKS, use_after_free, ensure_resource_availability]


def _machine(target: FuzzTarget, session: requests.Session) -> Any:
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
            case.validate_response(
                response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs, recorder=self.recorder
            )

    return TallyStateMachine


def test_linked_calls_keep_the_contract_from_create_to_use(
    tmp_path: Path, backend: str, record_property: Any
) -> None:
    with fuzz_target(tmp_path) as target, requests.Session() as session:
        try:
            _machine(target, session).run(settings=hypothesis_settings(examples(), stateful_step_count=STEPS))
        finally:
            record_property("summary", f"fuzz: {backend} stateful {target.cases} cases")
        assert target.server.running(), target.server.log_tail()
