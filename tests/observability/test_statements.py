"""Statement shapes: what a query's label and slow-query line may say about it.

Invariants, in plain words:
- a shape never carries a value: literals and placeholders all read ``?``;
- statements that differ only in values, or in how many values an IN list or VALUES holds, are
  one shape with one name;
- the name is ``<verb> <table> <6 hex>``, the same in every process and run.
"""

from __future__ import annotations

import re

import pytest

from tally.observability.statements import normalise, shape_of

NAME = re.compile(r"^[a-z]+ [a-z0-9_-]+ [0-9a-f]{6}$")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM accounts WHERE id = 'alice' AND amount > 100",
            "SELECT * FROM accounts WHERE id = ? AND amount > ?",
        ),
        ("SELECT a FROM t WHERE x IN (?, ?, ?)", "SELECT a FROM t WHERE x IN (?…)"),
        (
            "INSERT INTO entries (a, b) VALUES (?, ?), (?, ?), (?, ?)",
            "INSERT INTO entries (a, b) VALUES (?…)",
        ),
        (
            "UPDATE accounts SET posted = -5 WHERE pk = 3 -- a comment",
            "UPDATE accounts SET posted = ? WHERE pk = ?",
        ),
        (
            "select  x\n\tfrom /* why */ t where k = x'00ff' and y = 'it''s'",
            "select x from t where k = ? and y = ?",
        ),
        (
            "SELECT anon_1.pk FROM t AS anon_1 WHERE t1.c = :param_1",
            "SELECT anon_1.pk FROM t AS anon_1 WHERE t1.c = ?",
        ),
    ],
)
def test_a_normalised_statement_keeps_its_structure_and_drops_every_value(sql: str, expected: str) -> None:
    assert normalise(sql) == expected


def test_statements_differing_only_in_values_share_one_shape() -> None:
    one = shape_of("SELECT * FROM accounts WHERE ledger_id = 'led_1' AND id IN ('a', 'b')")
    other = shape_of("SELECT * FROM accounts WHERE ledger_id = 'led_2' AND id IN ('c', 'd', 'e', 'f')")
    assert one == other
    assert one.name.startswith("select accounts ")


def test_different_statements_on_one_table_have_different_names() -> None:
    by_id = shape_of("SELECT * FROM accounts WHERE id = ?")
    by_pk = shape_of("SELECT * FROM accounts WHERE pk = ?")
    assert by_id.name != by_pk.name


@pytest.mark.parametrize(
    ("sql", "verb_and_table"),
    [
        ("SELECT a FROM transfers WHERE pk = ?", "select transfers"),
        ('INSERT INTO "entries" (a) VALUES (?)', "insert entries"),
        ("UPDATE accounts SET a = ? WHERE pk = ?", "update accounts"),
        ("DELETE FROM idempotency WHERE expires_at < ?", "delete idempotency"),
        ("BEGIN IMMEDIATE", "begin -"),
        ("CREATE TABLE IF NOT EXISTS ledgers (id TEXT)", "create ledgers"),
        ('PRAGMA main.table_info("accounts")', "pragma main"),
    ],
)
def test_a_shape_is_named_by_verb_table_and_fingerprint(sql: str, verb_and_table: str) -> None:
    name = shape_of(sql).name
    assert NAME.fullmatch(name), name
    assert name.rsplit(" ", 1)[0] == verb_and_table


def test_a_shape_name_is_stable_across_processes() -> None:
    # A fixed expectation: the fingerprint is BLAKE2 of the text, not Python's salted hash().
    assert (
        shape_of("SELECT 1").name
        == "select - " + __import__("hashlib").blake2b(b"SELECT ?", digest_size=3).hexdigest()
    )
