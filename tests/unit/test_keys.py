"""Secrets carry a prefix and a checksum; only their hashes are kept; scopes imply lesser ones."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tally.domain.keys import Scope, effective_scopes, hash_secret, new_secret, secret_kind

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize("kind", ["root", "key"])
def test_a_new_secret_has_its_prefix_30_random_chars_and_a_6_char_checksum(kind: str) -> None:
    secret = new_secret(kind)
    assert re.fullmatch(rf"tally_{kind}_[0-9A-Za-z]{{36}}", secret), secret
    assert secret_kind(secret) == kind


def test_new_secrets_do_not_repeat() -> None:
    assert len({new_secret("key") for _ in range(100)}) == 100


def _typo(secret: str, index: int) -> str:
    original = secret[index]
    replacement = _ALPHABET[(_ALPHABET.index(original) + 1) % len(_ALPHABET)]
    return secret[:index] + replacement + secret[index + 1 :]


@pytest.mark.parametrize("offset", [0, 7, 29, 30, 35])
def test_a_one_character_typo_fails_the_checksum(offset: int) -> None:
    secret = new_secret("key")
    index = len("tally_key_") + offset
    mistyped = _typo(secret, index)
    assert mistyped != secret
    assert secret_kind(mistyped) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.replace("tally_key_", "tally_admin_", 1),
        lambda s: s.replace("tally_key_", "tly_key_", 1),
        lambda s: s.replace("tally_key_", "TALLY_key_", 1),
        lambda s: s[:-1],
        lambda s: s + "0",
        lambda s: s + "\n",
    ],
)
def test_a_wrong_prefix_or_length_is_refused(mangle: Callable[[str], str]) -> None:
    assert secret_kind(mangle(new_secret("key"))) is None


def test_the_kind_is_told_by_the_prefix_and_the_hash_tells_the_kinds_apart() -> None:
    secret = new_secret("key")
    as_root = secret.replace("tally_key_", "tally_root_", 1)
    # The checksum covers the random part only, so a swapped prefix is well formed; it is the
    # hash compared at authentication that refuses it.
    assert secret_kind(as_root) == "root"
    assert hash_secret(secret) != hash_secret(as_root)


def test_hashing_a_secret_is_deterministic_and_differs_between_secrets() -> None:
    one, two = new_secret("key"), new_secret("key")
    assert hash_secret(one) == hash_secret(one)
    assert len(hash_secret(one)) == 32
    assert hash_secret(one) != hash_secret(two)
    assert one.encode() not in hash_secret(one)


@pytest.mark.parametrize(
    ("granted", "effective"),
    [
        (set(), set()),
        ({Scope.READ}, {Scope.READ}),
        ({Scope.WRITE}, {Scope.READ, Scope.WRITE}),
        ({Scope.ADMIN}, {Scope.READ, Scope.WRITE, Scope.ADMIN}),
        ({Scope.READ, Scope.WRITE}, {Scope.READ, Scope.WRITE}),
    ],
)
def test_write_implies_read_and_admin_implies_both(granted: set[Scope], effective: set[Scope]) -> None:
    assert effective_scopes(frozenset(granted)) == frozenset(effective)
