"""add-unique: a UNIQUE constraint without a long lock: the unique index built CONCURRENTLY
(duplicates counted first), then ``ADD CONSTRAINT … UNIQUE USING INDEX``.

The attach takes ACCESS EXCLUSIVE but only for a catalog change (the index exists and is
valid, so nothing is scanned). It goes in the expand, right after the build, not in a
contract: the index already rejects every duplicate, so the constraint changes nothing
any running code can see — old code's writes that the constraint would reject are the
ones the index rejects already. A contract would wait on a guard with nothing to guard.
What the constraint adds is a name for ``ON CONFLICT ON CONSTRAINT`` and for reflection,
which new code may use once the expand has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import BadInput
from ...sql.quoting import q, qualified
from .. import checks
from ..blocks import Builder
from ..facts import TableFacts
from ..indexes import IndexSpec, read_spec, refuse_taken, refuse_unindexable
from ..model import Plan, Step
from .add_index import index_plan
from .base import Operation, param


@dataclass(frozen=True)
class AddUnique(Operation):
    """The operation's parameters (the facts come separately, from the catalog or MetaData)."""

    kind: ClassVar[str] = "add-unique"
    summary: ClassVar[str] = (
        "Add a UNIQUE constraint with zero downtime: unique index CONCURRENTLY (duplicates counted "
        "first), then ADD CONSTRAINT … USING INDEX (brief), one expand phase."
    )
    phases_help: ClassVar[str] = (
        "expand only: duplicate keys counted (exit 1 with the count and sample keys, nothing built); "
        "CREATE UNIQUE INDEX CONCURRENTLY (reads and writes continue); ALTER TABLE … ADD CONSTRAINT … "
        "UNIQUE USING INDEX (ACCESS EXCLUSIVE, brief: no scan). Downgrade: drop the constraint and its index."
    )
    whole_table: ClassVar[bool] = True

    columns: tuple[str, ...] = param("Key columns, in order.", metavar="COLUMN...")
    constraint: str | None = param(
        "Constraint (and index) name (default: table_col_key).", "--name", default=None
    )

    def _spec(self, facts: TableFacts | None) -> IndexSpec:
        return read_spec(
            facts,
            schema=facts.schema if facts else (self.schema or ""),
            table=facts.name if facts else self.table,
            columns=self.columns,
            name=self.constraint,
            unique=True,
            label="key",
        )

    def check_input(self) -> None:
        super().check_input()
        if not self.columns:
            raise BadInput("give at least one COLUMN for the unique constraint")
        self._spec(None)

    def id_parts(self) -> tuple[str, ...]:
        return (self.constraint,) if self.constraint else self.columns

    def validate(self, facts: TableFacts) -> None:
        refuse_unindexable(facts, "unique")
        ix = self._spec(facts)
        refuse_taken(facts, ix.name)
        key = set(self.columns)
        same = next(
            (
                i
                for i in facts.indexes
                if i.constraint and i.unique and set(i.columns) == key and not i.partial
            ),
            None,
        )
        if same is not None:
            raise BadInput(
                f"columns ({', '.join(q(c) for c in self.columns)}) of {qualified(facts.schema, facts.name)} "
                f"are already unique by constraint {q(same.constraint or '')}"
            )
        checks.identifier(ix.name, "constraint")

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        ix = self._spec(facts)
        b = Builder(facts, self.id_for(facts))
        attach = b.unique_using_index(ix.name, ix.name)
        undo: Step = b.drop_constraint(facts.schema, facts.name, ix.name)
        return index_plan(
            self,
            facts,
            ix,
            title=f"add unique constraint {ix.name} ({', '.join(self.columns)})",
            extra=(attach,),
            undo=(undo,),
            notes=(
                "the constraint is attached in the expand: the unique index already rejects every "
                "duplicate, so the constraint changes nothing running code can see",
            ),
        )
