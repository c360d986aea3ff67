"""SQLite statements on the ``sqlite3`` cursor: compiled by SQLAlchemy once, run without its execution layer.

A transfer runs about eight statements, and SQLAlchemy Core spent more CPU around each than
SQLite spent running it: an execution context, its parameter processing, event dispatch, a
``CursorResult`` and its metadata, every time (ADR 0039: a quarter of the server's CPU per
transfer). Here SQLAlchemy still builds and compiles every statement (its compiled cache, the
same SQL text, the same bind and result type processing), and a plan kept per compiled form does
the rest with a handful of calls: positional parameters through the bind processors, the cursor,
the rows through the result processors, an ``IteratorResult`` the repositories read as before.

What stays the same for callers:
- the ``before_cursor_execute`` and ``after_cursor_execute`` events fire with the statement and its
  parameters (statement timing and the tests' statement counters listen to them; the execution
  context they are handed is ``None``);
- a driver error is raised as SQLAlchemy's wrapped form (``OperationalError``, ``IntegrityError``);
- ``rowcount`` is on the result.

Anything the plan does not cover goes through ``Connection.execute`` unchanged: text statements,
Python-side column defaults, executemany with RETURNING or with expanding parameters, a schema
translate map, execution options, result columns matched by name, and a connection outside a
transaction (SQLAlchemy's autobegin, whose ``begin`` event issues Tally's BEGIN).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Executable, Result
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import compiler
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import LRUCache

CACHE_SIZE = 500  # compiled forms kept (SQLAlchemy's own default for an engine)
_NO_ROWS = SimpleResultMetaData([])


class Rows(IteratorResult[Any]):
    """The rows of one statement, read like SQLAlchemy's result, with the cursor's ``rowcount``."""

    def __init__(self, metadata: SimpleResultMetaData | None, rows: list[Any], rowcount: int) -> None:
        super().__init__(metadata or _NO_ROWS, iter(rows))
        self.rowcount = rowcount
        self.returns_rows = metadata is not None


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to run one compiled form: its parameters in order, and the shape of its rows."""

    positions: Sequence[str]
    processors: Mapping[str, Callable[[Any], Any]]
    expanding: bool  # IN lists: the SQL text and positions depend on each call's values
    metadata: SimpleResultMetaData | None  # None: the statement returns no rows


class SqliteStatements:
    """Runs Core statements for one SQLite engine's connections; see the module docstring."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: LRUCache[Any, Any] = LRUCache(CACHE_SIZE)
        self._plans: dict[int, tuple[SQLCompiler, _Plan | None]] = {}
        self._linting = dialect.compiler_linting | compiler.WARN_LINTING

    def execute(self, conn: Connection, statement: Executable, parameters: Any = None) -> Result[Any]:
        if (
            not isinstance(statement, ClauseElement)
            or statement._execution_options
            or not conn.in_transaction()
        ):
            return conn.execute(statement, parameters)
        many = isinstance(parameters, list) and len(parameters) > 1
        if parameters is None or parameters == []:
            sets: list[Mapping[str, Any]] = []
        elif isinstance(parameters, list):
            sets = parameters
        else:
            sets = [parameters]
        compiled, extracted, collected, _ = statement._compile_w_cache(
            self._dialect,
            compiled_cache=self._compiled,
            column_keys=sorted(sets[0]) if sets else [],
            for_executemany=many,
            schema_translate_map=None,
            linting=self._linting,
        )
        plan = self._plan(compiled, many)
        if plan is None or not isinstance(compiled, SQLCompiler):
            return conn.execute(statement, parameters)
        values = [
            compiled.construct_params(
                one,
                escape_names=False,
                _group_number=number,
                extracted_parameters=extracted,
                _collected_params=collected,
            )
            for number, one in enumerate(sets or [{}])
        ]
        sql = compiled.string
        positions, processors = plan.positions, plan.processors
        if plan.expanding:
            expanded = compiled._process_parameters_for_postcompile(values[0])
            sql, positions = expanded.statement, expanded.positiontup or ()
            processors = {**processors, **expanded.processors}
        rows = [
            tuple(processors[key](given[key]) if key in processors else given[key] for key in positions)
            for given in values
        ]
        return _run(conn, sql, rows if many else rows[0], many, plan.metadata)

    def _plan(self, compiled: Any, many: bool) -> _Plan | None:
        known = self._plans.get(id(compiled))
        if known is not None and known[0] is compiled:
            return known[1]
        plan = _plan_of(compiled, self._dialect, many)
        if len(self._plans) >= 2 * CACHE_SIZE:
            self._plans.clear()  # compiled forms the LRU cache dropped; the live ones come back
        self._plans[id(compiled)] = (compiled, plan)
        return plan


def _plan_of(compiled: Any, dialect: Dialect, many: bool) -> _Plan | None:
    if not isinstance(compiled, SQLCompiler) or not compiled.positional or compiled.isplaintext:
        return None
    if compiled.insert_prefetch or compiled.update_prefetch or compiled.schema_translate_map:
        return None  # Python-side defaults, schema translation: SQLAlchemy's own path
    expanding = bool(compiled.literal_execute_params or compiled.post_compile_params)
    dml = compiled.isinsert or compiled.isupdate or compiled.isdelete
    returning = dml and bool(compiled.effective_returning)
    if many and (expanding or returning or compiled._insertmanyvalues):
        return None
    columns = compiled._result_columns
    if not columns:
        if returning or not dml:
            return None  # rows whose shape only the cursor knows
        metadata = None
    else:
        if not compiled._ordered_columns or compiled._textual_ordered_columns:
            return None  # matched by name, not position
        if compiled._ad_hoc_textual or compiled._loose_column_name_matching:
            return None
        keys = [column[0] for column in columns]
        if len(set(keys)) != len(keys):
            return None  # SQLAlchemy refuses an ambiguous name on access; keep its behaviour
        processors = [column[3]._cached_result_processor(dialect, None) for column in columns]
        metadata = SimpleResultMetaData(
            keys,
            extra=[column[2] for column in columns],
            _processors=processors if any(processors) else None,
        )
    return _Plan(
        compiled.positiontup or (),
        cast("Mapping[str, Callable[[Any], Any]]", compiled._bind_processors),  # none is a tuple here
        expanding,
        metadata,
    )


def driver_of(conn: Connection) -> sqlite3.Connection:
    """The ``sqlite3`` connection under ``conn``."""
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise TypeError(f"not a sqlite3 connection (closed?): {driver!r}")
    return driver


def _run(
    conn: Connection, sql: str, parameters: Any, many: bool, metadata: SimpleResultMetaData | None
) -> Rows:
    cursor = driver_of(conn).cursor()
    events = conn._has_events or conn.engine._has_events
    if events:
        conn.dispatch.before_cursor_execute(conn, cursor, sql, parameters, None, many)
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if metadata is not None else []
    except sqlite3.Error as error:
        cursor.close()
        raise DBAPIError.instance(sql, parameters, error, sqlite3.Error, dialect=conn.dialect) from error
    if events:
        conn.dispatch.after_cursor_execute(conn, cursor, sql, parameters, None, many)
    rowcount = cursor.rowcount
    cursor.close()
    return Rows(metadata, rows, rowcount)
