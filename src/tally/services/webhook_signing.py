"""Standard Webhooks signatures (https://www.standardwebhooks.com, ADR 0025). Pure: no I/O.

A secret is ``whsec_`` followed by the base64 of random bytes; the signing key is those bytes.
Each delivery carries three headers:

- ``webhook-id``: the message id, the same on every retry (receivers dedupe on it);
- ``webhook-timestamp``: Unix seconds when the attempt was signed (receivers refuse old ones);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, possibly several
  space-separated during a rotation (Tally sends one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64


def new_secret() -> str:
    """A fresh signing secret, ``whsec_<base64 of 32 random bytes>``."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret. ``ValueError`` when it is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("A webhook secret starts with whsec_.")
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error as error:
        raise ValueError("A webhook secret is whsec_ followed by base64.") from error


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
