"""Facts from SQLAlchemy MetaData, for ``ecm plan --from-metadata`` when no database is at hand.

MetaData describes what the application *believes* the table looks like, so these facts
are best effort: things only the server knows (grants, views, policies, triggers, row
counts, validity) are left empty, and names PostgreSQL would pick for unnamed
constraints are predicted with its own rules. Where a value is spelled by PostgreSQL
(types, sequence defaults) it is normalized to the catalog's spelling, so that facts
from either source can be compared.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateIndex
from sqlalchemy.types import ARRAY, Enum, TypeDecorator, TypeEngine, UserDefinedType

from ..errors import BadInput
from ..sql.quoting import literal, q, qualified
from ..sql.rewrite import index_definition, index_key_columns, index_references_column, references_column
from .facts import CheckFact, ColumnFacts, ForeignKeyFact, IndexFact, TableFacts

__all__ = ["facts_from_metadata", "load_metadata"]

NAMEDATALEN = 64

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

# Types that ship with extensions: not in pg_catalog even though SQLAlchemy knows them.
_EXTENSION_TYPES = frozenset({"HSTORE", "CITEXT"})

_COLLATE = re.compile(r'\s+COLLATE\s+(?:"(?:[^"]|"")*"|\S+)', re.IGNORECASE)


def _show(schema: str | None, name: str) -> str:
    """Names in messages, spelled as in :func:`expandcontract.db.catalog.show`."""
    text = qualified(schema, name)
    return text if '"' in text else f'"{text}"'


# -- loading -------------------------------------------------------------------------------


def load_metadata(spec: str, option: str = "--from-metadata") -> MetaData:
    """Import ``module:attribute``; the attribute may be MetaData or anything with ``.metadata``.

    The current directory is put on ``sys.path`` first, because ``ecm`` runs as a
    console script from the project root, where ``python -m`` would have found the
    application's package but the script's own path would not.
    """
    module_name, sep, attribute = spec.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise BadInput(f"{option} expects module:attribute (e.g. app.models:Base), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise BadInput(f"cannot import module {module_name!r}: no such module on sys.path") from exc
        raise BadInput(f"cannot import module {module_name!r}: {_first_line(exc)}") from exc
    except Exception as exc:  # the application's own import-time error: show it, briefly
        raise BadInput(f"cannot import module {module_name!r}: {_first_line(exc)}") from exc
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise BadInput(f"module {module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    if isinstance(value, MetaData):
        return value
    metadata = getattr(value, "metadata", None)
    if isinstance(metadata, MetaData):
        return metadata
    raise BadInput(
        f"{spec} is of type {type(value).__name__}, not a MetaData, declarative base or registry"
        " (expected an object with a .metadata attribute)"
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# -- PostgreSQL's naming and spelling ------------------------------------------------------


def _clip(name: str, max_bytes: int) -> str:
    """Cut to at most ``max_bytes`` UTF-8 bytes without splitting a character (pg_mbcliplen)."""
    return name.encode()[:max_bytes].decode(errors="ignore")


def pg_object_name(name1: str, name2: str | None, label: str | None) -> str:
    """The name PostgreSQL's makeObjectName() builds, e.g. ``orders_customer_id_fkey``.

    Long names are shortened the way the server does it (the longer part first), so a
    predicted name matches what the server will create; collisions with existing
    objects, which the server resolves by appending digits, cannot be predicted.
    """
    overhead = (1 if name2 else 0) + (len(label.encode()) + 1 if label else 0)
    available = NAMEDATALEN - 1 - overhead
    n1, n2 = len(name1.encode()), len(name2.encode()) if name2 else 0
    while n1 + n2 > available:
        if n1 > n2:
            n1 -= 1
        else:
            n2 -= 1
    parts = [_clip(name1, n1)]
    if name2:
        parts.append(_clip(name2, n2))
    if label:
        parts.append(label)
    return "_".join(parts)


def _column_list_name(names: Iterable[str]) -> str:
    """ChooseIndexColumnNames / ChooseForeignKeyConstraintNameAddition: names joined by '_'."""
    joined = ""
    for name in names:
        candidate = f"{joined}_{name}" if joined else name
        if len(candidate.encode()) >= NAMEDATALEN:
            break
        joined = candidate
    return joined


def _constraint_name(constraint: Any, default: str) -> str:
    """The name the DDL would use: explicit, from the naming convention, else PostgreSQL's."""
    if constraint.name is None:  # SQLAlchemy leaves it None when no naming convention applies
        return default
    try:
        name = _DIALECT.identifier_preparer.format_constraint(constraint, _alembic_quote=False)
    except SQLAlchemyError:
        name = constraint.name if isinstance(constraint.name, str) else None
    return str(name) if name else default


_TYPE_SPELLINGS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), replacement)
    for pattern, replacement in (
        (r"^(?:INTEGER|INT|INT4)$", "integer"),
        (r"^(?:BIGINT|INT8)$", "bigint"),
        (r"^(?:SMALLINT|INT2)$", "smallint"),
        (r"^(?:VARCHAR|CHARACTER VARYING)(\(\d+\))?$", r"character varying\1"),
        (r"^(?:CHAR|CHARACTER|BPCHAR)(\(\d+\))$", r"character\1"),
        (r"^(?:CHAR|CHARACTER)$", "character(1)"),
        (r"^(?:NUMERIC|DECIMAL)\((\d+)\)$", r"numeric(\1,0)"),
        (r"^(?:NUMERIC|DECIMAL)\((\d+),\s*(\d+)\)$", r"numeric(\1,\2)"),
        (r"^(?:NUMERIC|DECIMAL)$", "numeric"),
        (r"^(?:FLOAT|DOUBLE|DOUBLE PRECISION|FLOAT8)$", "double precision"),
        (r"^(?:REAL|FLOAT4)$", "real"),
        (r"^(TIMESTAMP|TIME)(\(\d+\))?$", r"\1\2 without time zone"),
        (r"^BOOL$", "boolean"),
        (r"^BIT$", "bit(1)"),
    )
)


def pg_type_spelling(compiled: str) -> str:
    """SQLAlchemy's DDL type spelling turned into format_type()'s (``VARCHAR(20)`` -> ``character varying(20)``).

    Only names without double quotes are touched: unquoted identifiers fold to lower
    case in PostgreSQL anyway, so lowering them never changes which type is meant.
    """
    text = _COLLATE.sub("", compiled).strip()
    dims = 0
    while text.endswith("[]"):
        text, dims = text[:-2].rstrip(), dims + 1
    text = re.sub(r"\[\d*\]$", "", text)
    if '"' not in text:
        float_p = re.fullmatch(r"FLOAT\((\d+)\)", text, re.IGNORECASE)
        if float_p:
            text = "real" if int(float_p.group(1)) <= 24 else "double precision"
        for pattern, replacement in _TYPE_SPELLINGS:
            if pattern.fullmatch(text):
                text = pattern.sub(replacement, text)
                break
        text = re.sub(r",\s+", ",", text.lower())
    return text + ("[]" if dims else "")


def _type_is_builtin(type_: TypeEngine[Any]) -> bool:
    while True:
        if isinstance(type_, TypeDecorator):
            type_ = type_.load_dialect_impl(_DIALECT)
        elif isinstance(type_, ARRAY):
            type_ = type_.item_type
        else:
            break
    if isinstance(type_, Enum):
        return not type_.native_enum
    if isinstance(type_, UserDefinedType | postgresql.DOMAIN):
        return False
    if type(type_).__name__.upper() in _EXTENSION_TYPES:
        return False
    return type(type_).__module__.startswith("sqlalchemy.")


# -- rendering and matching ----------------------------------------------------------------


def _ddl_compiler() -> Any:
    """A DDL compiler with no statement: only its per-column and per-expression helpers are used."""
    factory: Any = _DIALECT.ddl_compiler
    return factory(_DIALECT, None)


def _sql(element: Any) -> str:
    """An expression as the DDL compiler renders it (no table prefixes, literal values)."""
    if isinstance(element, str):
        return element
    compiler = _ddl_compiler()
    return str(compiler.sql_compiler.process(element, include_table=False, literal_binds=True))


def _mentions(sql: str, name: str, what: str) -> bool:
    """Whether SQL text refers to a column, as PostgreSQL's parser reads it.

    ``what`` names the construct for the error when the text is not SQL at all: the
    server would refuse it too, and guessing would risk missing a reference.
    """
    try:
        return references_column(sql, name)
    except BadInput as exc:
        raise BadInput(f"{what}: {exc}") from exc


def _pg_option(construct: Any, option: str) -> Any:
    try:
        return construct.dialect_options["postgresql"][option]
    except (KeyError, AttributeError):
        return None


def _include_names(construct: Any) -> list[str]:
    return [c if isinstance(c, str) else c.name for c in _pg_option(construct, "include") or ()]


# -- the facts -----------------------------------------------------------------------------


def _find_table(metadata: MetaData, schema: str | None, table: str, default_schema: str) -> Table:
    named = [t for t in metadata.tables.values() if t.name == table]
    if schema is not None:
        matches = [t for t in named if (t.schema or default_schema) == schema]
    else:
        matches = [t for t in named if (t.schema or default_schema) == default_schema] or named
    if len(matches) == 1:
        return matches[0]
    if matches:
        schemas = ", ".join(sorted(q(t.schema or default_schema) for t in matches))
        raise BadInput(
            f"table {_show(None, table)} is in several schemas of the metadata ({schemas}): pass the schema"
        )
    similar = sorted(
        qualified(t.schema or default_schema, t.name)
        for t in metadata.tables.values()
        if t.name.lower() == table.lower()
    )
    hint = f" (did you mean {' or '.join(similar)}?)" if similar else ""
    raise BadInput(f"table {_show(schema or default_schema, table)} does not exist in the metadata{hint}")


def _column_facts(table: Table, column: Column[Any], schema: str, default_schema: str) -> ColumnFacts:
    ddl = _ddl_compiler()
    default = ddl.get_column_default_string(column)
    identity = ""
    generated = ""
    owned_sequence = None
    sequence_name = pg_object_name(table.name, column.name, "seq")
    visible = schema == default_schema
    if column.identity is not None:
        identity = "a" if column.identity.always else "d"
        owned_sequence = qualified(schema, sequence_name)
    elif column.computed is not None:
        # As in the catalog, where a generated column's expression is its pg_attrdef entry.
        generated = "v" if column.computed.persisted is False else "s"
        default = _sql(column.computed.sqltext)
    elif re.search(r"\b(?:SMALL|BIG)?SERIAL\b", ddl.get_column_specification(column)):
        owned_sequence = qualified(schema, sequence_name)
        regclass = q(sequence_name) if visible else owned_sequence
        default = f"nextval({literal(regclass)}::regclass)"
    collation = getattr(column.type, "collation", None)
    domain: dict[str, Any] = {}
    if isinstance(column.type, postgresql.DOMAIN):
        kind = column.type
        domain = {
            "not_null_domain": qualified(kind.schema or default_schema, str(kind.name))
            if kind.not_null
            else None,
            "domain_constrained": bool(kind.not_null or kind.check is not None),
            "domain_default": _sql(kind.default) if kind.default is not None else None,
        }
    return ColumnFacts(
        name=column.name,
        type_sql=pg_type_spelling(str(column.type.compile(dialect=_DIALECT))),
        nullable=bool(column.nullable),
        default=default,
        collation=q(collation) if collation and collation != "default" else None,
        identity=identity,
        generated=generated,
        comment=column.comment,
        owned_sequence=owned_sequence,
        type_is_builtin=_type_is_builtin(column.type),
        **domain,
    )


def _constraint_index_definition(
    name: str, schema: str, table: Table, columns: list[str], include: list[str], nulls_not_distinct: bool
) -> str:
    """What pg_get_indexdef() shows for the index behind a PRIMARY KEY/UNIQUE constraint."""
    definition = (
        f"CREATE UNIQUE INDEX {q(name)} ON {qualified(schema, table.name)} USING btree "
        f"({', '.join(q(c) for c in columns)})"
    )
    if include:
        definition += f" INCLUDE ({', '.join(q(c) for c in include)})"
    if nulls_not_distinct:
        definition += " NULLS NOT DISTINCT"
    return definition


def _index_definition(index: Index, name: str, schema: str) -> str:
    """What pg_get_indexdef() would show for the index, so a rename can rewrite it like the catalog's.

    SQLAlchemy's CREATE INDEX leaves out ``USING btree`` and the schema of a table
    without one; the statement is parsed and printed again in the catalog's layout.
    """
    compiled = str(CreateIndex(index).compile(dialect=_DIALECT)).strip()
    try:
        return index_definition(compiled, name=name, schema=schema)
    except BadInput as exc:
        raise BadInput(f"index {q(name)}: {exc}") from exc


def _index_facts(
    table: Table, column: str, schema: str, nullable: dict[str, bool]
) -> tuple[tuple[str, ...], list[tuple[str, ...]], list[IndexFact]]:
    """Primary key, unique keys, and the indexes involving the column (constraint-backed ones too)."""
    indexes: list[IndexFact] = []
    unique_keys: list[tuple[str, ...]] = []
    primary_key = tuple(c.name for c in table.primary_key.columns)

    def is_key(columns: tuple[str, ...]) -> bool:
        return bool(columns) and columns != primary_key and not any(nullable[c] for c in columns)

    for constraint in table.constraints:
        if not isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint):
            continue
        columns = [c.name for c in constraint.columns]
        if not columns:
            continue
        primary = isinstance(constraint, PrimaryKeyConstraint)
        label = "pkey" if primary else "key"
        name = _constraint_name(
            constraint, pg_object_name(table.name, None if primary else _column_list_name(columns), label)
        )
        include = _include_names(constraint)
        if not primary and is_key(tuple(columns)):
            unique_keys.append(tuple(columns))
        if column in columns or column in include:
            nulls_not_distinct = bool(_pg_option(constraint, "nulls_not_distinct"))
            indexes.append(
                IndexFact(
                    name=name,
                    definition=_constraint_index_definition(
                        name, schema, table, columns, include, nulls_not_distinct
                    ),
                    unique=True,
                    primary=primary,
                    constraint=name,
                    columns=tuple(columns),
                )
            )

    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        name = _constraint_name(index, str(index.name))
        definition = _index_definition(index, name, schema)
        # From the definition, as the catalog has it: ``email DESC`` is still a plain key.
        keys = index_key_columns(definition)
        plain = keys or ()
        where = _pg_option(index, "where")
        if index.unique and where is None and is_key(plain):
            unique_keys.append(plain)
        if not index_references_column(definition, column):
            continue
        indexes.append(
            IndexFact(
                name=name,
                definition=definition,
                unique=bool(index.unique),
                partial=where is not None,
                expression=keys is None,
                columns=plain,
            )
        )
    unique = sorted(set(unique_keys))
    return primary_key, unique, sorted(indexes, key=lambda i: i.name)


def _fk_target(element: Any, default_schema: str) -> tuple[str, str, str]:
    """(schema, table, column) an FK element points at, resolved through the MetaData if possible."""
    try:
        target = element.column
        return (target.table.schema or default_schema, target.table.name, target.name)
    except SQLAlchemyError:
        parts = str(element.target_fullname).split(".")
        schema = ".".join(parts[:-2]) or default_schema
        return (schema, parts[-2], parts[-1])


def _fk_fact(fk: ForeignKeyConstraint, default_schema: str) -> ForeignKeyFact:
    table = fk.table
    columns = [c.name for c in fk.columns] or [str(k) for k in fk.column_keys]
    targets = [_fk_target(e, default_schema) for e in fk.elements]
    ref_schema, ref_table = (targets[0][0], targets[0][1]) if targets else (default_schema, "")
    return ForeignKeyFact(
        name=_constraint_name(fk, pg_object_name(table.name, _column_list_name(columns), "fkey")),
        schema=table.schema or default_schema,
        table=table.name,
        columns=tuple(columns),
        ref_schema=ref_schema,
        ref_table=ref_table,
        ref_columns=tuple(t[2] for t in targets),
        on_update=(fk.onupdate or "NO ACTION").upper(),
        on_delete=(fk.ondelete or "NO ACTION").upper(),
        match_full=(fk.match or "").upper() == "FULL",
        deferrable=bool(fk.deferrable),
        initially_deferred=(fk.initially or "").upper() == "DEFERRED",
        valid=not _pg_option(fk, "not_valid"),
    )


def _check_facts(table: Table, column: str) -> list[CheckFact]:
    constraints: list[CheckConstraint] = []
    for candidate in [*table.constraints, *(c for col in table.columns for c in col.constraints)]:
        if isinstance(candidate, CheckConstraint) and candidate not in constraints:
            constraints.append(candidate)
    facts = []
    for check in constraints:
        expression = _sql(check.sqltext)
        declared = {c.name for c in check.columns}
        what = f"check {check.name}" if isinstance(check.name, str) else f"check ({expression})"
        mentioned = [
            c.name for c in table.columns if c.name in declared or _mentions(expression, c.name, what)
        ]
        if column not in mentioned:
            continue
        # PostgreSQL names an unnamed CHECK after its column when it reads exactly one.
        default = pg_object_name(table.name, mentioned[0] if len(mentioned) == 1 else None, "check")
        facts.append(
            CheckFact(
                name=_constraint_name(check, default),
                expression=expression,
                valid=not _pg_option(check, "not_valid"),
            )
        )
    return sorted(facts, key=lambda f: f.name)


def facts_from_metadata(
    metadata: MetaData, schema: str | None, table: str, column: str | None, *, default_schema: str = "public"
) -> TableFacts:
    """TableFacts for ``table.column`` as the MetaData describes it; no connection involved.

    Tables without a schema are taken to live in ``default_schema``; ``schema=None``
    looks there first and then accepts a table of that name in any single schema.
    """
    found = _find_table(metadata, schema, table, default_schema)
    schema_name = found.schema or default_schema
    if column is None:  # the table alone, for an operation that adds a column
        nullable = {c.name: bool(c.nullable) for c in found.columns}
        primary_key, unique_keys, _ = _index_facts(found, "", schema_name, nullable)
        return TableFacts(
            schema=schema_name,
            name=found.name,
            columns=tuple(c.name for c in found.columns),
            kind="p" if _pg_option(found, "partition_by") is not None else "r",
            primary_key=primary_key,
            unique_keys=tuple(unique_keys),
            extra={"source": "metadata"},
        )
    target = next((c for c in found.columns if c.name == column), None)
    if target is None:
        listed = ", ".join(q(c.name) for c in found.columns)
        near = [c.name for c in found.columns if c.name.lower() == column.lower()]
        hint = f"did you mean {q(near[0])}?" if near else f"columns: {listed or 'none'}"
        raise BadInput(
            f"column {_show(None, column)} does not exist in table {_show(schema_name, found.name)}"
            f" of the metadata ({hint})"
        )
    nullable = {c.name: bool(c.nullable) for c in found.columns}
    primary_key, unique_keys, indexes = _index_facts(found, column, schema_name, nullable)

    foreign_keys = [
        _fk_fact(fk, default_schema)
        for fk in found.foreign_key_constraints
        if column in [c.name for c in fk.columns]
    ]
    referenced_by = []
    for other in metadata.tables.values():
        for fk in other.foreign_key_constraints:
            if (schema_name, found.name, column) in [_fk_target(e, default_schema) for e in fk.elements]:
                referenced_by.append(_fk_fact(fk, default_schema))

    partitioned = _pg_option(found, "partition_by") is not None
    return TableFacts(
        schema=schema_name,
        name=found.name,
        column=_column_facts(found, target, schema_name, default_schema),
        columns=tuple(c.name for c in found.columns),
        kind="p" if partitioned else "r",
        primary_key=primary_key,
        unique_keys=tuple(unique_keys),
        row_estimate=0,
        indexes=tuple(indexes),
        foreign_keys=tuple(sorted(foreign_keys, key=lambda f: f.name)),
        referenced_by=tuple(sorted(referenced_by, key=lambda f: (f.name, f.schema, f.table))),
        checks=tuple(_check_facts(found, column)),
        extra={"source": "metadata"},
    )
