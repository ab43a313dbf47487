"""``schema_ready``: does the database already have everything this code maps?

For a readiness probe: a new version that maps a column its expand has not created yet
would fail on its first query, so it should take no traffic until the list is empty.

It also compares each mapped column's type with the database's, as the server resolves
both (``to_regtype``; typmods are not compared, and types PostgreSQL converts both ways
without a function, ``text`` and ``character varying``, count as one). One exception
keeps a same-name type change deployable: new code that maps the new type is rolled out
*before* the contract swaps the column, so a mapped type that a plan still in flight (in
the control schema's ``plans``, neither contracted nor aborted) changes the column to is
ready. Without it the probe would hold the very rollout the contract waits for.

Given an AsyncEngine or AsyncConnection, :func:`schema_ready` returns a coroutine
(``missing = await schema_ready(engine, Base)``): an asyncio application probes on its
own event loop and its own pool, as its requests will, without blocking the loop. One
name for both forms, the way SQLAlchemy's async API mirrors its sync one.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

from ..guard import SqlType
from ..settings import control_schema
from ..sql.quoting import q
from .types import resolve as resolve_types
from .usage import FALLBACK_SCHEMA, schema_types, schema_usage

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Tables, partitioned tables, views, materialized views and foreign tables can all be mapped.
# A domain column also matches its base type (a model maps the base type, usually).
_SQL = """
SELECT n.nspname AS schema, c.relname AS table, a.attname AS column,
       a.atttypid::regtype::text AS type,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype::regtype::text END AS base_type
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname || '.' || c.relname = ANY(CAST(:tables AS text[]))
"""

#: Whether this role may read the plans (catalog only: a missing grant is no error).
_PLANS_READABLE = """
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relname = 'plans' AND c.relkind IN ('r', 'p')
      AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
) AS readable,
EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :schema) AS schema_exists
"""


def missing(
    conn: Connection,
    metadata: MetaData | Any | None,
    uses: Mapping[str, Iterable[str]] | None = None,
    *,
    check_types: bool = True,
) -> list[str]:
    """What ``metadata`` (and ``uses``) map that the connected database lacks, then mapped
    types it does not have yet (``check_types``)."""
    from sqlalchemy import text

    default_schema = conn.execute(text("SELECT current_schema()")).scalar() or FALLBACK_SCHEMA
    wanted = schema_usage(metadata, uses, default_schema)
    present: dict[str, dict[str, tuple[str, str | None]]] = {}
    for row in conn.execute(text(_SQL), {"tables": list(wanted)}).mappings():
        have = present.setdefault(f"{row['schema']}.{row['table']}", {})
        if row["column"] is not None:
            have[str(row["column"])] = (str(row["type"]), row["base_type"])
    problems: list[str] = []
    for table, columns in wanted.items():
        if table not in present:
            problems.append(f"table {table}")
            continue
        problems.extend(f"column {table}.{c}" for c in columns if c not in present[table])
    problems.extend(_index_problems(conn, wanted))
    if check_types and metadata is not None:
        problems.extend(_type_problems(conn, schema_types(metadata, default_schema), present))
    return problems


def _index_problems(conn: Connection, wanted: Mapping[str, Iterable[str]]) -> list[str]:
    """``index public."ix_users_full_name" on public.users (full_name): the backfill of PLAN has
    not built it yet`` for each index a plan in flight builds after its copy on a column this
    code maps: code that reads the new column before it exists would scan the whole table."""
    from sqlalchemy import text

    schema = control_schema()
    check = conn.execute(text(_PLANS_READABLE), {"schema": schema}).mappings().one()
    if not check["readable"]:
        return []
    rows = conn.execute(
        text(
            f"""
            SELECT p.plan_id, p.table_schema || '.' || p.table_name AS "table",
                   ix.value -> 'step' ->> 'index' AS index, ix.value -> 'columns' AS columns
              FROM {q(schema)}.plans p,
                   jsonb_array_elements(
                       CASE WHEN jsonb_typeof(p.spec -> 'backfill' -> 'indexes') = 'array'
                            THEN p.spec -> 'backfill' -> 'indexes' ELSE '[]'::jsonb END) AS ix(value)
             WHERE p.phase NOT IN ('contracted', 'aborted')
               AND p.table_schema || '.' || p.table_name = ANY(CAST(:tables AS text[]))
               AND NOT COALESCE((SELECT i.indisvalid FROM pg_catalog.pg_index i
                                  WHERE i.indexrelid = to_regclass(ix.value -> 'step' ->> 'index')), false)
            """
        ),
        {"tables": list(wanted)},
    ).mappings()
    problems: list[str] = []
    for row in rows:
        columns = [str(c) for c in (row["columns"] or [])]
        if set(columns) & set(wanted.get(str(row["table"]), ())):
            problems.append(
                f"index {row['index']} on {row['table']} ({', '.join(columns)}): the backfill of "
                f"{row['plan_id']} builds it once every row is copied, and has not yet"
            )
    return problems


def _type_problems(
    conn: Connection,
    mapped: Mapping[str, Mapping[str, Mapping[str, Any]]],
    present: Mapping[str, Mapping[str, tuple[str, str | None]]],
) -> list[str]:
    """``type public.items.qty: bigint (database: integer)`` for each column whose mapped type
    the database column does not have and no plan in flight changes it to."""
    compiled = {
        (table, column): spec["type"]
        for table, columns in mapped.items()
        for column, spec in columns.items()
        if spec.get("type") and column in present.get(table, {})
    }
    if not compiled:
        return []
    types = resolve_types(conn, set(compiled.values()))
    differing: dict[tuple[str, str], tuple[str, bool]] = {}
    for (table, column), raw in compiled.items():
        db_type, base_type = present[table][column]
        resolved = types.get(raw)
        if resolved is None:
            differing[(table, column)] = (raw, False)  # not a type this database has (yet)
            continue
        if any(resolved.equivalent(SqlType(t)) for t in (db_type, base_type) if t):
            continue
        differing[(table, column)] = (resolved.name, True)
    if not differing:
        return []
    in_flight, readable = _in_flight_retypes(conn)
    targets = resolve_types(conn, {new for per_column in in_flight.values() for new in per_column})
    problems: list[str] = []
    for (table, column), (shown, known) in sorted(differing.items()):
        if known:
            mapped_type = types[compiled[(table, column)]]
            assert mapped_type is not None
            if any(
                (target := targets.get(new)) is not None and mapped_type.equivalent(target)
                for new in in_flight.get((table, column), ())
            ):
                continue  # new code ahead of its contract: the plan makes the column this type
        db_type = present[table][column][0]
        notes = [f"database: {db_type}"]
        if not known:
            notes.append("the database has no such type")
        if readable is False:
            notes.append(f"{control_schema()}.plans is not readable, so a plan in flight cannot excuse it")
        problems.append(f"type {table}.{column}: {shown} ({'; '.join(notes)})")
    return problems


def _in_flight_retypes(conn: Connection) -> tuple[dict[tuple[str, str], list[str]], bool | None]:
    """``{(table, column): [new types]}`` of plans in flight, and whether the plans were
    readable (None: there is no control schema, so there are no plans)."""
    from sqlalchemy import text

    schema = control_schema()
    check = conn.execute(text(_PLANS_READABLE), {"schema": schema}).mappings().one()
    if not check["readable"]:
        return {}, (False if check["schema_exists"] else None)
    rows = conn.execute(
        text(
            f"""
            SELECT b.value ->> 'table' AS "table", b.value ->> 'column' AS "column",
                   b.value ->> 'new_type' AS new_type
              FROM {q(schema)}.plans p,
                   jsonb_array_elements(CASE WHEN jsonb_typeof(p.spec -> 'breaks') = 'array'
                                             THEN p.spec -> 'breaks' ELSE '[]'::jsonb END) AS b(value)
             WHERE p.phase NOT IN ('contracted', 'aborted')
               AND jsonb_typeof(b.value) = 'object' AND b.value ->> 'kind' = 'retype'
               AND b.value ->> 'new_type' IS NOT NULL
            """
        )
    ).mappings()
    out: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        out.setdefault((str(row["table"]), str(row["column"])), []).append(str(row["new_type"]))
    return out, True


@overload
def schema_ready(
    bind: AsyncEngine | AsyncConnection,
    metadata: MetaData | Any,
    *,
    uses: Mapping[str, Iterable[str]] | None = None,
    check_types: bool = True,
) -> Coroutine[Any, Any, list[str]]: ...


@overload
def schema_ready(
    bind: Engine | Connection | URL | str,
    metadata: MetaData | Any,
    *,
    uses: Mapping[str, Iterable[str]] | None = None,
    check_types: bool = True,
) -> list[str]: ...


def schema_ready(
    bind: Engine | Connection | AsyncEngine | AsyncConnection | URL | str,
    metadata: MetaData | Any,
    *,
    uses: Mapping[str, Iterable[str]] | None = None,
    check_types: bool = True,
) -> list[str] | Coroutine[Any, Any, list[str]]:
    """Missing tables and columns (``"table public.users"``, ``"column public.users.full_name"``),
    indexes a backfill still has to build on mapped columns (``"index public.… on …"``),
    then mapped types the database does not have yet (``"type public.items.qty: bigint
    (database: integer)"``).

    Empty when the code may take traffic. ``bind`` is an Engine, a Connection or a URL;
    or an AsyncEngine or AsyncConnection, and then the result is awaited:
    ``await schema_ready(engine, Base)``. ``metadata`` is a MetaData or a declarative
    Base. ``check_types=False`` compares names only (for models that knowingly map a type
    other than the column's, e.g. ``DateTime`` on a ``timestamptz`` column). Database
    errors propagate: a probe that cannot reach the database should fail anyway.
    """
    from sqlalchemy.engine import URL, Connection, Engine

    from ..db.engine import create

    # Only an application that imported SQLAlchemy's asyncio extension can hand us an async bind;
    # importing it here would fail in sync applications without greenlet.
    asyncio_ext = sys.modules.get("sqlalchemy.ext.asyncio")
    if asyncio_ext is not None and isinstance(bind, asyncio_ext.AsyncEngine | asyncio_ext.AsyncConnection):
        return _schema_ready_async(bind, metadata, uses, check_types)
    if isinstance(bind, Connection):
        return missing(bind, metadata, uses, check_types=check_types)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return missing(conn, metadata, uses, check_types=check_types)
    url = bind.render_as_string(hide_password=False) if isinstance(bind, URL) else str(bind)
    engine = create(url, poolclass=_null_pool())
    try:
        with engine.connect() as conn:
            return missing(conn, metadata, uses, check_types=check_types)
    finally:
        engine.dispose()


async def _schema_ready_async(
    bind: AsyncEngine | AsyncConnection,
    metadata: MetaData | Any,
    uses: Mapping[str, Iterable[str]] | None,
    check_types: bool,
) -> list[str]:
    from sqlalchemy.ext.asyncio import AsyncConnection

    if isinstance(bind, AsyncConnection):
        return await bind.run_sync(missing, metadata, uses, check_types=check_types)
    async with bind.connect() as conn:
        return await conn.run_sync(missing, metadata, uses, check_types=check_types)


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool
