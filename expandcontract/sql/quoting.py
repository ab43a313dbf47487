"""Identifier quoting through SQLAlchemy's PostgreSQL preparer, never by hand.

The preparer knows PostgreSQL's reserved words and quoting rules; an f-string with
double quotes would get embedded quotes, unicode and reserved words wrong.
"""

from __future__ import annotations

from functools import cache
from typing import Any

MAX_IDENTIFIER_BYTES = 63


@cache
def _preparer() -> Any:
    from sqlalchemy.dialects import postgresql

    # A "format" paramstyle (the dialect's default) would double every % in a name: the SQL
    # ecm writes reaches the server as it is, and SQLAlchemy's text() doubles % itself.
    return postgresql.dialect(paramstyle="named").identifier_preparer  # type: ignore[no-untyped-call]


def q(identifier: str) -> str:
    """Quote one identifier when PostgreSQL needs it quoted."""
    return str(_preparer().quote(identifier))


def qq(identifier: str) -> str:
    """Always quote: for names we emit into generated code where stability matters more than looks."""
    return str(_preparer().quote_identifier(identifier))


def qualified(schema: str | None, name: str) -> str:
    return f"{q(schema)}.{q(name)}" if schema else q(name)


def literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings on, as on every supported server)."""
    return "'" + value.replace("'", "''") + "'"
