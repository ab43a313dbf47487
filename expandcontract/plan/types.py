"""PostgreSQL type names, read with PostgreSQL's own parser, and which changes are safe how.

The planner is pure, so it cannot ask the server whether ``ALTER COLUMN … TYPE`` rewrites
the table; ``pg_cast`` cannot tell either (text → varchar(n) is listed as binary-coercible
and still rewrote the table; numeric(10,2) → (12,4) and int → bigint rewrote too). So the
pairs are explicit lists, each one measured on the server by the test suite:

* :func:`in_place`: ``ALTER COLUMN TYPE`` changes only the catalog (no rewrite, no scan).
* :func:`same_name`: old and new code can both read and write the column through the deploy
  window, so the new type may take the old name (through a shadow column and a swap).
* :func:`one_to_one`: the conversion never maps two values to one, so a unique column stays
  unique without ``--assume-injective``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput

#: Spellings that name the same built-in type.
_ALIASES = {
    "int": "int4",
    "integer": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "decimal": "numeric",
    "boolean": "bool",
    "real": "float4",
    "double precision": "float8",
    "character varying": "varchar",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "bpchar": "bpchar",
}

#: Widening integer and float pairs: every old value is a new value, compared equal.
_WIDENING = {
    ("int2", "int4"),
    ("int2", "int8"),
    ("int4", "int8"),
    ("float4", "float8"),
}


@dataclass(frozen=True)
class PgType:
    """A type as PostgreSQL's parser reads it: base name, type modifiers, array dimensions."""

    base: str  # canonical built-in name ("int4", "varchar", "numeric"), or the name as written
    mods: tuple[int, ...] = ()
    array: bool = False
    schema: str | None = None  # None for built-ins (pg_catalog)
    text: str = ""  # as given (the SQL to emit)

    @property
    def builtin(self) -> bool:
        return self.schema is None

    def same(self, other: PgType) -> bool:
        return (self.base, self.mods, self.array, self.schema) == (
            other.base,
            other.mods,
            other.array,
            other.schema,
        )


def parse(text: str) -> PgType:
    """Parse a type name (``bigint``, ``varchar(200)``, ``numeric(12,2)[]``); BadInput if it is not one."""
    import pglast

    source = text.strip()
    if not source or ";" in source:
        raise BadInput(f"{text!r} is not a type name")
    try:
        statements = pglast.parse_sql(f"SELECT NULL::{source}")
    except pglast.parser.ParseError as exc:
        raise BadInput(f"{text!r} is not a type name: {exc}") from None
    target = getattr(statements[0].stmt, "targetList", None) if len(statements) == 1 else None
    node = target[0].val if target and len(target) == 1 else None
    type_name = getattr(node, "typeName", None)
    if type_name is None or getattr(node, "arg", None) is None:
        raise BadInput(f"{text!r} is not a type name")
    names = [n.sval for n in type_name.names]
    schema = names[0] if len(names) > 1 else None
    base = names[-1]
    if schema == "pg_catalog":
        schema = None
    if schema is None:
        base = _ALIASES.get(base.lower(), base.lower())
    mods: list[int] = []
    for mod in type_name.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if not isinstance(value, int):
            raise BadInput(f"{text!r}: type modifiers must be integers")
        mods.append(value)
    return PgType(base, tuple(mods), type_name.arrayBounds is not None, schema, source)


def in_place(old: PgType, new: PgType, server_version_num: int) -> bool:
    """``ALTER COLUMN TYPE`` changes only the catalog for this pair on this server version.

    The column's own CHECK constraints and some indexes still cost a scan or a rebuild: the
    planner looks at those (see ``change_type``).
    """
    if old.array or new.array or not (old.builtin and new.builtin):
        # An array's elements are coerced one by one: every array pair measured rewrote.
        return False
    return _catalog_only(old, new, server_version_num)


def _catalog_only(old: PgType, new: PgType, server_version_num: int) -> bool:
    """The element types' pair is binary-compatible and needs no check of the values."""
    if old.base in ("varchar", "varbit") and new.base == old.base:
        # Raising the length limit, or removing it.
        return not new.mods or (bool(old.mods) and new.mods[0] >= old.mods[0])
    if old.base == "varchar" and new.base == "text":
        return True
    if old.base == "numeric" and new.base == "numeric":
        # More precision at the same scale, or no limit at all; a scale change rewrites.
        if not new.mods:
            return True
        if not old.mods:
            return False
        old_scale = old.mods[1] if len(old.mods) > 1 else 0
        new_scale = new.mods[1] if len(new.mods) > 1 else 0
        return new.mods[0] >= old.mods[0] and new_scale == old_scale
    # timestamp → timestamptz reads the stored values as UTC when TimeZone is UTC (PostgreSQL 12+).
    # A precision below 6 rounds every value: a rewrite (measured, whatever the old precision).
    return (
        old.base == "timestamp"
        and new.base == "timestamptz"
        and (not new.mods or new.mods[0] >= 6)
        and server_version_num >= 120000
    )


def same_name(old: PgType, new: PgType) -> bool:
    """Old code (old type) and new code (new type) both work on the column during the deploy."""
    if old.array != new.array or not (old.builtin and new.builtin):
        return False
    if (old.base, new.base) in _WIDENING:
        return True
    if old.base == "numeric" and new.base == "numeric":
        return _numeric_widens(old, new)
    return _catalog_only(old, new, 120000)


def one_to_one(old: PgType, new: PgType) -> bool:
    """The default cast never maps two distinct old values to one new value."""
    if same_name(old, new):
        return True
    return (
        old.builtin
        and new.builtin
        and old.base in ("int2", "int4", "int8")
        and new.base in ("numeric", "text")
    )


def can_fail(old: PgType, new: PgType) -> bool:
    """Whether the default cast can raise for some old value (a narrowing or a parse)."""
    return not same_name(old, new)


def _numeric_widens(old: PgType, new: PgType) -> bool:
    if not new.mods:
        return True
    if not old.mods:
        return False
    old_p, old_s = old.mods[0], old.mods[1] if len(old.mods) > 1 else 0
    new_p, new_s = new.mods[0], new.mods[1] if len(new.mods) > 1 else 0
    # Every old value fits: as many digits before the point, at least as many after.
    return new_s >= old_s and new_p - new_s >= old_p - old_s
