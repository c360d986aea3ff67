"""Statements on the sqlite3 cursor (``store.sqlite_statements``) answer exactly as SQLAlchemy does.

Each statement runs twice on a real SQLite file, in one transaction: through ``SqliteStatements``
and through SQLAlchemy's own ``Connection.execute``; rows, keys, row counts, errors and the cursor
events must agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.sql.expression import Executable

from tally.store.sqlite_statements import SqliteStatements
from tally.store.statement_plans import Rows, StatementPlans

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("blob", LargeBinary),
    Column("amount", Integer, nullable=False),
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path / 'statements.db'}")
    metadata.create_all(engine)
    with engine.connect() as connection:
        connection.begin()
        connection.execute(insert(things), SEED)
        yield connection
        connection.rollback()
    engine.dispose()


def both(conn: Connection, statement: Executable, parameters: Any = None) -> tuple[Any, Any]:
    """The statement through SqliteStatements, then through SQLAlchemy, inside one savepoint each."""
    statements = SqliteStatements(conn.dialect)
    with conn.begin_nested() as savepoint:
        fast = statements.execute(conn, statement, parameters)
        assert isinstance(fast, Rows), "the statement should take the cursor path"
        fast_answer = _answer(fast)
        savepoint.rollback()
    with conn.begin_nested() as savepoint:
        slow_answer = _answer(conn.execute(statement, parameters))
        savepoint.rollback()
    return fast_answer, slow_answer


def each_call(conn: Connection, statement: Executable, calls: list[Any]) -> list[tuple[Any, Any]]:
    """Each call's answer through one SqliteStatements (so reused statements get bound), then
    through SQLAlchemy, each inside a savepoint of its own."""
    statements = SqliteStatements(conn.dialect)
    answers = []
    for parameters in calls:
        with conn.begin_nested() as savepoint:
            fast = _answer(statements.execute(conn, statement, parameters))
            savepoint.rollback()
        with conn.begin_nested() as savepoint:
            slow = _answer(conn.execute(statement, parameters))
            savepoint.rollback()
        answers.append((fast, slow))
    return answers


def _answer(result: Any) -> Any:
    if not result.returns_rows:
        return ("rowcount", result.rowcount)
    rows = result.all()
    return (list(result.keys()), [tuple(row) for row in rows], [row._asdict() for row in rows])


# Every kind of statement the plans cover; each is compared with SQLAlchemy (here and on PostgreSQL).
STATEMENTS: dict[str, Executable] = {
    "table": select(things).order_by(things.c.pk),
    "columns": select(things.c.id, things.c.blob).where(things.c.amount > 15).order_by(things.c.id.desc()),
    "functions": select(func.count().label("n"), func.max(things.c.amount)),
    "in": select(things.c.id).where(things.c.id.in_(["t1", "t3", "nope"])).order_by(things.c.id),
    "empty-in": select(things.c.id).where(things.c.id.in_([])),
    "returning": insert(things)
    .values(id="new", blob=b"\x00\xff", amount=7)
    .returning(things.c.pk, things.c.id),
    "multi-values": insert(things)
    .values([{"id": "m1", "amount": 1}, {"id": "m2", "amount": 2}])
    .returning(things.c.id),
    "rowcount": update(things).where(things.c.amount >= 30).values(amount=things.c.amount + 1),
    "update-returning": update(things)
    .where(things.c.id == "t2")
    .values(amount=0)
    .returning(things.c.amount, things.c.blob),
}
SEED = [{"id": f"t{n}", "blob": bytes([n]) * 3, "amount": n * 10} for n in range(6)]


@pytest.mark.parametrize("statement", STATEMENTS.values(), ids=STATEMENTS.keys())
def test_rows_keys_and_counts_match_sqlalchemy(conn: Connection, statement: Executable) -> None:
    fast, slow = both(conn, statement)
    assert fast == slow


def test_executemany_and_an_update_by_expression(conn: Connection) -> None:
    rows = [{"id": "x1", "blob": b"a", "amount": 1}, {"id": "x2", "blob": None, "amount": 2}]
    fast, slow = both(conn, insert(things), rows)
    assert fast == slow == ("rowcount", 2)
    statements = SqliteStatements(conn.dialect)
    single = update(things).where(things.c.id == "t1").values(amount=things.c.amount + 5)
    updated = statements.execute(conn, single)
    assert isinstance(updated, Rows)
    assert updated.rowcount == 1
    assert conn.execute(select(things.c.amount).where(things.c.id == "t1")).scalar_one() == 15


def test_row_access_by_name_index_and_column(conn: Connection) -> None:
    statements = SqliteStatements(conn.dialect)
    row = statements.execute(conn, select(things).where(things.c.id == "t4")).one()
    assert (row.id, row._mapping["amount"], row._mapping[things.c.blob]) == ("t4", 40, b"\x04" * 3)
    assert tuple(row)[3] == 40
    assert statements.execute(conn, select(things.c.pk).order_by(things.c.pk)).scalars().all() == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert statements.execute(conn, select(things.c.pk).where(things.c.id == "none")).first() is None


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(conn: Connection) -> None:
    statements = SqliteStatements(conn.dialect)
    duplicate = insert(things).values(id="t1", amount=1)
    with conn.begin_nested(), pytest.raises(IntegrityError) as fast:
        statements.execute(conn, duplicate)
    with conn.begin_nested(), pytest.raises(IntegrityError) as slow:
        conn.execute(duplicate)
    assert type(fast.value.orig) is type(slow.value.orig)
    assert str(fast.value.orig) == str(slow.value.orig)


def test_cursor_events_fire_around_each_statement(conn: Connection) -> None:
    seen: list[tuple[str, str, Any, bool]] = []

    def before(_c: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        if "things" in statement:  # not the savepoints
            seen.append(("before", statement, parameters, many))

    def after(_c: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        if "things" in statement:
            seen.append(("after", statement, parameters, many))

    event.listen(conn.engine, "before_cursor_execute", before)
    event.listen(conn.engine, "after_cursor_execute", after)
    statements = SqliteStatements(conn.dialect)
    statements.execute(conn, select(things.c.id).where(things.c.amount == 20))
    statements.execute(conn, insert(things), [{"id": "e1", "amount": 1}, {"id": "e2", "amount": 2}])
    with conn.begin_nested(), pytest.raises(IntegrityError):
        statements.execute(conn, insert(things).values(id="t1", amount=1))
    sql = "SELECT things.id \nFROM things \nWHERE things.amount = ?"
    assert seen[:2] == [("before", sql, (20,), False), ("after", sql, (20,), False)]
    assert [(kind, many) for kind, _, _, many in seen[2:4]] == [("before", True), ("after", True)]
    assert seen[3][2] == [("e1", 1), ("e2", 2)]
    # A failed statement is announced and never reported done (as SQLAlchemy does).
    assert [kind for kind, *_ in seen[4:]] == ["before"]


def test_what_the_cursor_path_does_not_cover_goes_through_sqlalchemy(conn: Connection) -> None:
    statements = SqliteStatements(conn.dialect)
    assert not isinstance(statements.execute(conn, text("SELECT 1")), Rows)
    returning_many = insert(things).returning(things.c.pk)
    many = [{"id": "r1", "amount": 1}, {"id": "r2", "amount": 2}]
    answered = statements.execute(conn, returning_many, many)
    assert not isinstance(answered, Rows)
    assert len(answered.all()) == 2
    conn.rollback()  # outside a transaction, SQLAlchemy's autobegin (and its begin event) runs
    assert not conn.in_transaction()
    assert not isinstance(statements.execute(conn, select(things.c.pk)), Rows)
    assert conn.in_transaction()


# Statements built once and run again and again, as the repositories' are: from the second call with
# the same keys they are bound, and their parameters no longer pass through SQLAlchemy.
REUSED: dict[str, tuple[Executable, list[Any]]] = {
    "select by bind": (
        select(things.c.id, things.c.amount).where(things.c.id == bindparam("id")),
        [{"id": "t1"}, {"id": "t2"}, {"id": "t3"}, {"id": "none"}],
    ),
    "held value beside a bind": (
        select(things.c.id).where(things.c.amount > 15, things.c.id != bindparam("id")).order_by(things.c.id),
        [{"id": "t2"}, {"id": "t3"}, {"id": "t4"}],
    ),
    "bind with a default": (
        select(things.c.id).where(things.c.amount >= bindparam("least", value=30)).order_by(things.c.id),
        [{}, {}, {"least": 40}, {"least": 50}, {}],
    ),
    "insert by keys": (
        insert(things).returning(things.c.pk, things.c.blob),
        [{"id": "a", "amount": 1}, {"id": "b", "amount": 2, "blob": b"x"}, {"id": "c", "amount": 3}],
    ),
    "insert with values held": (
        insert(things).values(amount=bindparam("n"), blob=b"held"),
        [{"n": 1, "id": "h1"}, {"n": 2, "id": "h2"}, {"n": 3, "id": "h3"}],
    ),
    "executemany update": (
        update(things).where(things.c.id == bindparam("u_id")).values(amount=bindparam("u_amount")),
        [[{"u_id": "t1", "u_amount": 1}, {"u_id": "t2", "u_amount": 2}]] * 3,
    ),
    "executemany insert": (
        insert(things),
        [[{"id": f"m{n}", "amount": n}, {"id": f"n{n}", "amount": n}] for n in range(3)],
    ),
    "in list": (
        select(things.c.id).where(things.c.id.in_(bindparam("ids", expanding=True))).order_by(things.c.id),
        [
            {"ids": ids}
            for ids in (
                ["t1"],
                ["t1", "t2"],
                [],
                ["t3", "t4", "t5"],
                ["t4", "t0"],
                ["t5"],
                [],
                ("t2", "t9", "t1"),
            )
        ],
    ),
    "held in list": (
        select(things.c.id).where(things.c.id.in_(["t1", "t3", "x"]), things.c.amount > bindparam("n")),
        [{"n": 0}, {"n": 10}, {"n": 20}, {"n": 30}],
    ),
    "in list beside a bind": (
        select(things.c.id)
        .where(things.c.amount < bindparam("n"), things.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(things.c.id),
        [{"n": n, "ids": ids} for n in (15, 35) for ids in (["t1", "t3"], ["t0", "t2", "t4"], ["t1", "t3"])],
    ),
}


@pytest.mark.parametrize("case", REUSED.values(), ids=REUSED.keys())
def test_a_reused_statement_answers_as_sqlalchemy_on_every_call(conn: Connection, case: Any) -> None:
    statement, calls = case
    for fast, slow in each_call(conn, statement, calls):
        assert fast == slow


def test_a_reused_statement_is_bound_from_its_second_call(conn: Connection, monkeypatch: Any) -> None:
    compiled: list[Any] = []
    real = StatementPlans._compile

    def counting(self: StatementPlans, statement: Any, *rest: Any) -> Any:
        compiled.append(statement)
        return real(self, statement, *rest)

    monkeypatch.setattr(StatementPlans, "_compile", counting)
    by_id = select(things.c.amount).where(things.c.id == bindparam("id"))
    statements = SqliteStatements(conn.dialect)
    amounts = [statements.execute(conn, by_id, {"id": f"t{n}"}).scalar_one() for n in range(6)]
    assert amounts == [0, 10, 20, 30, 40, 50]
    assert len(compiled) == 2  # the first call; the second binds it and is answered through the binding
    # Built again per call, a statement is compiled on every call.
    for n in range(3):
        statements.execute(conn, select(things.c.amount).where(things.c.id == f"t{n}"))
    assert len(compiled) == 5
    # With an IN list: bound for each length of the list the first time it comes.
    in_list = select(things.c.id).where(things.c.id.in_(bindparam("ids", expanding=True)))
    for ids in (["t1"], ["t1"], ["t2"], ["t1", "t2"], ["t3", "t4"], ["t5"]):
        assert statements.execute(conn, in_list, {"ids": ids}).scalars().all() == ids
    assert len(compiled) == 5 + 1 + 1 + 1  # first call; bound; a new length bound


def test_a_bound_statement_falls_back_when_the_keys_differ(conn: Connection) -> None:
    many = (
        update(things).where(things.c.id == bindparam("u_id")).values(amount=bindparam("u_amount", value=99))
    )
    same = [{"u_id": "t1", "u_amount": 1}, {"u_id": "t2", "u_amount": 2}]
    ragged = [{"u_id": "t1", "u_amount": 1}, {"u_id": "t2"}]
    for fast, slow in each_call(conn, many, [same, same, ragged, same]):
        assert fast == slow
    statements = SqliteStatements(conn.dialect)
    required = select(things.c.id).where(things.c.id == bindparam("id"))
    statements.execute(conn, required, {"id": "t1"})
    statements.execute(conn, required, {"id": "t1"})
    with pytest.raises(InvalidRequestError, match="A value is required for bind parameter 'id'"):
        statements.execute(conn, required, {"other": "t1"})
