"""merge-columns: several columns become one computed from them, and are recomputed from it.

Pure: facts in, a :class:`Plan` out; split-column's plan seen from the other end (see
:mod:`expandcontract.plan.splitmerge`).
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
class MergeColumns(Operation):
    """OLD columns merged into NEW by NEW=SQL; each --split OLD=SQL takes one back out."""

    kind: ClassVar[str] = "merge-columns"
    id_verb: ClassVar[str] = "merge"
    whole_table: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "Merge columns into one with zero downtime: NEW computed from the OLD columns, one trigger, "
        "backfill, then drop them."
    )
    phases_help: ClassVar[str] = (
        "Plan time: existing rows must round-trip (each --split of the merge equals its OLD), else exit 1 "
        "with the count and sample keys. expand: add NEW (text unless NEW:TYPE=SQL; nullable, no default) "
        "and one trigger that computes NEW from the OLD columns when a write sets any of them, and each OLD "
        "from NEW (--split) when it sets NEW. backfill: compute NEW for existing rows, in batches. contract "
        "(after old code is gone): drop the trigger and the OLD columns."
    )

    new: str = param(
        "The new column and the SQL over the OLD columns that computes it: NEW=SQL, or NEW:TYPE=SQL "
        "(default type text).",
        metavar="NEW=SQL",
    )
    old: tuple[str, ...] = param("The columns to merge.", metavar="OLD...")
    split: tuple[str, ...] = param(
        "OLD=SQL over NEW that recomputes one old column; one for each OLD (required).",
        "--split",
        default=(),
        metavar="OLD=SQL",
    )

    def check_input(self) -> None:
        super().check_input()
        assignment(self.new, "new column", typed=True)
        if not self.old:
            raise BadInput("give the OLD columns to merge")
        for column in self.old:
            checks.identifier(column, "column")
        if len(set(self.old)) != len(self.old):
            raise BadInput("an OLD column is named twice")
        given = [assignment(text, "--split", typed=False)[0] for text in self.split]
        for name in given:
            if name not in self.old:
                raise BadInput(f"--split {name}=SQL names no OLD column (OLD: {', '.join(self.old)})")
        if len(set(given)) != len(given):
            raise BadInput("an OLD column has two --split expressions")
        missing = [c for c in self.old if c not in given]
        if missing:
            raise BadInput(f"--split OLD=SQL is required for each OLD column; missing: {', '.join(missing)}")

    def id_parts(self) -> tuple[str, ...]:
        return (*self.old, assignment(self.new, "new column", typed=True)[0])

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        olds = old_columns(facts, self.old)
        name, type_text, sql = assignment(self.new, "new column", typed=True)
        column = new_column(facts, name, type_text, set())
        merged = expression(sql, f"NEW {name}=SQL", self.old, "the OLD columns")
        splits: dict[str, tuple[str, str]] = {}
        for text in self.split:
            target, _, expr = assignment(text, "--split", typed=False)
            splits[target] = (expr, expression(expr, f"--split {target}=SQL", (name,), f"column {name}"))
        reverse = tuple(Computed(c, *splits[c.name]) for c in olds)
        planner = Planner(
            facts,
            self.id_for(facts),
            operation=self.kind,
            title=f"merge {facts.name}.{', '.join(self.old)} into {name}",
            forward=(Computed(column, sql, merged),),
            reverse=reverse,
            spec={
                "operation": self.kind,
                "schema": facts.schema,
                "table": facts.name,
                "new": self.new,
                "old": list(self.old),
                "split": list(self.split),
            },
        )
        return planner.plan()
