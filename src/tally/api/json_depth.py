"""How deep a JSON body nests, measured on its bytes before anything parses it.

A parser recurses once per level of nesting, and so do the validators behind it: a body of a
million ``[`` costs stack and time before any model could refuse it. ``TallyRoute`` refuses a body
nested deeper than ``MAX_JSON_DEPTH`` with 400 ``json_too_deep`` (after authentication, as it does
413) so that no parser sees it.

The depth counts the top-level value and every object or array inside it: ``{}`` is 1,
``{"a": [1]}`` is 2 — the way ``metadata``'s own limit counts (``schemas._check_metadata``).

The measure works on whole ``bytes`` operations (C loops), not a Python loop per byte: escaped
backslashes and quotes are removed, so every ``"`` left delimits a string; the text between the odd
and even quotes (the strings, whose brackets are not structure) is dropped; the brackets left become
+1 and -1, and the running sum's maximum is the depth. A body without more opening brackets than
the limit, the usual case, is answered by a count alone. A malformed body may measure anything; the
parser refuses it afterwards (400 ``invalid_json``) unless it measured too deep.
"""

from __future__ import annotations

from itertools import accumulate

# A valid body nests at most 8 levels (a batch: body, transfers, transfer, then metadata's 5); the
# bound leaves room so that metadata a few levels too deep still gets its own field error (422).
MAX_JSON_DEPTH = 64

_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes


def deeper_than(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body``, read as JSON, nests objects and arrays more than ``limit`` levels deep."""
    if body.count(b"[") + body.count(b"{") <= limit:  # brackets inside strings counted too: an upper bound
        return False
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    steps = outside_strings.translate(_STEPS, _NOT_BRACKETS)
    if steps.count(1) <= limit:
        return False
    return max(accumulate(memoryview(steps).cast("b"))) > limit
