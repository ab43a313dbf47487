"""Column types as the database sees them: compiled on the app side, resolved by the server.

The application side compiles each mapped column's SQLAlchemy type with the PostgreSQL
dialect (``INTEGER``, ``VARCHAR(200)``, ``TIMESTAMP WITHOUT TIME ZONE``): that text is
what the reporter registers, because it needs no server and no extra connection.

Comparing such texts with a plan's ``format_type`` output would be wrong both ways
(``INTEGER`` vs ``integer`` vs ``int4``), and a hand-kept alias table would drift from
the server. So the guard and the readiness probe hand every name to the server
(``to_regtype``) and compare what comes back: the canonical name (typmods dropped, as
``regtype`` has none) and the types PostgreSQL converts to and from without a function
(``pg_cast`` binary-coercible both ways, e.g. ``text`` and ``character varying``; for
arrays, arrays of such element types). The same rules are written in SQL for the
offline script (:func:`same_type_sql`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..guard import SqlType

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_dialect: Any = None

#: The types converted to and from ``t`` (a regtype expression) without a conversion
#: function, as ``regtype::text``; for an array type, the arrays of such element types.
_SAME_SQL = """
ARRAY(
    SELECT p::regtype::text FROM (
        SELECT a.casttarget
          FROM pg_catalog.pg_cast a
          JOIN pg_catalog.pg_cast b ON b.castsource = a.casttarget AND b.casttarget = a.castsource
         WHERE a.castsource = {t} AND a.castmethod = 'b' AND b.castmethod = 'b'
        UNION
        SELECT et.typarray
          FROM pg_catalog.pg_type ty
          JOIN pg_catalog.pg_cast a ON a.castsource = ty.typelem AND a.castmethod = 'b'
          JOIN pg_catalog.pg_cast b
            ON b.castsource = a.casttarget AND b.casttarget = a.castsource AND b.castmethod = 'b'
          JOIN pg_catalog.pg_type et ON et.oid = a.casttarget
         WHERE ty.oid = {t} AND ty.typelem <> 0 AND ty.typlen = -1 AND et.typarray <> 0
    ) s(p)
)"""


def same_sql(t: str) -> str:
    """SQL for the ``text[]`` of types equivalent to the regtype expression ``t``."""
    return _SAME_SQL.format(t=t)


def same_type_sql(a: str, b: str) -> str:
    """SQL: are the regtype expressions ``a`` and ``b`` one type, or equivalent (no function
    converts between them either way)? The offline guard's version of :meth:`SqlType.equivalent`."""
    return f"({a} = {b} OR {b}::text = ANY({same_sql(a)}))"


def compile_type(type_: Any) -> str | None:
    """The type as SQLAlchemy's PostgreSQL dialect writes it in DDL; None when it cannot."""
    global _dialect
    if _dialect is None:
        from sqlalchemy.dialects.postgresql.base import PGDialect

        _dialect = PGDialect()  # type: ignore[no-untyped-call]
    try:
        return str(type_.compile(dialect=_dialect))
    except Exception:  # NullType, a custom type without a PostgreSQL spelling
        return None


def _autocommit(conn: Connection) -> bool:
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    try:
        return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))
    except Exception:
        return False


def resolve(conn: Connection, names: Iterable[str]) -> dict[str, SqlType | None]:
    """Each type name as the server resolves it; None for what is not a type it knows.

    ``to_regtype`` returns NULL for an unknown name but raises on one it cannot parse, so
    each name is asked under a savepoint (not needed, and not possible, in autocommit
    mode): a bad name never spoils the caller's transaction.
    """
    from sqlalchemy import text

    wanted = sorted(set(names))
    if not wanted:
        return {}
    autocommit = _autocommit(conn)
    # All at once first (a readiness probe runs this every few seconds); one by one only
    # when a name the server cannot parse made the batch fail.
    batch = text(
        f"SELECT n.name, r.t::text AS resolved, {same_sql('r.t')} AS same "
        "FROM unnest(CAST(:names AS text[])) AS n(name) CROSS JOIN LATERAL (SELECT to_regtype(n.name) AS t) r"
    )
    rows = _guarded(conn, autocommit, batch, {"names": wanted})
    if rows is None:
        single = text(
            f"SELECT CAST(:n AS text) AS name, r.t::text AS resolved, {same_sql('r.t')} AS same "
            "FROM (SELECT to_regtype(:n) AS t) r"
        )
        rows = []
        for name in wanted:
            rows.extend(_guarded(conn, autocommit, single, {"n": name}) or [])
    out: dict[str, SqlType | None] = dict.fromkeys(wanted)
    for row in rows:
        if row.resolved is not None:
            out[str(row.name)] = SqlType(str(row.resolved), frozenset(str(x) for x in row.same or ()))
    return out


def _guarded(conn: Connection, autocommit: bool, query: Any, params: dict[str, Any]) -> list[Any] | None:
    """Rows of the query, or None when it failed (under a savepoint, unless in autocommit)."""
    try:
        if autocommit:
            return list(conn.execute(query, params))
        with conn.begin_nested():
            return list(conn.execute(query, params))
    except Exception:
        return None
