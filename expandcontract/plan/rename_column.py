"""rename-column: expand (new column + sync trigger), backfill, contract (drop the old column).

Pure: facts in, a :class:`Plan` out. Every statement is idempotent (IF [NOT] EXISTS,
CREATE OR REPLACE, or a ``skip_if`` probe) so that a phase that failed half-way is
simply run again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..backfill.spec import BackfillSpec
from ..errors import BadInput
from ..sql import trigger as trig
from ..sql.quoting import literal, q, qualified
from ..sql.rewrite import rewrite_column, rewrite_index_definition
from . import checks, names
from .facts import ForeignKeyFact, IndexFact, TableFacts
from .model import Phase, Plan, Step

OPERATION = "rename-column"


@dataclass(frozen=True)
class RenameColumn:
    """The operation's parameters (the facts come separately, from the catalog or MetaData)."""

    table: str
    old: str
    new: str
    schema: str | None = None
    rename_to_old_names: bool = False
    plan_id: str | None = None  # set when the readable id is already taken by an earlier plan


def plan_id_for(table: str, old: str, new: str) -> str:
    return names.plan_id("rename", table, old, new)


def build(op: RenameColumn, facts: TableFacts) -> Plan:
    checks.identifier(op.table, "table")
    checks.identifier(op.old, "column")
    checks.identifier(op.new, "new column")
    if op.old == op.new:
        raise BadInput(f"old and new column names are the same ({op.old!r})")
    checks.table_is_plannable(facts)
    checks.column_is_movable(facts)
    if op.new in facts.columns:
        raise BadInput(
            f"column {q(op.new)} already exists in table {qualified(facts.schema, facts.name)}; "
            "pick another name or drop it first"
        )
    return _Planner(op, facts).plan()


class _Planner:
    def __init__(self, op: RenameColumn, facts: TableFacts) -> None:
        self.op = op
        self.f = facts
        self.s = facts.schema
        self.table_sql = qualified(facts.schema, facts.name)
        self.old = op.old
        self.new = op.new
        self.o = q(op.old)
        self.n = q(op.new)
        self.id = op.plan_id or plan_id_for(facts.name, op.old, op.new)
        self.function = names.function_name(self.id)
        self.trigger = names.trigger_name(self.id)
        self.nn_new = names.not_null_check(self.id)
        self.nn_old = names.fit(f"{names.PREFIX}_{self.id}_nn_old", key=self.id + ":nnold")
        col = facts.column
        collate = f" COLLATE {col.collation}" if col.collation else ""
        self.type_sql = f"{col.type_sql}{collate}"
        self.indexes = [ix for ix in facts.indexes if not ix.primary]
        self.index_names = {ix.name: names.derived(ix.name, op.old, op.new, self.id) for ix in self.indexes}
        self.fk_names = {
            fk.name: names.derived(fk.name, op.old, op.new, self.id)
            for fk in (*facts.foreign_keys, *facts.referenced_by)
        }

    # -- helpers -----------------------------------------------------------------
    def where(self) -> str:
        return f"{self.table_sql}.{self.o}"

    def constraint_exists(self, schema: str, table: str, name: str) -> str:
        return (
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = "
            f"{literal(name)} AND conrelid = {literal(qualified(schema, table))}::regclass)"
        )

    def column_exists(self, column: str) -> str:
        return (
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
            f"{literal(self.table_sql)}::regclass AND attname = {literal(column)} AND NOT attisdropped)"
        )

    def fk_sql(self, fk: ForeignKeyFact, name: str, cols: Iterable[str], ref_cols: Iterable[str]) -> str:
        parts = [
            f"ALTER TABLE {qualified(fk.schema, fk.table)} ADD CONSTRAINT {q(name)} ",
            f"FOREIGN KEY ({', '.join(q(c) for c in cols)}) ",
            f"REFERENCES {qualified(fk.ref_schema, fk.ref_table)} ({', '.join(q(c) for c in ref_cols)})",
        ]
        if fk.match_full:
            parts.append(" MATCH FULL")
        if fk.on_update != "NO ACTION":
            parts.append(f" ON UPDATE {fk.on_update}")
        if fk.on_delete != "NO ACTION":
            parts.append(f" ON DELETE {fk.on_delete}")
        if fk.deferrable:
            parts.append(" DEFERRABLE INITIALLY DEFERRED" if fk.initially_deferred else " DEFERRABLE")
        parts.append(" NOT VALID")
        return "".join(parts)

    def swap(self, columns: Iterable[str]) -> list[str]:
        return [self.new if c == self.old else c for c in columns]

    def trigger_steps(self, column_a: str, column_b: str) -> list[Step]:
        return [
            Step(
                "create sync function",
                "ddl",
                trig.function_sql(self.s, self.function, column_a, column_b),
                lock="none",
            ),
            Step(
                "create sync trigger",
                "ddl",
                trig.trigger_sql(self.s, self.f.name, self.trigger, self.function),
                lock="SHARE ROW EXCLUSIVE on the table, brief",
            ),
        ]

    def drop_trigger_steps(self) -> list[Step]:
        return [
            Step(
                "drop sync trigger",
                "ddl",
                trig.drop_trigger_sql(self.s, self.f.name, self.trigger),
                lock="ACCESS EXCLUSIVE, brief",
            ),
            Step(
                "drop sync function",
                "ddl",
                trig.drop_function_sql(self.s, self.function),
                lock="none",
                squawk_ignore=(("ban-drop-function", "the plan's own sync function, no longer needed"),),
            ),
        ]

    def index_step(self, ix: IndexFact, name: str, definition: str) -> Step:
        return Step(
            f"create index {name}",
            "concurrent",
            definition,
            lock="SHARE UPDATE EXCLUSIVE (writes continue)",
            index=qualified(self.s, name),
        )

    def new_index_definition(self, ix: IndexFact) -> str:
        return rewrite_index_definition(
            ix.definition, self.old, self.new, self.index_names[ix.name], concurrently=True
        )

    def old_index_definition(self, ix: IndexFact) -> str:
        return rewrite_index_definition(ix.definition, self.old, self.old, ix.name, concurrently=True)

    def grant_steps(self, column: str) -> list[Step]:
        steps = []
        for g in self.f.column.grants:
            grantee = "PUBLIC" if g.grantee.upper() == "PUBLIC" else q(g.grantee)
            option = " WITH GRANT OPTION" if g.grantable else ""
            steps.append(
                Step(
                    f"grant {g.privilege} on {column} to {g.grantee}",
                    "sql",
                    f"GRANT {g.privilege} ({q(column)}) ON {self.table_sql} TO {grantee}{option}",
                    lock="none",
                )
            )
        return steps

    def comment_step(self, column: str) -> list[Step]:
        if self.f.column.comment is None:
            return []
        return [
            Step(
                f"comment on {column}",
                "sql",
                f"COMMENT ON COLUMN {self.table_sql}.{q(column)} IS {literal(self.f.column.comment)}",
                lock="SHARE UPDATE EXCLUSIVE, brief",
            )
        ]

    def add_column(self, column: str, label: str) -> Step:
        """The column with OLD's type and collation, nullable and without a default (no rewrite)."""
        return Step(
            label,
            "ddl",
            f"ALTER TABLE {self.table_sql} ADD COLUMN IF NOT EXISTS {q(column)} {self.type_sql}",
            lock="ACCESS EXCLUSIVE, brief (nullable, no default: no rewrite)",
            squawk_ignore=(("prefer-text-field", "type copied unchanged from the old column"),)
            if "character varying" in self.type_sql
            else (),
        )

    def unique_using_index(self, constraint: str, index: str) -> Step:
        return Step(
            f"unique constraint {constraint} using its index",
            "ddl",
            f"ALTER TABLE {self.table_sql} ADD CONSTRAINT {q(constraint)} UNIQUE USING INDEX {q(index)}",
            lock="ACCESS EXCLUSIVE, brief (no scan: the index exists)",
            skip_if=self.constraint_exists(self.s, self.f.name, constraint),
        )

    def rename_index(self, current: str, target: str) -> Step:
        return Step(
            f"rename index {current} to {target}",
            "ddl",
            f"ALTER INDEX IF EXISTS {qualified(self.s, current)} RENAME TO {q(target)}",
            lock="ACCESS EXCLUSIVE on the index's table, brief",
            squawk_ignore=(("renaming-column", "opt-in --rename-to-old-names"),),
        )

    def add_not_null_check(self, column: str, check: str) -> Step:
        """NOT NULL carried as a NOT VALID check: enforced on new writes, no scan, no long lock."""
        return Step(
            f"add NOT NULL check {check} (NOT VALID)",
            "ddl",
            f"ALTER TABLE {self.table_sql} ADD CONSTRAINT {q(check)} CHECK ({q(column)} IS NOT NULL) NOT VALID",
            lock="ACCESS EXCLUSIVE, brief (no scan)",
            skip_if=self.constraint_exists(self.s, self.f.name, check),
        )

    def validate(self, schema: str, table: str, name: str, lock: str = "SHARE UPDATE EXCLUSIVE") -> Step:
        return Step(
            f"validate {name}",
            "concurrent",
            f"ALTER TABLE {qualified(schema, table)} VALIDATE CONSTRAINT {q(name)}",
            lock=lock,
        )

    def not_null_steps(self, column: str, check: str) -> list[Step]:
        """NOT NULL without a long ACCESS EXCLUSIVE scan: NOT VALID check, validate, SET NOT NULL."""
        return [
            self.add_not_null_check(column, check),
            self.validate(self.s, self.f.name, check, "SHARE UPDATE EXCLUSIVE (reads and writes continue)"),
            Step(
                f"set {column} NOT NULL",
                "ddl",
                f"ALTER TABLE {self.table_sql} ALTER COLUMN {q(column)} SET NOT NULL",
                lock="ACCESS EXCLUSIVE, brief (the validated check proves it without a scan)",
            ),
            Step(
                f"drop check {check}",
                "ddl",
                f"ALTER TABLE {self.table_sql} DROP CONSTRAINT IF EXISTS {q(check)}",
                lock="ACCESS EXCLUSIVE, brief",
            ),
        ]

    def backfill_spec(self, source: str, target: str, plan_id: str) -> BackfillSpec:
        key: tuple[str, ...]
        if self.f.primary_key:
            key, kind = self.f.primary_key, "pk"
        elif self.f.unique_keys:
            key, kind = self.f.unique_keys[0], "unique"
        else:
            key, kind = (), "ctid"
        distinct = f"{q(target)} IS DISTINCT FROM {q(source)}"
        return BackfillSpec(
            plan_id=plan_id,
            schema=self.s,
            table=self.f.name,
            key=tuple(key),
            key_kind=kind,  # type: ignore[arg-type]
            set_sql=f"{q(target)} = {q(source)}",
            pending_sql=distinct,
            mismatch_sql=distinct,
            rows_estimate=self.f.row_estimate,
        )

    # -- phases ------------------------------------------------------------------
    def expand(self) -> Phase:
        up: list[Step] = [
            self.add_column(self.new, f"add column {self.new}"),
            *self.trigger_steps(self.old, self.new),
        ]
        if not self.f.column.nullable:
            up.append(self.add_not_null_check(self.new, self.nn_new))
        for chk in self.f.checks:
            if chk.expression.strip("() ").lower() == f"{self.o} is not null".lower():
                continue
            name = names.derived(chk.name, self.old, self.new, self.id)
            up.append(
                Step(
                    f"add check {name} (NOT VALID)",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ADD CONSTRAINT {q(name)} "
                    f"CHECK ({rewrite_column(chk.expression, self.old, self.new)}) NOT VALID",
                    lock="ACCESS EXCLUSIVE, brief (no scan)",
                    skip_if=self.constraint_exists(self.s, self.f.name, name),
                )
            )
        for ix in self.indexes:
            up.append(self.index_step(ix, self.index_names[ix.name], self.new_index_definition(ix)))
        for fk in self.f.foreign_keys:
            name = self.fk_names[fk.name]
            up.append(
                Step(
                    f"add foreign key {name} (NOT VALID)",
                    "ddl",
                    self.fk_sql(fk, name, self.swap(fk.columns), fk.ref_columns),
                    lock="SHARE ROW EXCLUSIVE on both tables, brief (no scan)",
                    skip_if=self.constraint_exists(fk.schema, fk.table, name),
                )
            )
        for fk in self.f.referenced_by:
            name = self.fk_names[fk.name]
            up.append(
                Step(
                    f"add foreign key {name} on {fk.table} (NOT VALID)",
                    "ddl",
                    self.fk_sql(fk, name, fk.columns, self.swap(fk.ref_columns)),
                    lock="SHARE ROW EXCLUSIVE on both tables, brief (no scan)",
                    skip_if=self.constraint_exists(fk.schema, fk.table, name),
                )
            )
        up += self.comment_step(self.new) + self.grant_steps(self.new)

        down: list[Step] = [self.guard_step("expand-downgrade")]
        for fk in self.f.referenced_by:
            down.append(self.drop_constraint(fk.schema, fk.table, self.fk_names[fk.name], foreign_key=True))
        for fk in self.f.foreign_keys:
            down.append(self.drop_constraint(self.s, self.f.name, self.fk_names[fk.name], foreign_key=True))
        for ix in self.indexes:
            if ix.constraint and ix.unique:  # the contract (since rolled back) made it a constraint
                down.append(self.drop_constraint(self.s, self.f.name, self.index_names[ix.name]))
            down.append(self.drop_index(self.index_names[ix.name]))
        down += self.drop_trigger_steps()
        down.append(
            Step(
                f"drop column {self.new}",
                "ddl",
                f"ALTER TABLE {self.table_sql} DROP COLUMN IF EXISTS {self.n}",
                lock="ACCESS EXCLUSIVE, brief",
                squawk_ignore=(("ban-drop-column", "rolling back expand: the new column only held copies"),),
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

    def drop_constraint(self, schema: str, table: str, name: str, *, foreign_key: bool = False) -> Step:
        return Step(
            f"drop constraint {name}",
            "ddl",
            f"ALTER TABLE {qualified(schema, table)} DROP CONSTRAINT IF EXISTS {q(name)}",
            lock="ACCESS EXCLUSIVE on both tables, brief" if foreign_key else "ACCESS EXCLUSIVE, brief",
            squawk_ignore=(
                (
                    "ban-drop-constraint",
                    "the plan's deliberate drop: its own helper, or a constraint on the retired column",
                ),
            ),
        )

    def drop_index(self, name: str) -> Step:
        return Step(
            f"drop index {name}",
            "concurrent",
            f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(self.s, name)}",
            lock="SHARE UPDATE EXCLUSIVE (writes continue)",
        )

    def guard_step(self, name: str) -> Step:
        return Step(name, "guard", "", lock="none")

    def backfill(self) -> Phase:
        return Phase(
            "backfill",
            f"Copy {self.old} into {self.new} for rows written before the trigger existed.",
            (Step("backfill", "backfill", "", lock="row locks of one batch at a time"),),
            (),
            before="The expand revision of this plan.",
            after=f"Code that reads {self.new} sees every row; the contract may run once old code is gone.",
            rollback="Nothing to undo: the copies in the new column are harmless (expand's downgrade drops it).",
        )

    def contract(self) -> Phase:
        col = self.f.column
        up: list[Step] = [self.guard_step("contract-guard")]
        new_constraints = [self.nn_new] if not col.nullable else []
        for name in new_constraints:
            up.append(
                self.validate(self.s, self.f.name, name, "SHARE UPDATE EXCLUSIVE (reads and writes continue)")
            )
        for chk in self.f.checks:
            if chk.expression.strip("() ").lower() == f"{self.o} is not null".lower() or not chk.valid:
                continue
            name = names.derived(chk.name, self.old, self.new, self.id)
            up.append(self.validate(self.s, self.f.name, name, "SHARE UPDATE EXCLUSIVE"))
        for fk in (*self.f.foreign_keys, *self.f.referenced_by):
            if not fk.valid:
                continue
            name = self.fk_names[fk.name]
            up.append(
                self.validate(
                    fk.schema,
                    fk.table,
                    name,
                    "SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the referenced",
                )
            )
        if not col.nullable:
            up.append(
                Step(
                    f"set {self.new} NOT NULL",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ALTER COLUMN {self.n} SET NOT NULL",
                    lock="ACCESS EXCLUSIVE, brief (the validated check proves it without a scan)",
                )
            )
            up.append(self.drop_constraint(self.s, self.f.name, self.nn_new))
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
                Step(
                    f"drop NOT NULL of {self.old}",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ALTER COLUMN {self.o} DROP NOT NULL",
                    lock="ACCESS EXCLUSIVE, brief (no scan)",
                    squawk_ignore=(
                        (
                            "ban-drop-not-null",
                            "part of the contract's deliberate drop of the old column: it loses NOT NULL "
                            "only on its way out, so new code's inserts succeed once the trigger is gone",
                        ),
                    ),
                )
            )
        up += self.drop_trigger_steps()
        if col.default is not None:
            up.append(
                Step(
                    f"move default to {self.new}",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ALTER COLUMN {self.n} SET DEFAULT {col.default}",
                    lock="ACCESS EXCLUSIVE, brief",
                )
            )
        for fk in self.f.referenced_by:
            up.append(self.drop_constraint(fk.schema, fk.table, fk.name, foreign_key=True))
        up.append(
            Step(
                f"drop column {self.old}",
                "ddl",
                f"ALTER TABLE {self.table_sql} DROP COLUMN IF EXISTS {self.o}",
                lock="ACCESS EXCLUSIVE, brief (no rewrite)",
                squawk_ignore=(
                    ("ban-drop-column", "the contract's deliberate drop, guarded by live-code checks"),
                ),
            )
        )
        if self.op.rename_to_old_names:
            for ix in self.indexes:
                up.append(self.rename_index(self.index_names[ix.name], ix.name))

        down = self.contract_downgrade()
        return Phase(
            "contract",
            f"Drop {self.old} from {self.table_sql}; {self.new} takes over its constraints, default and grants.",
            tuple(up),
            tuple(down),
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
        col = self.f.column
        down: list[Step] = []
        if self.op.rename_to_old_names:
            for ix in self.indexes:
                down.append(self.rename_index(ix.name, self.index_names[ix.name]))
        down.append(self.add_column(self.old, f"re-add column {self.old}"))
        if col.default is not None:
            down.append(
                Step(
                    f"drop default of {self.new}",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ALTER COLUMN {self.n} DROP DEFAULT",
                    lock="ACCESS EXCLUSIVE, brief",
                )
            )
        down += self.trigger_steps(self.old, self.new)
        down.append(Step("reverse backfill", "backfill", "", lock="row locks of one batch at a time"))
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
            down += self.not_null_steps(self.old, self.nn_old)
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
            down.append(
                Step(
                    f"restore default of {self.old}",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ALTER COLUMN {self.o} SET DEFAULT {col.default}",
                    lock="ACCESS EXCLUSIVE, brief",
                )
            )
        for chk in self.f.checks:
            if chk.expression.strip("() ").lower() == f"{self.o} is not null".lower():
                continue
            down.append(
                Step(
                    f"re-add check {chk.name} (NOT VALID)",
                    "ddl",
                    f"ALTER TABLE {self.table_sql} ADD CONSTRAINT {q(chk.name)} CHECK ({chk.expression}) NOT VALID",
                    lock="ACCESS EXCLUSIVE, brief (no scan)",
                    skip_if=self.constraint_exists(self.s, self.f.name, chk.name),
                )
            )
            if chk.valid:
                down.append(self.validate(self.s, self.f.name, chk.name, "SHARE UPDATE EXCLUSIVE"))
        for ix in self.indexes:
            down.append(self.index_step(ix, ix.name, self.old_index_definition(ix)))
            if ix.constraint and ix.unique:
                down.append(self.unique_using_index(ix.constraint, ix.name))
        for fk in (*self.f.foreign_keys, *self.f.referenced_by):
            down.append(
                Step(
                    f"re-add foreign key {fk.name} (NOT VALID)",
                    "ddl",
                    self.fk_sql(fk, fk.name, fk.columns, fk.ref_columns),
                    lock="SHARE ROW EXCLUSIVE on both tables, brief (no scan)",
                    skip_if=self.constraint_exists(fk.schema, fk.table, fk.name),
                )
            )
            if fk.valid:
                down.append(self.validate(fk.schema, fk.table, fk.name, "SHARE UPDATE EXCLUSIVE"))
        down += self.comment_step(self.old) + self.grant_steps(self.old)
        return down

    def plan(self) -> Plan:
        key = f"{self.s}.{self.f.name}"
        forward = self.backfill_spec(self.old, self.new, self.id)
        reverse = self.backfill_spec(self.new, self.old, self.id + ":reverse")
        return Plan(
            plan_id=self.id,
            operation=OPERATION,
            schema=self.s,
            table=self.f.name,
            title=f"rename {self.table_sql}.{self.o} to {self.n}",
            phases=(self.expand(), self.backfill(), self.contract()),
            removes={key: [self.old]},
            adds={key: [self.new]},
            spec={
                "operation": OPERATION,
                "schema": self.s,
                "table": self.f.name,
                "old": self.old,
                "new": self.new,
                "rename_to_old_names": self.op.rename_to_old_names,
                "facts": self.f.to_json(),
            },
            backfill=forward.to_json(),
            reverse_backfill=reverse.to_json(),
        )
