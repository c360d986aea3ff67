"""Core statements prepared for a driver: compiled by SQLAlchemy once, run without its execution layer.

SQLAlchemy Core spends more CPU around a statement than the driver spends running it: an execution
context, its parameter processing, event dispatch, a ``CursorResult`` and its metadata, every
time; on PostgreSQL also a greenlet switch into the asyncio adapter and back (ADR 0039). Here
SQLAlchemy still builds and compiles every statement (its compiled cache, the same SQL text, the
same bind and result type processing), and a plan kept per compiled form does the rest: the
driver's parameters (positional for ``sqlite3``, named for psycopg) through the bind processors,
and the shape of the rows. The adapters' executors (``store.sqlite_statements``,
``store.postgres_statements``) run the prepared statement on their cursor and hand back ``Rows``,
an ``IteratorResult`` the repositories read as before (``all``, ``one``, ``first``, ``scalar``,
``scalars``, attribute access, ``rowcount``).

``prepare`` answers ``None`` for what the plan does not cover, which the executors send through
SQLAlchemy unchanged: text statements, Python-side column defaults, executemany with RETURNING or
with IN lists, ``insertmanyvalues``, a schema translate map, execution options, and result columns
matched by name or with duplicate names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Dialect, Executable
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.sql import compiler
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import LRUCache

CACHE_SIZE = 500  # compiled forms kept (SQLAlchemy's own default for an engine)
_NO_ROWS = SimpleResultMetaData([])
Processors = Mapping[str, Callable[[Any], Any]]


class Rows(IteratorResult[Any]):
    """The rows of one statement, read like SQLAlchemy's result, with the cursor's ``rowcount``."""

    def __init__(self, metadata: SimpleResultMetaData | None, rows: list[Any], rowcount: int) -> None:
        super().__init__(metadata or _NO_ROWS, iter(rows))
        self.rowcount = rowcount
        self.returns_rows = metadata is not None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement ready for the driver: ``parameters`` is one set, or a list of sets if ``many``."""

    sql: str
    parameters: Any
    many: bool
    metadata: SimpleResultMetaData | None  # None: the statement returns no rows


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to run one compiled form: its parameters, and the shape of its rows."""

    positions: Sequence[str] | None  # the order of a positional paramstyle; None: by name
    names: Mapping[str, str]  # a named paramstyle's escaped names
    processors: Processors
    expanding: bool  # IN lists: the SQL text and parameters depend on each call's values
    metadata: SimpleResultMetaData | None


class StatementPlans:
    """Prepares Core statements for one dialect's driver; see the module docstring."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: LRUCache[Any, Any] = LRUCache(CACHE_SIZE)
        self._plans: dict[int, tuple[SQLCompiler, _Plan | None]] = {}
        self._linting = dialect.compiler_linting | compiler.WARN_LINTING

    def prepare(self, statement: Executable, parameters: Any) -> Prepared | None:
        """The statement as the driver takes it, or ``None``: let SQLAlchemy run it."""
        if not isinstance(statement, ClauseElement) or statement._execution_options:
            return None
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
            return None
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
        sql, positions, processors = compiled.string, plan.positions, plan.processors
        if plan.expanding:  # rewrites values[0] in place, as SQLAlchemy's execution does
            expanded = compiled._process_parameters_for_postcompile(values[0])
            sql, processors = expanded.statement, {**processors, **expanded.processors}
            positions = expanded.positiontup if positions is not None else None
        if positions is not None:
            driver: list[Any] = [
                tuple(processors[key](given[key]) if key in processors else given[key] for key in positions)
                for given in values
            ]
        else:
            names = plan.names
            driver = [
                {
                    names.get(key, key): processors[key](value) if key in processors else value
                    for key, value in given.items()
                }
                for given in values
            ]
        return Prepared(sql, driver if many else driver[0], many, plan.metadata)

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
    if not isinstance(compiled, SQLCompiler) or compiled.isplaintext:
        return None
    if compiled.insert_prefetch or compiled.update_prefetch or compiled.schema_translate_map:
        return None  # Python-side defaults, schema translation: SQLAlchemy's own path
    expanding = bool(compiled.literal_execute_params or compiled.post_compile_params)
    dml = compiled.isinsert or compiled.isupdate or compiled.isdelete
    returning = dml and bool(compiled.effective_returning)
    if many and (expanding or returning or compiled._insertmanyvalues):
        return None
    metadata = _rows_of(compiled, dialect) if compiled._result_columns else None
    if metadata is None and (returning or not dml):
        return None  # rows whose shape only the cursor knows, or names SQLAlchemy would refuse
    return _Plan(
        compiled.positiontup or () if compiled.positional else None,
        compiled.escaped_bind_names or {},
        cast("Processors", compiled._bind_processors),  # none is a tuple here
        expanding,
        metadata,
    )


def _rows_of(compiled: SQLCompiler, dialect: Dialect) -> SimpleResultMetaData | None:
    """The keys and result processors of the rows, when they are matched by position."""
    if not compiled._ordered_columns or compiled._textual_ordered_columns:
        return None
    if compiled._ad_hoc_textual or compiled._loose_column_name_matching:
        return None
    columns = compiled._result_columns
    keys = [column[0] for column in columns]
    if len(set(keys)) != len(keys):
        return None  # SQLAlchemy refuses an ambiguous name on access; keep its behaviour
    processors = [column[3]._cached_result_processor(dialect, None) for column in columns]
    return SimpleResultMetaData(
        keys, extra=[column[2] for column in columns], _processors=processors if any(processors) else None
    )
