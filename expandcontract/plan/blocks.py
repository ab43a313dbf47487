"""Building blocks every operation composes: steps on one table, each idempotent.

Pure: strings in, :class:`~expandcontract.plan.model.Step` out. Operations decide *which*
blocks run in *which* phase (the rule: nothing may reject a write old code makes before
the data behind it exists); the blocks only know how to say each thing safely — lock
label, ``IF [NOT] EXISTS`` or a ``skip_if`` probe, squawk's reason where a drop is meant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..backfill.spec import BackfillSpec
from ..sql import trigger as trig
from ..sql.quoting import literal, q, qualified
from .facts import ColumnFacts, ForeignKeyFact, TableFacts
from .model import Step

#: Lock labels shown in plans and revision docstrings.
BRIEF_EXCLUSIVE = "ACCESS EXCLUSIVE, brief"
NO_SCAN = "ACCESS EXCLUSIVE, brief (no scan)"
CONCURRENT = "SHARE UPDATE EXCLUSIVE (writes continue)"
VALIDATE = "SHARE UPDATE EXCLUSIVE (reads and writes continue)"
FK_BRIEF = "SHARE ROW EXCLUSIVE on both tables, brief (no scan)"
BATCHES = "row locks of one batch at a time"


class Builder:
    """Steps on ``facts``' table for the plan ``plan_id``."""

    def __init__(self, facts: TableFacts, plan_id: str) -> None:
        self.f = facts
        self.s = facts.schema
        self.table = facts.name
        self.table_sql = qualified(facts.schema, facts.name)
        self.plan_id = plan_id

    # -- probes (skip_if) -------------------------------------------------------
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

    # -- columns ----------------------------------------------------------------
    @staticmethod
    def type_of(col: ColumnFacts) -> str:
        collate = f" COLLATE {col.collation}" if col.collation else ""
        return f"{col.type_sql}{collate}"

    def add_column(self, column: str, type_sql: str, label: str, *, copied: bool = True) -> Step:
        """A nullable column without a default: metadata only, no rewrite, no value old code must supply."""
        ignore: tuple[tuple[str, str], ...] = ()
        if "character varying" in type_sql:
            ignore = (
                ("prefer-text-field", "type copied unchanged from the old column" if copied else "as asked"),
            )
        return Step(
            label,
            "ddl",
            f"ALTER TABLE {self.table_sql} ADD COLUMN IF NOT EXISTS {q(column)} {type_sql}",
            lock="ACCESS EXCLUSIVE, brief (nullable, no default: no rewrite)",
            squawk_ignore=ignore,
        )

    def drop_column(
        self, column: str, reason: str, lock: str = "ACCESS EXCLUSIVE, brief (no rewrite)"
    ) -> Step:
        return Step(
            f"drop column {column}",
            "ddl",
            f"ALTER TABLE {self.table_sql} DROP COLUMN IF EXISTS {q(column)}",
            lock=lock,
            squawk_ignore=(("ban-drop-column", reason),),
        )

    def set_default(self, column: str, default: str, label: str | None = None) -> Step:
        return Step(
            label or f"set default of {column}",
            "ddl",
            f"ALTER TABLE {self.table_sql} ALTER COLUMN {q(column)} SET DEFAULT {default}",
            lock=BRIEF_EXCLUSIVE,
        )

    def drop_default(self, column: str, label: str | None = None) -> Step:
        return Step(
            label or f"drop default of {column}",
            "ddl",
            f"ALTER TABLE {self.table_sql} ALTER COLUMN {q(column)} DROP DEFAULT",
            lock=BRIEF_EXCLUSIVE,
        )

    def drop_not_null(self, column: str, *, reason: str | None = None) -> Step:
        return Step(
            f"drop NOT NULL of {column}",
            "ddl",
            f"ALTER TABLE {self.table_sql} ALTER COLUMN {q(column)} DROP NOT NULL",
            lock=NO_SCAN,
            squawk_ignore=(("ban-drop-not-null", reason),) if reason else (),
        )

    def set_not_null(self, column: str) -> Step:
        return Step(
            f"set {column} NOT NULL",
            "ddl",
            f"ALTER TABLE {self.table_sql} ALTER COLUMN {q(column)} SET NOT NULL",
            lock="ACCESS EXCLUSIVE, brief (the validated check proves it without a scan)",
        )

    def comment(self, column: str, text: str | None) -> list[Step]:
        if text is None:
            return []
        return [
            Step(
                f"comment on {column}",
                "sql",
                f"COMMENT ON COLUMN {self.table_sql}.{q(column)} IS {literal(text)}",
                lock="SHARE UPDATE EXCLUSIVE, brief",
            )
        ]

    def grants(self, col: ColumnFacts, column: str) -> list[Step]:
        steps = []
        for g in col.grants:
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

    # -- sync trigger -------------------------------------------------------------
    def trigger(self, function: str, trigger: str, function_sql: str) -> list[Step]:
        return [
            Step("create sync function", "ddl", function_sql, lock="none"),
            Step(
                "create sync trigger",
                "ddl",
                # Skipped only by this plan's own backfill (see BackfillSpec.skip_value).
                trig.trigger_sql(self.s, self.table, trigger, function, self.plan_id),
                lock="SHARE ROW EXCLUSIVE on the table, brief",
            ),
        ]

    def copy_trigger(self, function: str, trigger: str, old: str, new: str) -> list[Step]:
        """OLD and NEW kept equal for every writer (the rename truth table)."""
        return self.trigger(function, trigger, trig.function_sql(self.s, function, old, new))

    def drop_trigger(self, function: str, trigger: str) -> list[Step]:
        return [
            Step(
                "drop sync trigger",
                "ddl",
                trig.drop_trigger_sql(self.s, self.table, trigger),
                lock=BRIEF_EXCLUSIVE,
            ),
            Step(
                "drop sync function",
                "ddl",
                trig.drop_function_sql(self.s, function),
                lock="none",
                squawk_ignore=(("ban-drop-function", "the plan's own sync function, no longer needed"),),
            ),
        ]

    # -- indexes ------------------------------------------------------------------
    def create_index(self, name: str, definition: str) -> Step:
        """``definition`` must say CONCURRENTLY; an INVALID leftover is dropped and rebuilt."""
        return Step(
            f"create index {name}",
            "concurrent",
            definition,
            lock=CONCURRENT,
            index=qualified(self.s, name),
        )

    def drop_index(self, name: str) -> Step:
        return Step(
            f"drop index {name}",
            "concurrent",
            f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(self.s, name)}",
            lock=CONCURRENT,
        )

    def rename_index(self, current: str, target: str, *, reason: str) -> Step:
        return Step(
            f"rename index {current} to {target}",
            "ddl",
            f"ALTER INDEX IF EXISTS {qualified(self.s, current)} RENAME TO {q(target)}",
            lock="ACCESS EXCLUSIVE on the index's table, brief",
            squawk_ignore=(("renaming-column", reason),),
        )

    def unique_using_index(self, constraint: str, index: str) -> Step:
        return Step(
            f"unique constraint {constraint} using its index",
            "ddl",
            f"ALTER TABLE {self.table_sql} ADD CONSTRAINT {q(constraint)} UNIQUE USING INDEX {q(index)}",
            lock="ACCESS EXCLUSIVE, brief (no scan: the index exists)",
            skip_if=self.constraint_exists(self.s, self.table, constraint),
        )

    # -- constraints --------------------------------------------------------------
    def add_check(self, name: str, expression: str, label: str | None = None) -> Step:
        """A NOT VALID check: enforced on every row written from now on, no scan, no long lock."""
        return Step(
            label or f"add check {name} (NOT VALID)",
            "ddl",
            f"ALTER TABLE {self.table_sql} ADD CONSTRAINT {q(name)} CHECK ({expression}) NOT VALID",
            lock=NO_SCAN,
            skip_if=self.constraint_exists(self.s, self.table, name),
        )

    def add_not_null_check(self, column: str, check: str) -> Step:
        return self.add_check(check, f"{q(column)} IS NOT NULL", f"add NOT NULL check {check} (NOT VALID)")

    def validate(self, schema: str, table: str, name: str, lock: str = "SHARE UPDATE EXCLUSIVE") -> Step:
        return Step(
            f"validate {name}",
            "concurrent",
            f"ALTER TABLE {qualified(schema, table)} VALIDATE CONSTRAINT {q(name)}",
            lock=lock,
        )

    def validate_here(self, name: str, lock: str = VALIDATE) -> Step:
        return self.validate(self.s, self.table, name, lock)

    def drop_constraint(self, schema: str, table: str, name: str, *, foreign_key: bool = False) -> Step:
        return Step(
            f"drop constraint {name}",
            "ddl",
            f"ALTER TABLE {qualified(schema, table)} DROP CONSTRAINT IF EXISTS {q(name)}",
            lock="ACCESS EXCLUSIVE on both tables, brief" if foreign_key else BRIEF_EXCLUSIVE,
            squawk_ignore=(
                (
                    "ban-drop-constraint",
                    "the plan's deliberate drop: its own helper, or a constraint on the retired column",
                ),
            ),
        )

    def not_null_via_check(self, column: str, check: str) -> list[Step]:
        """NOT NULL without a long ACCESS EXCLUSIVE scan: NOT VALID check, validate, SET NOT NULL, drop check."""
        return [
            self.add_not_null_check(column, check),
            self.validate_here(check),
            self.set_not_null(column),
            self.drop_constraint(self.s, self.table, check),
        ]

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

    def add_foreign_key(
        self, fk: ForeignKeyFact, name: str, cols: Iterable[str], ref_cols: Iterable[str], label: str
    ) -> Step:
        return Step(
            label,
            "ddl",
            self.fk_sql(fk, name, cols, ref_cols),
            lock=FK_BRIEF,
            skip_if=self.constraint_exists(fk.schema, fk.table, name),
        )

    # -- phases' own steps --------------------------------------------------------
    @staticmethod
    def guard(name: str) -> Step:
        return Step(name, "guard", "", lock="none")

    @staticmethod
    def backfill(name: str = "backfill") -> Step:
        return Step(name, "backfill", "", lock=BATCHES)

    def backfill_spec(
        self,
        plan_id: str,
        *,
        set_sql: str,
        pending_sql: str,
        mismatch_sql: str | None = None,
        mismatch_label: str | None = None,
        mismatch_fix: str | None = None,
    ) -> BackfillSpec:
        """Batches keyed on the primary key, else a unique NOT NULL key, else ctid."""
        key: tuple[str, ...]
        if self.f.primary_key:
            key, kind = self.f.primary_key, "pk"
        elif self.f.unique_keys:
            key, kind = self.f.unique_keys[0], "unique"
        else:
            key, kind = (), "ctid"
        return BackfillSpec(
            plan_id=plan_id,
            schema=self.s,
            table=self.table,
            key=tuple(key),
            key_kind=kind,  # type: ignore[arg-type]
            set_sql=set_sql,
            pending_sql=pending_sql,
            mismatch_sql=mismatch_sql if mismatch_sql is not None else pending_sql,
            rows_estimate=self.f.row_estimate,
            skip_value=self.plan_id,
            mismatch_label=mismatch_label,
            mismatch_fix=mismatch_fix,
        )

    def copy_spec(
        self, source: str, target: str, plan_id: str, *, indexes: tuple[dict[str, Any], ...] = ()
    ) -> BackfillSpec:
        distinct = f"{q(target)} IS DISTINCT FROM {q(source)}"
        spec = self.backfill_spec(plan_id, set_sql=f"{q(target)} = {q(source)}", pending_sql=distinct)
        return replace(spec, indexes=indexes) if indexes else spec

    def index_after_copy(self, name: str, definition: str, columns: list[str]) -> dict[str, Any]:
        """An index the backfill builds CONCURRENTLY once every row is copied (see
        ``BackfillSpec.indexes``); ``columns`` are the new ones it covers."""
        return {"step": self.create_index(name, definition).to_json(), "columns": list(columns)}
