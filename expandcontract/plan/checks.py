"""Input validation shared by operations: one clear BadInput line per problem."""

from __future__ import annotations

from ..errors import BadInput
from ..sql.quoting import MAX_IDENTIFIER_BYTES, qualified
from .facts import TableFacts


def identifier(value: str, what: str) -> str:
    if not value:
        raise BadInput(f"{what} name is empty")
    if "\x00" in value:
        raise BadInput(f"{what} name {value!r} contains a NUL byte")
    size = len(value.encode())
    if size > MAX_IDENTIFIER_BYTES:
        raise BadInput(
            f"{what} name {value[:20]!r}... is {size} bytes; PostgreSQL identifiers are at most "
            f"{MAX_IDENTIFIER_BYTES} bytes (it would silently truncate it): choose a shorter name"
        )
    return value


def table_is_plannable(facts: TableFacts) -> None:
    name = qualified(facts.schema, facts.name)
    if facts.kind == "p" or facts.is_partition:
        raise BadInput(
            f"table {name} is partitioned (or a partition); expandcontract does not support partitioned "
            "tables yet: plan the change by hand"
        )
    if facts.kind not in ("r",):
        raise BadInput(f"{name} is not an ordinary table (relkind {facts.kind!r})")


def no_exclusion_constraint(facts: TableFacts, what: str) -> None:
    """An exclusion constraint cannot be rebuilt online: PostgreSQL has no CONCURRENTLY build for
    one and no ``USING INDEX`` to attach it, so a copy on the new column would either hold a lock
    that blocks writes for a whole index build or be silently lost with the old column."""
    found = [ix.constraint for ix in facts.indexes if ix.constraint and not ix.unique and not ix.primary]
    if found:
        where = f"{qualified(facts.schema, facts.name)}.{qualified(None, facts.col.name)}"
        raise BadInput(
            f"column {where} is part of exclusion constraint(s) {', '.join(sorted(set(found)))}, which {what} "
            "cannot carry over online (no concurrent build, no USING INDEX): drop the constraint first, or "
            "make the change in a maintenance window"
        )


def column_is_movable(facts: TableFacts) -> None:
    col = facts.col
    where = f"{qualified(facts.schema, facts.name)}.{qualified(None, col.name)}"
    no_exclusion_constraint(facts, "rename-column")
    if col.name in facts.primary_key:
        raise BadInput(f"column {where} is part of the primary key; renaming a key column is not supported")
    if col.identity:
        raise BadInput(f"column {where} is an identity column; its values cannot be dual-written")
    if col.generated:
        raise BadInput(f"column {where} is a generated column; change its expression instead")
    if facts.dependent_views:
        views = ", ".join(facts.dependent_views)
        raise BadInput(f"column {where} is used by view(s) {views}; change or drop them first")
    if facts.policies:
        raise BadInput(
            f"column {where} is used by row-level security policies {', '.join(facts.policies)}; "
            "change them first"
        )
