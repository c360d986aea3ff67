"""Every operation of the committed document, fed generated valid and malformed input, on a real server.

Invariants, whatever the input: the server never answers 5xx; every answer has a status, content
type, headers and body the document declares for that operation; every error is
``application/problem+json`` with a ``code`` from the problem registry. Failures are collected across
operations (each one shrunk by Hypothesis to a minimal request with its curl line) and reported
together, so one run shows every finding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode

from tests.fuzz.fuzzing import CHECKS, FuzzTarget, examples, fuzz_target, hypothesis_settings, load_schema

pytestmark = pytest.mark.server

MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def _fuzz(operation: Any, mode: GenerationMode, target: FuzzTarget, session: requests.Session) -> None:
    @hypothesis_settings(examples())
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case[Any]) -> None:
        headers = target.prepare(case)
        response = case.call(base_url=target.base_url, session=session, headers=headers)
        target.observe(response)
        case.validate_response(
            response,
            checks=CHECKS,
            headers=headers,
            transport_kwargs={"base_url": target.base_url, "session": session, "headers": headers},
        )

    run()


def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(
    tmp_path: Path, backend: str, record_property: Any
) -> None:
    schema = load_schema()
    failures: list[str] = []
    with fuzz_target(tmp_path) as target, requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in MODES:
                try:
                    _fuzz(operation, mode, target, session)
                except Unsatisfiable:
                    pass  # nothing of this operation can be made invalid (no parameter, no body)
                except (Exception, BaseExceptionGroup) as failure:  # all reported at the end
                    failures.append(f"{operation.label} ({mode.value}):\n{failure}")
        record_property("summary", f"fuzz: {backend} stateless {target.cases} cases")
        assert target.server.running(), target.server.log_tail()
    assert not failures, "\n\n".join(failures)
