"""Facts about a table and one of its columns, as read from the catalog or from MetaData.

Facts are plain frozen data and round-trip through JSON, because generated revisions
freeze them: a revision must still run years later without the application's models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class IndexFact:
    """An index that includes the column (by key, INCLUDE, expression or predicate)."""

    name: str
    definition: str  # pg_get_indexdef(): CREATE [UNIQUE] INDEX name ON schema.table USING ...
    unique: bool = False
    primary: bool = False
    partial: bool = False
    expression: bool = False
    valid: bool = True
    constraint: str | None = None  # name of the UNIQUE/PRIMARY KEY constraint the index backs
    columns: tuple[str, ...] = ()  # plain key columns, in order (empty for expression keys)


@dataclass(frozen=True)
class ForeignKeyFact:
    """A foreign key: either from the column's table, or from another table referencing it."""

    name: str
    schema: str  # referencing table
    table: str
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    on_update: str = "NO ACTION"
    on_delete: str = "NO ACTION"
    match_full: bool = False
    deferrable: bool = False
    initially_deferred: bool = False
    valid: bool = True


@dataclass(frozen=True)
class CheckFact:
    """A CHECK constraint whose expression references the column."""

    name: str
    expression: str  # the boolean expression inside CHECK ( ... )
    valid: bool = True
    no_inherit: bool = False


@dataclass(frozen=True)
class GrantFact:
    """A column-level privilege (GRANT privilege (column) ON table TO grantee)."""

    grantee: str  # role name, or PUBLIC
    privilege: str  # SELECT, INSERT, UPDATE, REFERENCES
    grantable: bool = False


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    type_sql: str  # format_type(): e.g. "character varying(200)", "numeric(10,2)", "text[]"
    nullable: bool = True
    default: str | None = None  # pg_get_expr of the default, if any
    collation: str | None = None  # collation name when it differs from the type's default
    identity: str = ""  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    generated: str = ""  # '' | 's' (STORED)
    comment: str | None = None
    owned_sequence: str | None = None  # schema-qualified, quoted, when a sequence is OWNED BY the column
    grants: tuple[GrantFact, ...] = ()
    type_is_builtin: bool = True
    # When the type is a domain: the domain that makes it NOT NULL (qualified, quoted), whether
    # any domain of the chain has constraints (ADD COLUMN of such a type rewrites the table),
    # and the default the domain gives an insert that leaves the column out.
    not_null_domain: str | None = None
    domain_constrained: bool = False
    domain_default: str | None = None


@dataclass(frozen=True)
class TableFacts:
    schema: str
    name: str
    column: ColumnFacts | None = None  # the column the operation works on, when it has one
    columns: tuple[str, ...] = ()  # every column of the table, in order
    kind: str = "r"  # pg_class.relkind: r table, p partitioned table, v view, ...
    is_partition: bool = False
    primary_key: tuple[str, ...] = ()
    unique_keys: tuple[tuple[str, ...], ...] = ()  # unique constraints/indexes on NOT NULL columns
    row_estimate: int = 0
    indexes: tuple[IndexFact, ...] = ()
    foreign_keys: tuple[ForeignKeyFact, ...] = ()  # FKs of this table that include the column
    referenced_by: tuple[ForeignKeyFact, ...] = ()  # FKs of other tables that reference the column
    checks: tuple[CheckFact, ...] = ()
    dependent_views: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    other_triggers: tuple[str, ...] = ()
    # What uses the column beyond views, policies and foreign keys (their own facts): objects
    # DROP COLUMN refuses to drop without CASCADE, and trigger functions that would fail once
    # it is gone. (kind, name), kind one of "rule", "trigger", "trigger function" (its source
    # reads NEW.column/OLD.column), "generated column", "publication" (a column list),
    # "object" (pg_describe_object's words).
    dependents: tuple[tuple[str, str], ...] = ()
    replica_identity_index: str | None = None  # the REPLICA IDENTITY index, when it has the column
    server_version_num: int = 150000
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def col(self) -> ColumnFacts:
        """The operation's column; only column operations read it."""
        if self.column is None:
            raise ValueError(f"facts of {self.schema}.{self.name} were read without a column")
        return self.column

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableFacts:
        result: TableFacts = _build(cls, data)
        return result


def _build(cls: Any, data: Any) -> Any:
    """Rebuild nested frozen dataclasses from their asdict() form (tuples from lists)."""
    if not isinstance(data, dict):
        return data
    hints = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    nested = {
        "column": ColumnFacts,
        "indexes": IndexFact,
        "foreign_keys": ForeignKeyFact,
        "referenced_by": ForeignKeyFact,
        "checks": CheckFact,
        "grants": GrantFact,
    }
    for key, value in data.items():
        if key not in hints:
            continue
        if key in nested:
            target = nested[key]
            if isinstance(value, (list, tuple)):
                value = tuple(_build(target, v) for v in value)
            else:
                value = _build(target, value)
        elif isinstance(value, (list, tuple)):
            value = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
        kwargs[key] = value
    return cls(**kwargs)


def related_facts(facts: TableFacts, schema: str, table: str) -> TableFacts:
    """Whole-table facts of another table the operation asked for (``Operation.related``)."""
    found = facts.extra.get("related", {}).get(f"{schema}.{table}")
    if found is None:
        raise KeyError(f"facts of {schema}.{table} were not read")
    return TableFacts.from_json(found)
