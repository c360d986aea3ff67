"""Encryption at rest of the secrets Tally must read back: webhook signing secrets (ADR 0025).

API keys are stored as hashes (ADR 0008); a webhook secret cannot be, because every delivery is
signed with it. It is sealed with AES-256-GCM under one key per installation, with the owning
record's id as associated data, so a sealed secret copied onto another row does not open.

The key is ``TALLY_SECRET_KEY`` (base64 of 32 bytes). Unset, it is read from ``TALLY_SECRET_KEY_FILE``
(default ``tally.key`` in the working directory), which is created, mode 0600, the first time a
secret is sealed. Every process that delivers webhooks needs the same key: a PostgreSQL
deployment of several hosts must set ``TALLY_SECRET_KEY``. Losing the key loses the secrets; the
subscriptions must then be created again.

Sealed layout: ``0x01 | nonce (12 bytes) | ciphertext and tag``; the first byte leaves room for
another format or key later.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tally.config import Settings
from tally.observability.logging import get_logger

KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE_BYTES = 12
_log = get_logger("tally.secretbox")


class UnreadableSecret(ValueError):
    """A sealed secret that this key cannot open: another key sealed it, or it was altered."""


def decode_key(text: str) -> bytes:
    """The 32 key bytes of a base64 (standard or URL-safe) text. ``ValueError`` otherwise."""
    cleaned = text.strip()
    try:
        key = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as error:
        raise ValueError("The secret key must be base64.") from error
    if len(key) != KEY_BYTES:
        raise ValueError(f"The secret key must be {KEY_BYTES} bytes (base64 of {KEY_BYTES} random bytes).")
    return key


def new_key_text() -> str:
    """A fresh key for ``TALLY_SECRET_KEY``."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


class SecretBox:
    """Seals and opens secrets with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"A secret box key is {KEY_BYTES} bytes.")
        self._aead = AESGCM(key)

    def seal(self, secret: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)  # random 96-bit nonces: safe far beyond our volumes
        return _VERSION + nonce + self._aead.encrypt(nonce, secret, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise UnreadableSecret("Not a sealed secret of this format.")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, context)
        except InvalidTag:
            raise UnreadableSecret(
                "The secret does not open with this key (was TALLY_SECRET_KEY changed?)."
            ) from None


class ConfiguredSecretBox:
    """The installation's ``SecretBox``, its key loaded (or created) at first use, not at start.

    A process that never seals or opens a secret never touches the key file.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._box: SecretBox | None = None

    def seal(self, secret: bytes, context: bytes) -> bytes:
        return self._loaded().seal(secret, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        return self._loaded().open(sealed, context)

    def _loaded(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox(_key_of(self._settings))
        return self._box


def _key_of(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return decode_key(settings.secret_key.get_secret_value())
    path = settings.secret_key_file or Path.cwd() / "tally.key"
    if not settings.database_url.startswith("sqlite"):
        _log.warning(
            "TALLY_SECRET_KEY is unset: webhook secrets use the key file of this host only; "
            "set TALLY_SECRET_KEY to the same value on every Tally process",
            key_file=str(path),
        )
    return load_or_create_key(path)


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; created (mode 0600) when there is none. Processes racing agree on one."""
    try:
        return decode_key(path.read_text())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: the link fails if another
    # process got there first, and nobody ever reads a half-written key.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(new_key_text() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
            _log.info("generated the secret key for webhook secrets", key_file=str(path))
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        temporary.unlink(missing_ok=True)
    return decode_key(path.read_text())
