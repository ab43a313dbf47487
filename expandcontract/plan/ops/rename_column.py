"""rename-column: expand (new column + sync trigger), backfill, contract (drop the old column).

Pure: facts in, a :class:`Plan` out. Every statement is idempotent (IF [NOT] EXISTS,
CREATE OR REPLACE, or a ``skip_if`` probe) so that a phase that failed half-way is
simply run again.

Where each copy is made follows one rule: nothing may reject a write old code makes.
NEW's own constraints (NOT NULL as a NOT VALID check, checks, foreign keys from this
table) are safe at expand, because the trigger gives NEW exactly the value old
code wrote to OLD, which OLD's constraints already accepted. A foreign key from another
table that references NEW is not: until the backfill reaches a parent row, NEW is NULL
there and old code's child inserts would fail. Those are made at the contract, while
OLD's foreign key still protects every child row (OLD equals NEW by then). NEW's indexes
are built by the backfill, after the copy (see ``indexes_after_copy``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ...errors import BadInput
from ...sql.quoting import q
from ...sql.rewrite import rewrite_column, rewrite_index_definition
from .. import checks, names
from ..blocks import Builder
from ..dependents import Dependents, carried, step
from ..facts import IndexFact, TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param


@dataclass(frozen=True)
class RenameColumn(Operation):
    """The operation's parameters (the facts come separately, from the catalog or MetaData)."""

    kind: ClassVar[str] = "rename-column"
    id_verb: ClassVar[str] = "rename"
    summary: ClassVar[str] = (
        "Rename a column with zero downtime: NEW beside OLD, a sync trigger, backfill, then drop OLD."
    )
    phases_help: ClassVar[str] = (
        "expand: add NEW (nullable, no default), a trigger keeping OLD and NEW equal for every writer, NEW's "
        "copies of OLD's NOT NULL (as a NOT VALID check), checks and foreign keys. "
        "backfill: copy OLD into NEW for existing rows, in batches, then build NEW's copies of OLD's indexes "
        "CONCURRENTLY (the plan is backfilled once they are valid). "
        "contract (after old code is gone): foreign keys from other tables re-pointed at NEW, constraints "
        "validated, NOT NULL, unique constraints, default, sequence and grants moved to NEW, OLD dropped."
    )

    old: str = param("Current column name.")
    new: str = param("New column name.")
    rename_to_old_names: bool = param(
        "At contract, rename the new indexes to the old names (takes ACCESS EXCLUSIVE; off by default).",
        "--rename-to-old-names",
        default=False,
    )

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.old, "column")
        checks.identifier(self.new, "new column")
        if self.old == self.new:
            raise BadInput(f"old and new column names are the same ({self.old!r})")

    def column(self) -> str:
        return self.old

    def id_parts(self) -> tuple[str, ...]:
        return (self.old, self.new)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        carry = facts.column is not None and bool(facts.dependent_views or facts.policies)
        # Views and policies are carried over to NEW at the contract (see dependents()), once
        # what makes the column unmovable anyway (primary key, identity, ...) has been said.
        checks.column_is_movable(replace(facts, dependent_views=(), policies=()) if carry else facts)
        if carry:
            self.dependents(facts)
        self.require_new_column(facts, self.new)

    def dependents(self, facts: TableFacts) -> Dependents:
        """The views and policies reading OLD, read NEW instead (BadInput when one cannot be moved)."""
        found = carried(facts, self.where(facts, self.old), what="rename-column")
        return found.renamed(self.old, self.new) if found else found

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


def plan_id_for(table: str, old: str, new: str) -> str:
    return names.plan_id("rename", table, old, new)


def build(op: RenameColumn, facts: TableFacts) -> Plan:
    """Kept for callers of the single-operation API."""
    return op.build(facts)


class _Planner(Builder):
    def __init__(self, op: RenameColumn, facts: TableFacts) -> None:
        plan_id = op.id_for(facts)
        super().__init__(facts, plan_id)
        self.op = op
        self.old = op.old
        self.new = op.new
        self.o = q(op.old)
        self.n = q(op.new)
        self.id = plan_id
        self.function = names.function_name(plan_id)
        self.trigger_name = names.trigger_name(plan_id)
        self.nn_new = names.not_null_check(plan_id)
        self.nn_old = names.fit(f"{names.PREFIX}_{plan_id}_nn_old", key=plan_id + ":nnold")
        self.col = facts.col
        self.type_sql = self.type_of(self.col)
        self.indexes = [ix for ix in facts.indexes if not ix.primary]
        self.index_names = {ix.name: names.derived(ix.name, op.old, op.new, plan_id) for ix in self.indexes}
        self.fk_names = {
            fk.name: names.derived(fk.name, op.old, op.new, plan_id)
            for fk in (*facts.foreign_keys, *facts.referenced_by)
        }
        self.checks = [
            chk
            for chk in facts.checks
            if chk.expression.strip("() ").lower() != f"{self.o} is not null".lower()
        ]
        self.original = carried(facts, op.where(facts, op.old), what="rename-column")
        self.moved = op.dependents(facts)

    def swap(self, columns: tuple[str, ...]) -> list[str]:
        return [self.new if c == self.old else c for c in columns]

    def new_index_definition(self, ix: IndexFact) -> str:
        return rewrite_index_definition(
            ix.definition, self.old, self.new, self.index_names[ix.name], concurrently=True
        )

    def old_index_definition(self, ix: IndexFact) -> str:
        return rewrite_index_definition(ix.definition, self.old, self.old, ix.name, concurrently=True)

    # -- phases ------------------------------------------------------------------
    def expand(self) -> Phase:
        up: list[Step] = [
            self.add_column(self.new, self.type_sql, f"add column {self.new}"),
            *self.copy_trigger(self.function, self.trigger_name, self.old, self.new),
        ]
        if not self.col.nullable:
            up.append(self.add_not_null_check(self.new, self.nn_new))
        for chk in self.checks:
            name = names.derived(chk.name, self.old, self.new, self.id)
            up.append(self.add_check(name, rewrite_column(chk.expression, self.old, self.new)))
        # NEW's indexes are built by the backfill once every row is copied (BackfillSpec.indexes).
        for fk in self.f.foreign_keys:
            name = self.fk_names[fk.name]
            up.append(
                self.add_foreign_key(
                    fk, name, self.swap(fk.columns), fk.ref_columns, f"add foreign key {name} (NOT VALID)"
                )
            )
        up += self.comment(self.new, self.col.comment) + self.grants(self.col, self.new)

        down: list[Step] = [self.guard("expand-downgrade")]
        for fk in self.f.referenced_by:
            down.append(self.drop_constraint(fk.schema, fk.table, self.fk_names[fk.name], foreign_key=True))
        for fk in self.f.foreign_keys:
            down.append(self.drop_constraint(self.s, self.table, self.fk_names[fk.name], foreign_key=True))
        for ix in self.indexes:
            if ix.constraint and ix.unique:  # the contract (since rolled back) made it a constraint
                down.append(self.drop_constraint(self.s, self.table, self.index_names[ix.name]))
            down.append(self.drop_index(self.index_names[ix.name]))
        down += self.drop_trigger(self.function, self.trigger_name)
        down.append(
            self.drop_column(
                self.new, "rolling back expand: the new column only held copies", "ACCESS EXCLUSIVE, brief"
            )
        )
        return Phase(
            "expand",
            f"Add {self.new} beside {self.old} on {self.table_sql} and keep both in step with a trigger.",
            tuple(up),
            tuple(down),
            before="Nothing: old code keeps working; run before deploying code that uses the new column.",
            after=f"New code that reads and writes {self.new} may deploy once the backfill has run.",
            rollback=(
                f"Downgrade this revision: drops {self.new}, its trigger, indexes and constraints. "
                f"Refused while live instances still map {self.new}."
            ),
        )

    def indexes_after_copy(self) -> tuple[dict[str, Any], ...]:
        """NEW's copies of OLD's indexes, built CONCURRENTLY when the copy is done: until then
        NEW always equals OLD, so OLD's unique indexes already enforce what NEW's will, and
        the batches' updates of NEW need maintain no index (they can stay HOT)."""
        return tuple(
            self.index_after_copy(self.index_names[ix.name], self.new_index_definition(ix), [self.new])
            for ix in self.indexes
        )

    def backfill_phase(self) -> Phase:
        built = ", ".join(self.index_names[ix.name] for ix in self.indexes)
        return Phase(
            "backfill",
            f"Copy {self.old} into {self.new} for rows written before the trigger existed"
            + (f", then build {self.new}'s indexes CONCURRENTLY ({built})." if built else "."),
            (self.backfill(),),
            (),
            before="The expand revision of this plan.",
            after=f"Code that reads {self.new} sees every row; the contract may run once old code is gone.",
            rollback="Nothing to undo: the copies in the new column are harmless (expand's downgrade drops it).",
        )

    def contract(self) -> Phase:
        col = self.col
        up: list[Step] = [self.guard("contract-guard")]
        # Foreign keys from other tables now reference NEW: every parent row has it (backfill
        # verified), and OLD's foreign key protected child rows until here.
        for fk in self.f.referenced_by:
            name = self.fk_names[fk.name]
            up.append(
                self.add_foreign_key(
                    fk,
                    name,
                    fk.columns,
                    self.swap(fk.ref_columns),
                    f"add foreign key {name} on {fk.table} (NOT VALID)",
                )
            )
        if not col.nullable:
            up.append(self.validate_here(self.nn_new))
        for chk in self.checks:
            if chk.valid:
                up.append(
                    self.validate_here(
                        names.derived(chk.name, self.old, self.new, self.id), "SHARE UPDATE EXCLUSIVE"
                    )
                )
        for fk in (*self.f.foreign_keys, *self.f.referenced_by):
            if fk.valid:
                up.append(
                    self.validate(
                        fk.schema,
                        fk.table,
                        self.fk_names[fk.name],
                        "SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the referenced",
                    )
                )
        if not col.nullable:
            up.append(self.set_not_null(self.new))
            up.append(self.drop_constraint(self.s, self.table, self.nn_new))
        for ix in self.indexes:
            if ix.constraint and ix.unique and not ix.primary:
                name = self.index_names[ix.name]
                up.append(self.unique_using_index(name, name))
        if col.owned_sequence:
            up.append(
                Step(
                    "move sequence ownership",
                    "ddl",
                    f"ALTER SEQUENCE {col.owned_sequence} OWNED BY {self.table_sql}.{self.n}",
                    lock="brief",
                )
            )
        if not col.nullable:
            # Once the trigger is gone nothing fills OLD on new code's inserts; until OLD itself
            # is dropped (next steps) it must accept NULL or those inserts fail.
            up.append(
                self.drop_not_null(
                    self.old,
                    reason="part of the contract's deliberate drop of the old column: it loses NOT NULL "
                    "only on its way out, so new code's inserts succeed once the trigger is gone",
                )
            )
        # Foreign keys from other tables on OLD go while the trigger still keeps OLD equal to NEW:
        # once it is gone, OLD goes stale and they would reject child rows that reference a
        # value new code just wrote to NEW (the ones on NEW, validated above, protect them now).
        for fk in self.f.referenced_by:
            up.append(self.drop_constraint(fk.schema, fk.table, fk.name, foreign_key=True))
        if self.moved:
            # While the trigger still keeps OLD equal to NEW: from here on only NEW is written,
            # and a view or policy still reading OLD would see stale values (or reject writes).
            up.append(
                step(
                    f"re-create views and policies on {self.new}: {self.moved.names()}",
                    [*self.moved.drops(), *self.moved.creates()],
                )
            )
        up += self.drop_trigger(self.function, self.trigger_name)
        if col.default is not None:
            up.append(self.set_default(self.new, col.default, f"move default to {self.new}"))
        up.append(self.drop_column(self.old, "the contract's deliberate drop, guarded by live-code checks"))
        if self.op.rename_to_old_names:
            for ix in self.indexes:
                up.append(
                    self.rename_index(
                        self.index_names[ix.name], ix.name, reason="opt-in --rename-to-old-names"
                    )
                )

        return Phase(
            "contract",
            f"Drop {self.old} from {self.table_sql}; {self.new} takes over its constraints, default and grants.",
            tuple(up),
            tuple(self.contract_downgrade()),
            before=(
                f"Every application instance that maps {self.old} must be gone (the guard checks live "
                "instances), and the backfill complete and verified."
            ),
            after=f"Only code that uses {self.new}.",
            rollback=(
                f"Downgrade this contract revision: re-creates {self.old} with the sync trigger and fills it "
                f"from {self.new}, with its indexes, constraints and default."
            ),
        )

    def contract_downgrade(self) -> list[Step]:
        col = self.col
        down: list[Step] = []
        if self.op.rename_to_old_names:
            for ix in self.indexes:
                down.append(
                    self.rename_index(
                        ix.name, self.index_names[ix.name], reason="opt-in --rename-to-old-names"
                    )
                )
        down.append(self.add_column(self.old, self.type_sql, f"re-add column {self.old}"))
        if col.default is not None:
            down.append(self.drop_default(self.new))
        down += self.copy_trigger(self.function, self.trigger_name, self.old, self.new)
        down.append(self.backfill("reverse backfill"))
        if self.original:
            # OLD is filled again and kept equal to NEW: the original definitions can read it.
            down.append(
                step(
                    f"restore views and policies on {self.old}: {self.original.names()}",
                    [*self.moved.drops(), *self.original.creates()],
                )
            )
        if col.owned_sequence:
            down.append(
                Step(
                    "move sequence ownership back",
                    "ddl",
                    f"ALTER SEQUENCE {col.owned_sequence} OWNED BY {self.table_sql}.{self.o}",
                    lock="brief",
                )
            )
        if not col.nullable:
            down += self.not_null_via_check(self.old, self.nn_old)
            down.append(
                Step(
                    f"drop NOT NULL of {self.new}",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ALTER COLUMN {self.n} DROP NOT NULL",
                    lock="ACCESS EXCLUSIVE, brief",
                )
            )
            down.append(self.add_not_null_check(self.new, self.nn_new))
        if col.default is not None:
            down.append(self.set_default(self.old, col.default, f"restore default of {self.old}"))
        for chk in self.checks:
            down.append(self.add_check(chk.name, chk.expression, f"re-add check {chk.name} (NOT VALID)"))
            if chk.valid:
                down.append(self.validate_here(chk.name, "SHARE UPDATE EXCLUSIVE"))
        for ix in self.indexes:
            down.append(self.create_index(ix.name, self.old_index_definition(ix)))
            if ix.constraint and ix.unique:
                down.append(self.unique_using_index(ix.constraint, ix.name))
        for fk in (*self.f.foreign_keys, *self.f.referenced_by):
            down.append(
                self.add_foreign_key(
                    fk, fk.name, fk.columns, fk.ref_columns, f"re-add foreign key {fk.name} (NOT VALID)"
                )
            )
            if fk.valid:
                down.append(self.validate(fk.schema, fk.table, fk.name, "SHARE UPDATE EXCLUSIVE"))
        down += self.comment(self.old, col.comment) + self.grants(col, self.old)
        return down

    def created(self) -> tuple[str, ...]:
        made = [self.function, self.trigger_name]
        if not self.col.nullable:
            made.append(self.nn_new)
        made += [names.derived(chk.name, self.old, self.new, self.id) for chk in self.checks]
        made += [self.index_names[ix.name] for ix in self.indexes]
        made += [self.fk_names[fk.name] for fk in (*self.f.foreign_keys, *self.f.referenced_by)]
        return tuple(made)

    def plan(self) -> Plan:
        key = f"{self.s}.{self.table}"
        forward = self.copy_spec(self.old, self.new, self.id, indexes=self.indexes_after_copy())
        reverse = self.copy_spec(self.new, self.old, self.id + ":reverse")
        phases = (self.expand(), self.backfill_phase(), self.contract())
        return Plan(
            plan_id=self.id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=f"rename {self.table_sql}.{self.o} to {self.n}",
            phases=phases,
            removes={key: [self.old]},
            adds={key: [self.new]},
            touches={key: [self.old, self.new]},
            creates=self.created(),
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.table,
                "old": self.old,
                "new": self.new,
                "rename_to_old_names": self.op.rename_to_old_names,
                "facts": self.f.to_json(),
            },
            backfill=forward.to_json(),
            reverse_backfill=reverse.to_json(),
        )
