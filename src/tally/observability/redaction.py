"""Secrets never reach a log line: a structlog processor that blanks them wherever they appear.

Tally logs no headers and no bodies, so a secret should never be handed to a logger in the first
place. This processor is the second line: it runs on every line, Tally's and the libraries'
(uvicorn's go through the same chain, see ``observability.logging``), just before rendering, and
replaces

- API keys, ``tally_root_…`` and ``tally_key_…`` (ADR 0008 gives them a prefix so that they can be
  spotted), well formed or not;
- webhook secrets, ``whsec_…``;
- credentials after an HTTP auth scheme (``Bearer …``, ``Basic …``), as in a logged header;
- the value of any field named like a credential (``authorization``, ``token``, ``secret``, …);
- any literal secret the composition root names (the ops token and root key from settings, which
  an operator may have chosen in a shape the patterns above do not know).

Redaction keeps the prefix (``tally_key_[REDACTED]``) so that a line still says which kind of secret
was there, which is what someone tracing a leak needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

REDACTED = "[REDACTED]"
_SECRET = re.compile(
    r"(?P<key>tally_(?:root|key)_)[0-9A-Za-z]*"
    r"|(?P<whsec>whsec_)[A-Za-z0-9+/=_-]*"
    r"|(?P<scheme>\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC)\s+)[^\s\"',;}\]]+"
)
_CREDENTIAL_FIELDS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "proxy_authorization",
        "cookie",
        "set-cookie",
        "set_cookie",
        "password",
        "secret",
        "token",
        "api_key",
        "apikey",
        "root_key",
        "ops_token",
        "webhook_secret",
    }
)
# A literal shorter than this is not worth scanning for: it would blank ordinary words.
_MIN_LITERAL = 8
# Every match of _SECRET contains one of these; checking for them first spares the regular
# expression on almost every line (it runs on every line, so its cost is the logging's).
_MARKERS = ("tally_", "whsec_", "earer", "EARER", "asic", "ASIC")


def _mask(match: re.Match[str]) -> str:
    prefix = match.group("key") or match.group("whsec") or match.group("scheme")
    return f"{prefix}{REDACTED}"


class Redactor:
    """The processor: ``Redactor(literals)(logger, method, event) -> event`` with secrets blanked."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        self._literals = tuple(sorted({s for s in literals if len(s) >= _MIN_LITERAL}, key=len, reverse=True))
        self._names: dict[object, bool] = {}

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        # The common case, checked without a regular expression: plain values, no credential-named
        # field, and no marker of a secret anywhere in the line's strings.
        texts: list[str] = []
        plain = True
        for name, value in event.items():
            if isinstance(value, str):
                texts.append(value)
            elif not (value is None or isinstance(value, int | float)):
                plain = False
            if self._credential_named(name):
                plain = False
        if plain and not self._suspect("\x00".join(texts)):
            return event
        for name, value in event.items():
            event[name] = self._clean(name, value)
        return event

    def _credential_named(self, name: object) -> bool:
        known = self._names.get(name)
        if known is None:
            known = isinstance(name, str) and name.lower() in _CREDENTIAL_FIELDS
            if len(self._names) < 1024:  # field names are few; this only bounds a misuse
                self._names[name] = known
        return known

    def _suspect(self, value: str) -> bool:
        return any(marker in value for marker in _MARKERS) or any(lit in value for lit in self._literals)

    def _clean(self, name: object, value: Any) -> Any:
        if self._credential_named(name) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(None, v) for v in value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        return value

    def text(self, value: str) -> str:
        """``value`` with every secret in it blanked."""
        if not self._suspect(value):
            return value
        for literal in self._literals:
            if literal in value:
                value = value.replace(literal, REDACTED)
        return _SECRET.sub(_mask, value)
