"""add-index: one expand phase, ``CREATE [UNIQUE] INDEX CONCURRENTLY``; nothing to contract.

An index changes no row and no column, so old and new code both keep working while it is
built and after: there is nothing for a guard to wait for, and no backfill. What can go
wrong is the build itself. CONCURRENTLY keeps reads and writes going (SHARE UPDATE
EXCLUSIVE) but cannot run in a transaction and, when it fails, leaves an INVALID index
behind: the step carries the index's name, so the executor drops such a leftover and
builds again. A unique build meets every duplicate only after scanning the whole table,
so duplicates are counted first (exit 1 at plan time and again as the phase's first
step, with sample keys, nothing built); one written during the build still fails it,
and the executor then drops the half-built index at once (see
:func:`expandcontract.db.executor.execute`), since a unique index that is not ready yet
would otherwise stay and keep rejecting writes of the duplicate's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...sql.quoting import qualified
from ..facts import TableFacts
from ..indexes import IndexSpec, read_spec, refuse_taken, refuse_unindexable
from ..model import Phase, Plan, Step
from .base import Operation, param


@dataclass(frozen=True)
class AddIndex(Operation):
    """The operation's parameters (the facts come separately, from the catalog or MetaData)."""

    kind: ClassVar[str] = "add-index"
    summary: ClassVar[str] = (
        "Add an index with zero downtime: CREATE INDEX CONCURRENTLY (duplicates counted first for "
        "--unique), one expand phase."
    )
    phases_help: ClassVar[str] = (
        "expand only: with --unique, duplicate keys are counted first (exit 1 with the count and sample "
        "keys, nothing built); then CREATE [UNIQUE] INDEX CONCURRENTLY (SHARE UPDATE EXCLUSIVE: reads and "
        "writes continue), an INVALID leftover of an earlier attempt dropped and rebuilt. Downgrade: DROP "
        "INDEX CONCURRENTLY. Partitioned tables are refused (PostgreSQL cannot build CONCURRENTLY on them)."
    )
    whole_table: ClassVar[bool] = True

    columns: tuple[str, ...] = param("Key columns, in order.", metavar="COLUMN...", default=())
    index: str | None = param(
        "Index name (default: like PostgreSQL's, table_col_idx).", "--name", default=None
    )
    unique: bool = param("A unique index (duplicate keys counted first).", "--unique", default=False)
    where_sql: str | None = param(
        "Partial index predicate, a SQL expression over the table's columns.",
        "--where",
        default=None,
        metavar="SQL",
    )
    using: str | None = param(
        "Index method (btree, hash, gist, gin, spgist, brin).", "--using", default=None, metavar="METHOD"
    )
    include: tuple[str, ...] = param(
        "Non-key column stored in the index (repeat for more).", "--include", default=(), metavar="COLUMN"
    )
    expression: str | None = param(
        'An expression key after the columns, e.g. "lower(email)".',
        "--expression",
        default=None,
        metavar="SQL",
    )

    def spec(self, facts: TableFacts | None) -> IndexSpec:
        return read_spec(
            facts,
            schema=facts.schema if facts else (self.schema or ""),
            table=facts.name if facts else self.table,
            columns=self.columns,
            name=self.index,
            unique=self.unique,
            where=self.where_sql,
            using=self.using,
            include=self.include,
            expression=self.expression,
        )

    def check_input(self) -> None:
        super().check_input()
        self.spec(None)

    def id_parts(self) -> tuple[str, ...]:
        return (self.index,) if self.index else (*self.columns, *(("expr",) if self.expression else ()))

    def validate(self, facts: TableFacts) -> None:
        refuse_unindexable(facts, "unique" if self.unique else "index")
        refuse_taken(facts, self.spec(facts).name)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        ix = self.spec(facts)
        return index_plan(self, facts, ix, title=f"add {'unique ' if ix.unique else ''}index {ix.name}")


def index_plan(
    op: Operation,
    facts: TableFacts,
    ix: IndexSpec,
    *,
    title: str,
    extra: tuple[Step, ...] = (),
    undo: tuple[Step, ...] = (),
    notes: tuple[str, ...] = (),
) -> Plan:
    """The one-phase plan add-index and add-unique share: prechecks, the build, ``extra``."""
    plan_id = op.id_for(facts)
    up: list[Step] = [ix.name_free()]
    if ix.unique:
        up.append(ix.duplicates())
    up += [ix.build(), *extra]
    where = qualified(facts.schema, facts.name)
    expand = Phase(
        "expand",
        f"Build {ix.name} on {where} CONCURRENTLY"
        + (" (unique, duplicates counted first)" if ix.unique else "")
        + (", then attach it as a constraint." if extra else "."),
        tuple(up),
        (*undo, ix.drop()),
        before="Nothing: old code keeps working while the index is built and after.",
        after="Any code may rely on the index" + (" and its uniqueness." if ix.unique else "."),
        rollback=(
            "Downgrade this revision: "
            + ("drops the constraint, then " if undo else "")
            + f"DROP INDEX CONCURRENTLY {ix.name}"
            + (
                " (code that relies on its uniqueness, such as ON CONFLICT, stops working)"
                if ix.unique
                else ""
            )
            + "."
        ),
    )
    key = f"{facts.schema}.{facts.name}"
    return Plan(
        plan_id=plan_id,
        operation=op.kind,
        schema=facts.schema,
        table=facts.name,
        title=f"{title} on {where}",
        phases=(expand,),
        touches={key: list(ix.reads)},
        creates=(ix.name,),
        spec={
            "operation": op.kind,
            "schema": facts.schema,
            "table": facts.name,
            "index": ix.name,
            "columns": list(ix.columns),
            "unique": ix.unique,
            "where": ix.where,
            "using": ix.using,
            "include": list(ix.include),
            "expression": ix.expression,
            "facts": facts.to_json(),
        },
        notes=notes,
    )
