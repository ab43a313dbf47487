"""add-check: a CHECK constraint without a scan under ACCESS EXCLUSIVE.

``ADD CONSTRAINT … CHECK`` alone scans the whole table under ACCESS EXCLUSIVE: nothing
reads or writes it meanwhile. Split up:

* **expand**: the violations counted first (``WHERE NOT (expr)``; NULL passes a check, as
  in PostgreSQL). A row that violates it is refused at plan time, with keys, because with a
  ``NOT VALID`` check in place such a row cannot be updated at all — not even on other
  columns: PostgreSQL checks every row an UPDATE writes. Then ``CHECK (…) NOT VALID``: ACCESS
  EXCLUSIVE for a catalog change only; every write from then on is checked.
* **contract**: the violations counted again (rows written before the check existed), then
  ``VALIDATE CONSTRAINT`` under SHARE UPDATE EXCLUSIVE: one scan, reads and writes go on.

Validation is the contract for the reasons add-foreign-key gives: the scan stays out of the
deploy-blocking expand, and the plan is finished once its contract is applied. It rejects
nothing the ``NOT VALID`` check did not already reject, so it has no guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...sql.expressions import one_line
from ...sql.prechecks import violations
from ...sql.quoting import q
from .. import checks
from ..blocks import VALIDATE, Builder
from ..constraints import Expression, parse_check, require_free_name, row_key
from ..facts import TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param


@dataclass(frozen=True)
class AddCheck(Operation):
    kind: ClassVar[str] = "add-check"
    summary: ClassVar[str] = (
        "Add a CHECK constraint with zero downtime: violations counted first, the check NOT VALID "
        "(brief lock), then validated without blocking reads or writes."
    )
    phases_help: ClassVar[str] = (
        "expand: count rows where the expression is false (exit 1 with the count and sample keys, nothing "
        "built: such a row could not be updated at all once the check exists); ADD CONSTRAINT NAME CHECK "
        "(SQL) NOT VALID (ACCESS EXCLUSIVE, brief, no scan): every write is checked from then on, old "
        "code's too. contract: the violations counted again, then VALIDATE CONSTRAINT (SHARE UPDATE "
        "EXCLUSIVE: reads and writes continue)."
    )
    whole_table: ClassVar[bool] = True

    constraint: str = param("Name of the new constraint (exact name; no quoting needed).", metavar="NAME")
    expression: str = param(
        'Boolean SQL expression over the table\'s columns by their bare names, e.g. "qty >= 0".',
        metavar="SQL",
    )

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.constraint, "constraint")
        parse_check(self.expression)

    def id_parts(self) -> tuple[str, ...]:
        return (self.constraint,)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        parse_check(self.expression, facts)
        require_free_name(facts, self.constraint)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts, parse_check(self.expression, facts)).plan()


class _Planner(Builder):
    def __init__(self, op: AddCheck, facts: TableFacts, expr: Expression) -> None:
        plan_id = op.id_for(facts)
        super().__init__(facts, plan_id)
        self.op = op
        self.id = plan_id
        self.expr = expr
        self.constraint = op.constraint

    def violating(self) -> Step:
        key, order = row_key(self.f, "t")
        return Step(
            f"rows of {self.table_sql} that violate {self.constraint} ({one_line(self.expr.text)})",
            "precheck",
            violations(f"FROM {self.table_sql} AS t WHERE NOT ({self.expr.sql}) ORDER BY {order}", key),
            lock="ACCESS SHARE (reads only: one scan)",
        )

    def expand(self) -> Phase:
        return Phase(
            "expand",
            f"Add check {self.constraint} to {self.table_sql} NOT VALID: every write is checked from now on.",
            (self.violating(), self.add_check(self.constraint, self.expr.sql)),
            (self.drop_constraint(self.s, self.table, self.constraint),),
            before="Nothing: old code keeps working as long as its writes satisfy the check.",
            after="New code that relies on the check may deploy.",
            rollback=f"Downgrade this revision: drops {self.constraint}.",
        )

    def contract(self) -> Phase:
        return Phase(
            "contract",
            f"Validate {self.constraint}: one scan of {self.table_sql}, reads and writes continue.",
            (self.violating(), self.validate_here(self.constraint, VALIDATE)),
            (),
            before="The expand of this plan (no guard: validating rejects nothing the expand did not).",
            after=f"{self.constraint} is valid: every row of {self.table_sql} satisfies it.",
            rollback=(
                "Nothing to undo here (a validated check cannot be made NOT VALID again); the expand's "
                "downgrade drops it."
            ),
        )

    def plan(self) -> Plan:
        key = f"{self.s}.{self.table}"
        return Plan(
            plan_id=self.id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=f"add check {q(self.constraint)} on {self.table_sql}: {one_line(self.expr.text)}",
            phases=(self.expand(), self.contract()),
            touches={key: list(self.expr.reads)},
            creates=(self.constraint,),
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.table,
                "name": self.constraint,
                "expression": self.op.expression,
                "facts": self.f.to_json(),
            },
            notes=(
                f"from the expand on, {self.constraint} is checked on every row written to {self.table_sql}, "
                "by old code too: an insert or update whose row makes the expression false fails "
                "(NULL passes, as in any CHECK)",
            ),
        )
