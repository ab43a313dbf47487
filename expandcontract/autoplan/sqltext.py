"""SQLAlchemy constructs from an autogenerate diff, as the SQL text ``ecm plan`` options take.

Compiled by SQLAlchemy's own PostgreSQL dialect (literal values bound inline), never
assembled by hand: what the plan runs is what SQLAlchemy would have emitted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def pg_type(type_: Any) -> str | None:
    """The type as PostgreSQL spells it (``character varying(100)``), None when it has none."""
    from sqlalchemy.types import NullType

    from ..plan.from_metadata import pg_type_spelling

    if type_ is None or isinstance(type_, NullType):
        return None
    try:
        compiled = type_.compile(dialect=_DIALECT)
    except Exception:  # a type the dialect cannot render (a plugin's, NullType subclasses)
        return None
    return pg_type_spelling(str(compiled))


def expression(element: Any) -> str:
    """A SQL expression (a ColumnElement, a TextClause or plain text) as text."""
    from sqlalchemy.sql.elements import TextClause

    if isinstance(element, str):
        return element
    if isinstance(element, TextClause):
        return element.text
    # Bare column names (no "users." in front): the options these go to read them on the table itself.
    return str(
        element.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True, "include_table": False})
    )


def server_default(default: Any) -> str | None:
    """A column's ``server_default`` as the SQL of its DEFAULT clause (None: it has none).

    A plain string is a value, quoted as SQLAlchemy quotes it in DDL; text() and SQL
    expressions are SQL already.
    """
    from sqlalchemy import literal
    from sqlalchemy.schema import DefaultClause

    if default is None or default is False:
        return None
    arg = default.arg if isinstance(default, DefaultClause) else default
    if isinstance(arg, str):
        return str(literal(arg).compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
    return expression(arg)


def qualified_key(schema: str | None, table: str, column: str | None = None) -> str:
    """How the user names a table or column on the command line: ``users.name``, ``app.users.name``."""
    parts = [p for p in (schema, table, column) if p]
    return ".".join(parts)
