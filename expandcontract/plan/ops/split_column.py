"""split-column: one column becomes several computed from it, and is recomputed from them.

Pure: facts in, a :class:`Plan` out (the building blocks are in
:mod:`expandcontract.plan.splitmerge`, shared with merge-columns, which is the same plan
seen from the other end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import BadInput
from .. import checks
from ..facts import TableFacts
from ..model import Plan
from ..splitmerge import Computed, Planner, assignment, expression, new_column, old_columns
from .base import Operation, param


@dataclass(frozen=True)
class SplitColumn(Operation):
    """OLD split into NEW columns by NEW=SQL expressions; --merge puts them back together."""

    kind: ClassVar[str] = "split-column"
    id_verb: ClassVar[str] = "split"
    whole_table: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "Split a column into several with zero downtime: NEW columns computed from OLD, one trigger, "
        "backfill, then drop OLD."
    )
    phases_help: ClassVar[str] = (
        "Plan time: existing rows must round-trip (--merge of the split equals OLD), else exit 1 with the "
        "count and sample keys. expand: add each NEW (text unless NEW:TYPE=SQL; nullable, no default) and one "
        "trigger that computes the NEW columns from OLD when a write sets OLD, and OLD from them (--merge) when "
        "it sets any of them. backfill: compute the NEW columns for existing rows, in batches. contract (after "
        "old code is gone): drop the trigger and OLD."
    )

    old: str = param("The column to split.", metavar="OLD")
    new: tuple[str, ...] = param(
        "Each new column and the SQL over OLD that computes it: NEW=SQL, or NEW:TYPE=SQL (default type text).",
        metavar="NEW=SQL...",
    )
    merge: str | None = param(
        "SQL over the new columns that recomputes OLD (required).", "--merge", default=None, metavar="SQL"
    )

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.old, "column")
        if not self.new:
            raise BadInput("give at least one NEW=SQL")
        for text in self.new:
            assignment(text, "new column", typed=True)
        if self.merge is None:
            raise BadInput("--merge SQL is required: the expression over the new columns that recomputes OLD")

    def id_parts(self) -> tuple[str, ...]:
        return (self.old,)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        (old,) = old_columns(facts, (self.old,))
        taken: set[str] = set()
        forward = []
        for text in self.new:
            name, type_text, sql = assignment(text, "new column", typed=True)
            column = new_column(facts, name, type_text, taken)
            printed = expression(sql, f"NEW {name}=SQL", (self.old,), f"column {self.old}")
            forward.append(Computed(column, sql, printed))
        news = tuple(c.target.name for c in forward)
        merged = expression(str(self.merge), "--merge", news, "the new columns")
        planner = Planner(
            facts,
            self.id_for(facts),
            operation=self.kind,
            title=f"split {facts.name}.{self.old} into {', '.join(news)}",
            forward=tuple(forward),
            reverse=(Computed(old, str(self.merge), merged),),
            spec={
                "operation": self.kind,
                "schema": facts.schema,
                "table": facts.name,
                "old": self.old,
                "new": list(self.new),
                "merge": self.merge,
            },
        )
        return planner.plan()
