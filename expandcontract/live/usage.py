"""Schema usage: which tables and columns a process maps, as ``{"schema.table": [columns]}``.

This is what an instance registers and what the guard compares with a contract's
``removes``. Names are the database's (``Column.name``, not the attribute key), because a
contract removes database columns whatever the model calls them.

Beside it, :func:`schema_types` gives each column the MetaData maps its type (as the
PostgreSQL dialect compiles it) and nullability, for the contracts that retype a column or
make it NOT NULL. Columns named only in ``uses`` have no types: the guard cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import MetaData

#: What ``current_schema()`` falls back to when the search_path names no existing schema.
FALLBACK_SCHEMA = "public"


def as_metadata(obj: Any) -> MetaData:
    """Accept a MetaData, or anything with one at ``.metadata`` (a declarative Base)."""
    from sqlalchemy import MetaData

    if isinstance(obj, MetaData):
        return obj
    candidate = getattr(obj, "metadata", None)
    if isinstance(candidate, MetaData):
        return candidate
    raise TypeError(f"expected a SQLAlchemy MetaData or declarative Base, got {type(obj).__name__}")


def qualify(table: str, default_schema: str) -> str:
    """``"users"`` -> ``"public.users"`` (the connection's current schema); qualified names stay."""
    return table if "." in table else f"{default_schema}.{table}"


def schema_types(metadata: MetaData | None, default_schema: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"schema.table": {column: {"type": "INTEGER", "nullable": False}}}`` for ``metadata``.

    ``type`` is None for a type the PostgreSQL dialect cannot compile (the guard then
    cannot tell). Only MetaData carries types: ``uses`` columns are left out.
    """
    from .types import compile_type

    found: dict[str, dict[str, dict[str, Any]]] = {}
    if metadata is None:
        return found
    for table in as_metadata(metadata).tables.values():
        key = f"{table.schema or default_schema}.{table.name}"
        keys = unique_keys(table)
        for column in table.columns:
            found.setdefault(key, {})[str(column.name)] = {
                "type": compile_type(column.type),
                "nullable": bool(column.nullable),
                "unique": [list(k) for k in keys if str(column.name) in k],
            }
    return {t: dict(sorted(cols.items())) for t, cols in sorted(found.items())}


def unique_keys(table: Any) -> list[tuple[str, ...]]:
    """The unique keys a Table declares (``UniqueConstraint``, ``Column(unique=True)``,
    ``Index(unique=True)`` on plain columns): what its code may name in ``ON CONFLICT``,
    so a contract that drops the matching unique index is held while it runs. Expression
    keys are left out (the guard cannot judge them for anyone)."""
    from sqlalchemy import Column, UniqueConstraint

    found: list[tuple[str, ...]] = []
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            found.append(tuple(str(c.name) for c in constraint.columns))
    for index in table.indexes:
        if index.unique and index.expressions and all(isinstance(e, Column) for e in index.expressions):
            found.append(tuple(str(e.name) for e in index.expressions))
    return [k for k in dict.fromkeys(found) if k]


def schema_usage(
    metadata: MetaData | None,
    uses: Mapping[str, Iterable[str]] | None,
    default_schema: str,
) -> dict[str, list[str]]:
    """Tables and columns mapped by ``metadata`` plus the hand-written ``uses``, sorted."""
    found: dict[str, set[str]] = {}
    if metadata is not None:
        for table in as_metadata(metadata).tables.values():
            key = f"{table.schema or default_schema}.{table.name}"
            found.setdefault(key, set()).update(str(c.name) for c in table.columns)
    for table_name, columns in (uses or {}).items():
        # A bare string is one column, not a sequence of one-letter columns.
        names = [columns] if isinstance(columns, str) else list(columns)
        found.setdefault(qualify(table_name, default_schema), set()).update(str(c) for c in names)
    return {table: sorted(columns) for table, columns in sorted(found.items())}
