"""``schema_ready``: does the database already have everything this code maps?

For a readiness probe: a new version that maps a column its expand has not created yet
would fail on its first query, so it should take no traffic until the list is empty.

Given an AsyncEngine or AsyncConnection, :func:`schema_ready` returns a coroutine
(``missing = await schema_ready(engine, Base)``): an asyncio application probes on its
own event loop and its own pool, as its requests will, without blocking the loop. One
name for both forms, the way SQLAlchemy's async API mirrors its sync one.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

from .usage import FALLBACK_SCHEMA, schema_usage

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Tables, partitioned tables, views, materialized views and foreign tables can all be mapped.
_SQL = """
SELECT n.nspname AS schema, c.relname AS table, a.attname AS column
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname || '.' || c.relname = ANY(CAST(:tables AS text[]))
"""


def missing(
    conn: Connection, metadata: MetaData | Any | None, uses: Mapping[str, Iterable[str]] | None = None
) -> list[str]:
    """What ``metadata`` (and ``uses``) map that the connected database lacks."""
    from sqlalchemy import text

    default_schema = conn.execute(text("SELECT current_schema()")).scalar() or FALLBACK_SCHEMA
    wanted = schema_usage(metadata, uses, default_schema)
    present: dict[str, set[str]] = {}
    for row in conn.execute(text(_SQL), {"tables": list(wanted)}).mappings():
        have = present.setdefault(f"{row['schema']}.{row['table']}", set())
        if row["column"] is not None:
            have.add(str(row["column"]))
    problems: list[str] = []
    for table, columns in wanted.items():
        if table not in present:
            problems.append(f"table {table}")
            continue
        problems.extend(f"column {table}.{c}" for c in columns if c not in present[table])
    return problems


@overload
def schema_ready(
    bind: AsyncEngine | AsyncConnection,
    metadata: MetaData | Any,
    *,
    uses: Mapping[str, Iterable[str]] | None = None,
) -> Coroutine[Any, Any, list[str]]: ...


@overload
def schema_ready(
    bind: Engine | Connection | URL | str,
    metadata: MetaData | Any,
    *,
    uses: Mapping[str, Iterable[str]] | None = None,
) -> list[str]: ...


def schema_ready(
    bind: Engine | Connection | AsyncEngine | AsyncConnection | URL | str,
    metadata: MetaData | Any,
    *,
    uses: Mapping[str, Iterable[str]] | None = None,
) -> list[str] | Coroutine[Any, Any, list[str]]:
    """Missing tables and columns (``"table public.users"``, ``"column public.users.full_name"``).

    Empty when the code may take traffic. ``bind`` is an Engine, a Connection or a URL;
    or an AsyncEngine or AsyncConnection, and then the result is awaited:
    ``await schema_ready(engine, Base)``. ``metadata`` is a MetaData or a declarative
    Base. Database errors propagate: a probe that cannot reach the database should fail anyway.
    """
    from sqlalchemy.engine import URL, Connection, Engine

    from ..db.engine import create

    # Only an application that imported SQLAlchemy's asyncio extension can hand us an async bind;
    # importing it here would fail in sync applications without greenlet.
    asyncio_ext = sys.modules.get("sqlalchemy.ext.asyncio")
    if asyncio_ext is not None and isinstance(bind, asyncio_ext.AsyncEngine | asyncio_ext.AsyncConnection):
        return _schema_ready_async(bind, metadata, uses)
    if isinstance(bind, Connection):
        return missing(bind, metadata, uses)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return missing(conn, metadata, uses)
    url = bind.render_as_string(hide_password=False) if isinstance(bind, URL) else str(bind)
    engine = create(url, poolclass=_null_pool())
    try:
        with engine.connect() as conn:
            return missing(conn, metadata, uses)
    finally:
        engine.dispose()


async def _schema_ready_async(
    bind: AsyncEngine | AsyncConnection,
    metadata: MetaData | Any,
    uses: Mapping[str, Iterable[str]] | None,
) -> list[str]:
    from sqlalchemy.ext.asyncio import AsyncConnection

    if isinstance(bind, AsyncConnection):
        return await bind.run_sync(missing, metadata, uses)
    async with bind.connect() as conn:
        return await conn.run_sync(missing, metadata, uses)


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool
