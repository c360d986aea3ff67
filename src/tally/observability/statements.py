"""The shape of a SQL statement: a stable short name for metric labels and logs, never its values.

Tally's statements are SQLAlchemy Core constructs compiled with bound parameters, so their text
already carries ``?`` where values go. The shape goes further, so that no value can reach a label
or a log line even from a statement written with literals, and so that statements differing only
in how many values they carry are one shape:

- comments are dropped and whitespace collapsed;
- string, blob and number literals become ``?``;
- a parenthesised list of placeholders, ``(?, ?, ?)``, becomes ``(?…)``, and a run of such
  lists (a multi-row ``VALUES``) becomes one.

The name is ``<verb> <table> <fingerprint>``, e.g. ``select accounts 3fa91c``: the verb and the
table say what it is at a glance; six hex digits of the normalised text's BLAKE2 tell apart the
shapes that share both, and stay the same from run to run and process to process.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_LITERALS = re.compile(r"'(?:[^']|'')*'|\b[xX]'[0-9A-Fa-f]*'|(?<![\w$.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_SPACE = re.compile(r"\s+")
_PLACEHOLDER = re.compile(r"\?|:\w+|\$\d+|%\(\w+\)s|%s")
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_RUN = re.compile(r"\(\?…\)(?:\s*,\s*\(\?…\))+")
_TARGET = {
    "select": re.compile(r"\bfrom\s+[\"`]?(\w+)", re.IGNORECASE),
    "insert": re.compile(r"\binto\s+[\"`]?(\w+)", re.IGNORECASE),
    "update": re.compile(r"^update\s+(?:or\s+\w+\s+)?[\"`]?(\w+)", re.IGNORECASE),
    "delete": re.compile(r"\bfrom\s+[\"`]?(\w+)", re.IGNORECASE),
    "with": re.compile(r"\bfrom\s+[\"`]?(\w+)", re.IGNORECASE),
    "pragma": re.compile(r"^pragma\s+(\w+)", re.IGNORECASE),
    "create": re.compile(r"\b(?:table|index|view)\s+(?:if\s+not\s+exists\s+)?[\"`]?(\w+)", re.IGNORECASE),
}


@dataclass(frozen=True, slots=True)
class Shape:
    name: str  # "select accounts 3fa91c": the label value
    text: str  # the normalised statement, values replaced by "?"


def normalise(sql: str) -> str:
    """``sql`` without comments, literals or varying placeholder lists (see the module docstring)."""
    text = _COMMENTS.sub(" ", sql)
    text = _LITERALS.sub("?", text)
    text = _PLACEHOLDER.sub("?", text)
    text = _SPACE.sub(" ", text).strip()
    text = _LIST.sub("(?…)", text)
    return _RUN.sub("(?…)", text)


@lru_cache(maxsize=2048)
def shape_of(sql: str) -> Shape:
    """The shape of one statement's text. Cached: a process runs few distinct texts, many times."""
    text = normalise(sql)
    verb = text.split(" ", 1)[0].lower() if text else "empty"
    target = _TARGET.get(verb)
    found = target.search(text) if target is not None else None
    table = found.group(1).lower() if found is not None else "-"
    fingerprint = hashlib.blake2b(text.encode(), digest_size=3).hexdigest()
    if not verb.isalpha():
        verb = "other"
    return Shape(f"{verb} {table} {fingerprint}", text)
