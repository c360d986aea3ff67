"""Pieces of request handling that the hot path computes without Starlette's helpers must agree with
what those helpers answer: an idempotency fingerprint stored once is compared on every retry, so its
path must never change form, and a body is JSON exactly when its media type says so."""

from __future__ import annotations

import email.message

import pytest
from starlette.requests import Request

from tally.api.replies import _url_path
from tally.api.shortcuts import _is_json

PATHS = ["/v1/transfers", "/v1/transfers/tr_1/post", "/v1/a?b#c\\d", "/v1/x%2Fy", "//v1/double", "/v1/é"]


@pytest.mark.parametrize("path", PATHS)
def test_the_fingerprint_path_is_starlettes_url_path(path: str) -> None:
    scope = {
        "type": "http",
        "path": path,
        "headers": [(b"host", b"tally.test")],
        "query_string": b"a=1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
    }
    request = Request(scope)
    assert _url_path(request) == request.url.path


def _parsed_is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/problem+json",
     "text/json", "application/jsonx", "text/plain", "multipart/form-data; boundary=x"],
)  # fmt: skip
def test_a_body_is_json_exactly_when_its_media_type_says_so(content_type: str) -> None:
    assert _is_json(content_type) is _parsed_is_json(content_type)
