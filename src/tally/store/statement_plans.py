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

A statement object that comes back (the repositories build theirs once, at import) is bound the
second time it is seen with the same parameter keys: where each driver parameter comes from (a key
of the call's parameters, or a value the statement itself holds) and its bind processor. Later
calls skip SQLAlchemy's cache key lookup and ``construct_params`` and only pick their values.
A statement with IN lists is bound once per lengths of its lists (up to ``LENGTHS``). Not bound:
a bind whose value is computed per call, values rendered into the SQL text, IN lists of tuples.

``prepare`` answers ``None`` for what the plan does not cover, which the executors send through
SQLAlchemy unchanged: text statements, Python-side column defaults, executemany with RETURNING or
with IN lists, ``insertmanyvalues``, a schema translate map, execution options, and result columns
matched by name or with duplicate names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Dialect, Executable, exc
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.sql import compiler
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import LRUCache

CACHE_SIZE = 500  # compiled forms kept (SQLAlchemy's own default for an engine)
LENGTHS = 32  # bindings kept per statement with IN lists, one per lengths of its lists
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
    hidden: bool = False  # rows of an implicit RETURNING (SQLAlchemy's, for the primary key): not shown


@dataclass(frozen=True, slots=True)
class _Binding:
    """A statement object's driver parameters for one set of keys."""

    sql: str
    # Per driver parameter: the call's key (None: the value held here), the index in that key's
    # list (an IN list's item) or None, the value held, the bind processor.
    sources: tuple[tuple[str | None, int | None, Any, Callable[[Any], Any] | None], ...]
    names: tuple[str, ...] | None  # the named paramstyle's names, in the order of ``sources``
    metadata: SimpleResultMetaData | None
    hidden: bool
    lists: tuple[str, ...]  # the keys of IN lists: a binding holds one length of each
    lengths: dict[tuple[int, ...], _Binding]  # with ``lists``: the bindings for other lengths


_UNBOUND = object()  # a statement seen once with these keys
_UNBINDABLE = object()  # one that cannot be bound (a value computed per call, IN lists of tuples)
_Key = tuple[int, bool, tuple[str, ...]]  # the statement's id, executemany, the parameters' keys


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to run one compiled form: its parameters, and the shape of its rows."""

    positions: Sequence[str] | None  # the order of a positional paramstyle; None: by name
    names: Mapping[str, str]  # a named paramstyle's escaped names
    processors: Processors
    expanding: bool  # IN lists: the SQL text and parameters depend on each call's values
    metadata: SimpleResultMetaData | None
    hidden: bool


class StatementPlans:
    """Prepares Core statements for one dialect's driver; see the module docstring."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: LRUCache[Any, Any] = LRUCache(CACHE_SIZE)
        self._plans: dict[int, tuple[SQLCompiler, _Plan | None]] = {}
        self._bindings: dict[_Key, tuple[Executable, object]] = {}
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
        key: _Key = (id(statement), many, tuple(sets[0]) if sets else ())
        known = self._bindings.get(key)
        if known is None or known[0] is not statement:
            if len(self._bindings) >= 2 * CACHE_SIZE:
                self._bindings.clear()  # statements built per call; the reused ones come back
            self._bindings[key] = (statement, _UNBOUND)
            return self._prepare(statement, sets, many)
        binding: object | None = known[1]
        if binding is _UNBOUND:  # the second call: bound now, and answered through its binding
            binding = self._bind(statement, sets, many)
            if isinstance(binding, _Binding) and binding.lists:
                binding.lengths[tuple(len(sets[0][key]) for key in binding.lists)] = binding
            self._bindings[key] = (statement, binding)
        elif isinstance(binding, _Binding) and binding.lists:
            binding = self._of_lengths(binding, statement, sets)
        bound = _bound(binding, sets, many) if isinstance(binding, _Binding) else None
        return bound if bound is not None else self._prepare(statement, sets, many)

    def _of_lengths(
        self, first: _Binding, statement: ClauseElement, sets: list[Mapping[str, Any]]
    ) -> _Binding | None:
        """The binding of a statement with IN lists for this call's lists' lengths, bound on first
        use (up to ``LENGTHS`` of them)."""
        given = sets[0]
        if any(type(given[key]) not in (list, tuple) for key in first.lists):
            return None
        lengths = tuple(len(given[key]) for key in first.lists)
        known = first.lengths.get(lengths)
        if known is None and len(first.lengths) < LENGTHS:
            bound = self._bind(statement, sets, False)
            if isinstance(bound, _Binding):
                first.lengths[lengths] = known = bound
        return known

    def _compile(self, statement: ClauseElement, sets: list[Mapping[str, Any]], many: bool) -> Any:
        return statement._compile_w_cache(
            self._dialect,
            compiled_cache=self._compiled,
            column_keys=sorted(sets[0]) if sets else [],
            for_executemany=many,
            schema_translate_map=None,
            linting=self._linting,
        )

    def _prepare(
        self, statement: ClauseElement, sets: list[Mapping[str, Any]], many: bool
    ) -> Prepared | None:
        compiled, extracted, collected, _ = self._compile(statement, sets, many)
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
        sql, positions, processors, _ = _expanded(compiled, plan, values[0])
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
        return Prepared(sql, driver if many else driver[0], many, plan.metadata, plan.hidden)

    def _bind(self, statement: ClauseElement, sets: list[Mapping[str, Any]], many: bool) -> object:
        """Where each driver parameter of ``statement`` comes from, for calls with these keys (and,
        with IN lists, these lists' lengths): a ``_Binding``, or ``_UNBINDABLE``."""
        compiled, extracted, collected, _ = self._compile(statement, sets, many)
        plan = self._plan(compiled, many)
        if plan is None or not isinstance(compiled, SQLCompiler) or compiled.literal_execute_params:
            return _UNBINDABLE  # (values rendered into the SQL text: it changes with them)
        given = sets[0] if sets else {}
        try:
            values = compiled.construct_params(
                given, escape_names=False, extracted_parameters=extracted, _collected_params=collected
            )
        except exc.SQLAlchemyError:
            return _UNBINDABLE  # a required value is missing: SQLAlchemy says so on every call
        places: dict[str, tuple[str | None, int | None]] = {}  # (the call's key or None: held, list index)
        for bind, name in compiled.bind_names.items():
            if bind.key in given:
                places[name] = (bind.key, None)
            elif name in given:
                places[name] = (name, None)
            elif bind.callable:
                return _UNBINDABLE
            else:
                places[name] = (None, None)
        sql, order, processors, expansion = _expanded(compiled, plan, values)
        lists = tuple(key for name in expansion if (key := places[name][0]) is not None)
        for name, items in expansion.items():
            key = places[name][0]
            for index, item in enumerate(items):
                if key is not None and not _is_item(given[key], index, values[item]):
                    return _UNBINDABLE  # not a plain list of values (tuples, say)
                places[item] = (key, index) if key is not None else (None, None)
        names = list(values) if order is None else list(order)
        return _Binding(
            sql,
            tuple((*places[name], values[name], processors.get(name)) for name in names),
            None if order is not None else tuple(plan.names.get(name, name) for name in names),
            plan.metadata,
            plan.hidden,
            lists,
            {},
        )

    def _plan(self, compiled: Any, many: bool) -> _Plan | None:
        known = self._plans.get(id(compiled))
        if known is not None and known[0] is compiled:
            return known[1]
        plan = _plan_of(compiled, self._dialect, many)
        if len(self._plans) >= 2 * CACHE_SIZE:
            self._plans.clear()  # compiled forms the LRU cache dropped; the live ones come back
        self._plans[id(compiled)] = (compiled, plan)
        return plan


def _bound(binding: _Binding, sets: list[Mapping[str, Any]], many: bool) -> Prepared | None:
    """The driver's parameters through ``binding``, or ``None`` if a later set has other keys."""
    if many:
        keys = sets[0].keys()
        if any(one.keys() != keys for one in sets):
            return None
    sources = binding.sources
    rows = [
        tuple(
            [
                value if process is None else process(value)
                for key, index, held, process in sources
                for value in [held if key is None else given[key] if index is None else given[key][index]]
            ]
        )
        for given in sets or [{}]
    ]
    names = binding.names
    driver: list[Any] = rows if names is None else [dict(zip(names, row, strict=True)) for row in rows]
    return Prepared(binding.sql, driver if many else driver[0], many, binding.metadata, binding.hidden)


def _expanded(
    compiled: SQLCompiler, plan: _Plan, values: MutableMapping[str, Any]
) -> tuple[str, Sequence[str] | None, Processors, Mapping[str, list[str]]]:
    """The SQL text, positional order, processors and IN-list expansion for one call's ``values``.

    With IN lists, SQLAlchemy's post-compile step rewrites ``values`` in place, as its own
    execution does: each list becomes one parameter per item (``parameter_expansion`` names them).
    """
    if not plan.expanding:
        return compiled.string, plan.positions, plan.processors, {}
    expanded = compiled._process_parameters_for_postcompile(values)
    positions = expanded.positiontup if plan.positions is not None else None
    return (
        expanded.statement,
        positions,
        {**plan.processors, **expanded.processors},
        expanded.parameter_expansion,
    )


def _is_item(given: Any, index: int, value: Any) -> bool:
    return type(given) in (list, tuple) and index < len(given) and given[index] is value


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
        # An INSERT without RETURNING of its own, to which the dialect added one for the primary
        # key: SQLAlchemy reads that row itself and shows none.
        returning and not cast("Any", compiled.statement)._returning,
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
