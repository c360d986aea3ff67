"""The log redactor: the second line of defence that keeps secrets off log lines.

Invariants, in plain words:
- a Tally key (root or ledger, well formed or not), a webhook secret, or a credential after an
  HTTP auth scheme is blanked wherever it sits in a line: the message, any field, nested values;
- a field named like a credential is blanked whatever it holds;
- a configured literal secret (ops token, root key) is blanked even in a shape no pattern knows;
- the kind of secret stays readable (``tally_key_[REDACTED]``), and everything else is untouched.
"""

from __future__ import annotations

from typing import Any

import pytest

from tally.domain.keys import new_secret
from tally.observability.redaction import REDACTED, Redactor

KEY = new_secret("key")
ROOT = new_secret("root")
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+/K0a=="


def redact(**event: Any) -> dict[str, Any]:
    return dict(Redactor(["ops-token-0123456789"])(None, "info", event))


@pytest.mark.parametrize(
    "secret",
    [KEY, ROOT, KEY[:20], "tally_key_abc", ROOT + "extra", WHSEC, "whsec_x"],
    # Fixed ids: the keys are random, and every test process must collect the same tests.
    ids=["key", "root", "key-prefix", "short-key", "root-extra", "whsec", "short-whsec"],
)
def test_a_secret_anywhere_in_a_message_is_blanked(secret: str) -> None:
    line = redact(
        event=f"refused {secret} at once", detail=[{"input": f"k={secret}"}], nested={"a": (secret,)}
    )
    assert secret not in repr(line)
    assert REDACTED in line["event"]


@pytest.mark.parametrize(
    "header",
    [f"Bearer {KEY}", "Bearer opaque-token-value", "bearer abc.def.ghi", "Basic dGFsbHk6c2VjcmV0"],
    ids=["bearer-key", "bearer-opaque", "bearer-lowercase", "basic"],
)
def test_a_credential_after_an_auth_scheme_is_blanked(header: str) -> None:
    credential = header.split(" ", 1)[1]
    line = redact(event="headers", headers=f"host: x, authorization: {header}")
    assert credential not in line["headers"]
    assert header.split(" ", 1)[0] in line["headers"]


@pytest.mark.parametrize("field", ["authorization", "Authorization", "token", "secret", "password", "cookie"])
def test_a_field_named_like_a_credential_is_blanked(field: str) -> None:
    assert redact(event="x", **{field: "anything at all"})[field] == REDACTED


def test_a_configured_literal_secret_is_blanked_in_any_shape() -> None:
    line = redact(event="token was ops-token-0123456789!", url="/dashboard?t=ops-token-0123456789")
    assert "ops-token-0123456789" not in repr(line)


def test_the_kind_of_a_blanked_secret_stays_readable_and_the_rest_is_untouched() -> None:
    line = redact(event=f"key {KEY} refused", route="/v1/accounts/{account_id}", status=401, ok=False)
    assert line["event"] == f"key tally_key_{REDACTED} refused"
    assert line["route"] == "/v1/accounts/{account_id}"
    assert line["status"] == 401
    assert line["ok"] is False


def test_short_literals_are_not_scanned_for() -> None:
    # A literal of a few characters would blank ordinary words in every line.
    assert Redactor(["abc"]).text("abcdef") == "abcdef"
