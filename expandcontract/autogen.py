"""Keep ``alembic revision --autogenerate`` away from what an in-flight plan manages.

Between a plan's expand and its contract the database holds both shapes (the old column
and the new one, the new column's indexes and foreign keys), while the models map only
one of them. Autogenerate compares the two and proposes dropping the other shape: a user
who accepts that drops the column old code still writes, or the copy the backfill made.
Until its contract the plan owns those objects, so this filter hides them from the
comparison, and nothing else. Once the contract ran, the plan is no longer in flight and
every real difference shows again.

One line in ``env.py``::

    context.configure(..., include_object=expandcontract.autogen.include_object)

or, with a filter of your own, ``include_object=expandcontract.autogen.combine(my_filter)``.
The other half, ``process_revision_directives=expandcontract.autogen.rewrite``, turns the
unsafe changes autogenerate finds into plans (:mod:`expandcontract.autoplan.hook`).

Which plans are in flight is read from the database being compared (the control schema's
``plans`` table, once per migration context): the database's own record is the only one
that knows whether this database ran the contract. The generated revision files add the
names of what each plan created. When the record cannot be read, a plan whose expand
revision this database has applied counts as in flight: hiding a drop costs a line in a
migration, proposing one can cost the data.
"""

from __future__ import annotations

import contextlib
import re
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .autoplan.hook import Rewrite, rewrite
from .errors import first_line
from .settings import control_schema
from .sql.quoting import q

# An in-flight plan keeps NOT VALID checks on the table; SQLAlchemy's PostgreSQL reflection
# hands their `not_valid` flag back as a `dialect_options` argument its own CheckConstraint
# does not accept, and warns "Can't validate argument 'dialect_options'" on every
# autogenerate run that uses this module. Only that message is silenced.
warnings.filterwarnings("ignore", message=r"Can't validate argument 'dialect_options'")

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.schema import SchemaItem

__all__ = [
    "InFlight",
    "ManagedPlan",
    "Rewrite",
    "combine",
    "in_flight",
    "include_object",
    "include_object_for",
    "rewrite",
]

IncludeObject = Callable[["SchemaItem", "str | None", str, bool, "SchemaItem | None"], bool]

#: Phases after which a plan no longer owns anything: the contract ran, or the expand was rolled back.
FINISHED = frozenset({"contracted", "aborted"})

#: A whole table is removed or added ("*" in a plan's removes/adds).
WHOLE_TABLE = "*"

#: The ``type_`` values Alembic itself passes; others come from comparator plugins.
_SCHEMA_ITEM_TYPES = frozenset(
    {"schema", "table", "column", "index", "unique_constraint", "foreign_key_constraint", "check_constraint"}
)

_IDENT = r'"(?:[^"]|"")+"|[^\s"(),.;]+'
_CREATED = [
    re.compile(
        rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})", re.I
    ),
    re.compile(rf"ADD\s+CONSTRAINT\s+({_IDENT})", re.I),
    re.compile(rf"CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+({_IDENT})", re.I),
    re.compile(rf"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(?:(?:{_IDENT})\.)?({_IDENT})", re.I),
]


def _unquote(ident: str) -> str:
    if len(ident) >= 2 and ident.startswith('"') and ident.endswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident


def created_names(sql: str) -> set[str]:
    """Names of the indexes, constraints, triggers and functions a step's SQL creates.

    Read from the frozen SQL rather than recomputed from the planner's naming rules, so a
    plan made by an older version of the planner is still recognised.
    """
    found: set[str] = set()
    for pattern in _CREATED:
        found.update(_unquote(m.group(1)) for m in pattern.finditer(sql))
    return found


def _split_table(key: str, default_schema: str) -> tuple[str, str]:
    schema, dot, table = key.partition(".")
    return (schema, table) if dot else (default_schema, key)


@dataclass(frozen=True)
class ManagedPlan:
    """What one in-flight plan owns until its contract."""

    plan_id: str
    phase: str
    #: (schema, table) -> the columns the plan removes or adds; ``"*"`` stands for the table itself.
    columns: Mapping[tuple[str, str], frozenset[str]]
    #: Names of the indexes, constraints, triggers and functions the plan's steps create.
    names: frozenset[str] = frozenset()

    @classmethod
    def from_plan(
        cls,
        plan: Mapping[str, Any],
        *,
        phase: str,
        default_schema: str,
        names: Iterable[str] = (),
    ) -> ManagedPlan:
        """From a frozen PLAN dict or a ledger spec: what it touches (older plans: removes and adds)
        and the names it creates (older plans: ``names``, read from their steps)."""
        from .revisions.inflight import touches_of

        columns: dict[tuple[str, str], set[str]] = {}
        for key, cols in touches_of(plan).items():
            columns.setdefault(_split_table(str(key), default_schema), set()).update(map(str, cols))
        created = {str(n) for n in plan.get("creates") or ()}
        return cls(
            plan_id=str(plan.get("plan_id", "")),
            phase=phase,
            columns={k: frozenset(v) for k, v in columns.items()},
            names=frozenset(created | set(names)),
        )

    def owns_column(self, schema: str, table: str, column: str) -> bool:
        cols = self.columns.get((schema, table))
        return cols is not None and (column in cols or WHOLE_TABLE in cols)

    def touches_schema(self, schema: str) -> bool:
        return not self.columns or any(s == schema for s, _ in self.columns)

    def owns_table(self, schema: str, table: str) -> bool:
        return WHOLE_TABLE in self.columns.get((schema, table), frozenset())


@dataclass(frozen=True)
class InFlight:
    """The plans in flight in one database, and the filter that follows from them."""

    plans: tuple[ManagedPlan, ...] = ()
    default_schema: str = "public"
    control_schema: str = field(default_factory=control_schema)
    #: Why the database's own record was not used, when it was not (else None).
    fallback: str | None = None

    def include_object(
        self,
        object: SchemaItem,
        name: str | None,
        type_: str,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        """Alembic's ``include_object`` hook: False for what an in-flight plan owns.

        The direction does not matter (``reflected``, ``compare_to``): dropping, adding and
        altering the plan's objects are all the plan's business until its contract; a model
        that already maps the new column NOT NULL must not make autogenerate set it early.
        """
        return not self.manages(object, name, type_)

    def manages(self, obj: Any, name: str | None, type_: str) -> bool:
        """Whether ``obj`` is one of the objects an in-flight plan owns.

        Those are its columns (or its whole table), every index and constraint that covers
        them, foreign keys on other tables that point at them, and whatever its steps
        created by name. Indexes and constraints are recognised by their columns first, so a
        constraint named by the user or by a naming convention is still found.
        """
        if type_ == "table":
            schema = self._schema(getattr(obj, "schema", None))
            if schema == self.control_schema:
                return True  # expandcontract's own tables (seen with include_schemas=True)
            return any(p.owns_table(schema, str(name)) for p in self.plans)
        if not self.plans:
            return False
        if type_ == "column":
            table = getattr(obj, "table", None)
            if table is None:
                return False
            schema = self._schema(table.schema)
            return any(p.owns_column(schema, table.name, str(name)) for p in self.plans)
        if name is not None:
            # Comparators of other object types (alembic_utils' functions and triggers) pass
            # names that may carry a schema or a signature: "public.f()" is "f".
            bare = name if type_ in _SCHEMA_ITEM_TYPES else name.split("(")[0].rpartition(".")[2]
            owner = _table_of(obj)
            where = self._schema(owner.schema) if owner is not None else None
            for plan in self.plans:
                if bare in plan.names and (where is None or plan.touches_schema(where)):
                    return True
        return any(
            p.owns_column(schema, table_name, column)
            for schema, table_name, column in self._columns_involved(obj, type_)
            for p in self.plans
        )

    def _schema(self, schema: str | None) -> str:
        return schema or self.default_schema

    def _columns_involved(self, obj: Any, type_: str) -> list[tuple[str, str, str]]:
        """(schema, table, column) of every column an index or constraint refers to."""
        table = _table_of(obj)
        if table is None:
            return []
        schema, name = self._schema(table.schema), table.name
        out = [(schema, name, c) for c in _local_columns(obj, type_, table)]
        if type_ == "foreign_key_constraint":
            for element in getattr(obj, "elements", ()):
                target = _fk_target(element)
                if target is not None:
                    ref_schema, ref_table, ref_column = target
                    out.append((self._schema(ref_schema), ref_table, ref_column))
        return out


def _table_of(obj: Any) -> Any:
    try:
        return getattr(obj, "table", None)
    except Exception:  # a constraint not attached to a table raises instead of returning None
        return None


def _mentions(sql: str, column: str) -> bool:
    return re.search(rf'(?<![\w$"]){re.escape(column)}(?![\w$"])|"{re.escape(column)}"', sql) is not None


def _local_columns(obj: Any, type_: str, table: Any) -> set[str]:
    columns: set[str] = set()
    if type_ == "index":
        texts: list[str] = []
        for expr in getattr(obj, "expressions", ()):
            col_name = getattr(expr, "name", None)
            if isinstance(col_name, str) and getattr(expr, "table", None) is not None:
                columns.add(col_name)
            else:
                texts.append(str(expr))
        where = getattr(obj, "dialect_options", {}).get("postgresql", {}).get("where")
        if where is not None:
            texts.append(str(where))
        # Expressions and WHERE clauses come back from reflection as SQL text.
        columns.update(c.name for c in table.columns if any(_mentions(t, c.name) for t in texts))
        return columns
    if type_ == "check_constraint":
        sqltext = str(getattr(obj, "sqltext", ""))
        return {c.name for c in table.columns if _mentions(sqltext, c.name)}
    # Columns not resolved yet (string names on an unattached constraint) leave the set as it is.
    with contextlib.suppress(Exception):
        columns.update(c.name for c in getattr(obj, "columns", ()))
    if type_ == "foreign_key_constraint":
        columns.update(getattr(obj, "column_keys", ()))
    return columns


def _fk_target(element: Any) -> tuple[str | None, str, str] | None:
    """(schema, table, column) a ForeignKey points at, without resolving it against a MetaData."""
    fullname = getattr(element, "target_fullname", None)
    if not isinstance(fullname, str):
        return None
    parts = fullname.split(".")
    if len(parts) == 2:
        return None, parts[0], parts[1]
    if len(parts) >= 3:
        return ".".join(parts[:-2]), parts[-2], parts[-1]
    return None


# -- reading what is in flight -------------------------------------------------------


def _read_ledger(connection: Connection) -> list[dict[str, Any]] | None:
    """Rows of ``<control>.plans``; None when the table is missing."""
    from sqlalchemy import text

    schema = control_schema()

    def read() -> list[dict[str, Any]] | None:
        exists = connection.execute(text("SELECT to_regclass(:t)"), {"t": f"{q(schema)}.plans"}).scalar()
        if exists is None:
            return None
        rows = connection.execute(
            text(f"SELECT plan_id, phase, table_schema, table_name, spec FROM {q(schema)}.plans")
        ).mappings()
        return [dict(r) for r in rows]

    # A failed read must not abort the transaction autogenerate is comparing in.
    if connection.in_transaction():
        with connection.begin_nested():
            return read()
    with connection.begin():
        return read()


def _revision_plans(script: ScriptDirectory) -> dict[str, tuple[dict[str, Any], set[str], str]]:
    """plan_id -> (frozen PLAN, names its steps create, expand revision) from the revision files."""
    found: dict[str, tuple[dict[str, Any], set[str], str]] = {}
    for rev in script.walk_revisions():
        module = rev.module
        plan = getattr(module, "PLAN", None)
        if not isinstance(plan, dict) or "plan_id" not in plan:
            continue
        plan_id = str(plan["plan_id"])
        entry = found.setdefault(plan_id, (plan, set(), str((plan.get("revisions") or {}).get("expand", ""))))
        for step in getattr(module, "UPGRADE", ()) or ():
            entry[1].update(created_names(str(getattr(step, "sql", "") or "")))
            index = getattr(step, "index", None)
            if index:
                entry[1].add(_unquote(str(index).rpartition(".")[2]))
    return found


def _applied(script: ScriptDirectory, heads: Iterable[str]) -> set[str]:
    applied: set[str] = set()
    for head in heads:
        applied.update(r.revision for r in script.iterate_revisions(head, "base") if r is not None)
    return applied


def in_flight(
    connection: Connection,
    script: ScriptDirectory | None = None,
    *,
    current_heads: Iterable[str] | None = None,
) -> InFlight:
    """The plans in flight in the database behind ``connection``.

    ``script`` (the application's Alembic ScriptDirectory) adds the names of the objects
    each plan created, and with ``current_heads`` (the database's Alembic heads) is the
    fallback when the control schema cannot be read.
    """
    default_schema = connection.dialect.default_schema_name or "public"
    files = _revision_plans(script) if script is not None else {}
    fallback: str | None = None
    try:
        ledger = _read_ledger(connection)
    except Exception as exc:
        ledger = None
        fallback = f"cannot read {control_schema()}.plans: {first_line(exc)}"
    plans: list[ManagedPlan] = []
    known: set[str] = set()
    for row in ledger or []:
        plan_id = str(row["plan_id"])
        known.add(plan_id)
        if row["phase"] in FINISHED:
            continue
        spec = dict(row.get("spec") or {})
        spec.setdefault("plan_id", plan_id)
        names = files[plan_id][1] if plan_id in files else set()
        plans.append(
            ManagedPlan.from_plan(spec, phase=str(row["phase"]), default_schema=default_schema, names=names)
        )
    if files and script is not None and current_heads is not None:
        applied = _applied(script, current_heads)
        for plan_id, (plan, names, expand) in files.items():
            if plan_id in known or expand not in applied:
                continue
            # This database ran the expand but keeps no record of the plan (its control schema is
            # missing, unreadable, or named differently): assume the contract has not run.
            fallback = fallback or f"no record of plan {plan_id} in {control_schema()}.plans"
            plans.append(
                ManagedPlan.from_plan(plan, phase="unknown", default_schema=default_schema, names=names)
            )
    if fallback and plans:
        warnings.warn(
            f"expandcontract.autogen: {fallback}; treating "
            + ", ".join(p.plan_id for p in plans if p.phase == "unknown")
            + " as in flight (its columns are left out of autogenerate)",
            stacklevel=2,
        )
    return InFlight(tuple(plans), default_schema=default_schema, fallback=fallback)


def include_object_for(
    connection: Connection,
    script: ScriptDirectory | None = None,
    *,
    current_heads: Iterable[str] | None = None,
) -> IncludeObject:
    """A filter bound to one connection, for code that runs ``compare_metadata`` itself."""
    return in_flight(connection, script, current_heads=current_heads).include_object


# -- the env.py hook -------------------------------------------------------------------

_by_context: weakref.WeakKeyDictionary[MigrationContext, InFlight] = weakref.WeakKeyDictionary()


def _current() -> InFlight | None:
    """What is in flight for the migration context Alembic is running now (read once per context)."""
    from alembic import context

    try:
        migration_context = context.get_context()
    except (NameError, AttributeError):  # not inside an Alembic environment
        return None
    cached = _by_context.get(migration_context)
    if cached is not None:
        return cached
    connection = migration_context.connection
    if connection is None:  # offline (--sql): nothing is compared
        return None
    script = migration_context.script
    heads: tuple[str, ...] | None = None
    if script is not None:
        try:
            heads = migration_context.get_current_heads()
        except Exception:
            heads = None
    state = in_flight(connection, script, current_heads=heads)
    _by_context[migration_context] = state
    return state


def include_object(
    object: SchemaItem,
    name: str | None,
    type_: str,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """Alembic's ``include_object``: hides what in-flight plans own, keeps everything else."""
    state = _current()
    return True if state is None else state.include_object(object, name, type_, reflected, compare_to)


def combine(*filters: IncludeObject) -> IncludeObject:
    """Our filter and yours: an object is compared only when every filter keeps it."""
    chain = tuple(f for f in filters if f is not include_object)

    def combined(
        object: SchemaItem,
        name: str | None,
        type_: str,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        if not include_object(object, name, type_, reflected, compare_to):
            return False
        return all(f(object, name, type_, reflected, compare_to) for f in chain)

    return combined
