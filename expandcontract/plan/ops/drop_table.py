"""drop-table: contract only (drop a table once no running code maps it).

Pure: facts in, a :class:`Plan` out.

There is nothing to expand: code that no longer maps the table is unaffected by it.
The contract drops the foreign keys between the table and others first, each its own
short step: ``ALTER TABLE … DROP CONSTRAINT`` locks the two tables of one key briefly,
where ``DROP TABLE`` would hold ACCESS EXCLUSIVE on every table it is linked with at
once, and queue behind traffic on all of them. ``DROP TABLE`` then locks the table
alone (and its own sequences).

What depends on the table that the plan cannot remove (views, materialized views,
rules, SQL-body functions, inheritance children and partitions, publications) refuses
the plan, named: dropping them is a decision for their owners, not a side effect.

The rows cannot come back. The contract's downgrade (and ``ecm abort``) re-creates the
table empty from the frozen facts: columns with their types, defaults, identity,
generation and NOT NULL, its serial sequences, checks, primary key, unique constraints,
indexes, foreign keys both ways (those from other tables NOT VALID: their rows may
reference rows that are gone), grants, owner and row-level security switch. Triggers,
policies and comments are not among the facts and are not re-created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import BadInput
from ...sql.quoting import literal, q, qualified
from ...sql.rewrite import rewrite_index_definition
from ..blocks import Builder
from ..facts import ForeignKeyFact, TableFacts
from ..model import Phase, Plan, Step
from .base import Operation
from .rename_table import dollar_block, grant_sql

_INTEGERS = ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class DropTable(Operation):
    """The operation's parameters (the facts come separately, from the catalog)."""

    kind: ClassVar[str] = "drop-table"
    whole_table: ClassVar[bool] = True
    summary: ClassVar[str] = "Drop a table once no running code maps it (contract only)."
    phases_help: ClassVar[str] = (
        "contract (after code that maps the table is gone): foreign keys from and to other tables "
        "dropped one by one (brief locks on two tables each), then DROP TABLE. Refused when views, "
        "rules, functions, partitions, inheritance children or publications depend on it. The rows are "
        "gone: the contract's downgrade re-creates the table empty."
    )

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        dependents = [f"{kind} {name}" for kind, name in facts.extra.get("table_dependents", [])]
        if dependents:
            raise BadInput(
                f"table {qualified(facts.schema, facts.name)} is needed by {', '.join(dependents)}; "
                "DROP TABLE would fail (or take them along): change or drop them first"
            )

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


class _Planner(Builder):
    def __init__(self, op: DropTable, facts: TableFacts) -> None:
        super().__init__(facts, op.id_for(facts))
        self.op = op
        self.me = (self.s, self.table)
        #: Keys to or from other tables (a key of the table on itself goes with it).
        self.links: list[ForeignKeyFact] = [
            fk
            for fk in (*facts.referenced_by, *facts.foreign_keys)
            if (fk.schema, fk.table) != (fk.ref_schema, fk.ref_table)
        ]
        self.columns: list[dict[str, Any]] = list(facts.extra.get("table_columns", []))

    # -- the contract ------------------------------------------------------------------
    def contract(self) -> Phase:
        up: list[Step] = [self.guard("contract-guard")]
        for fk in self.links:
            where = "from" if (fk.ref_schema, fk.ref_table) == self.me else "to"
            other = fk.table if where == "from" else fk.ref_table
            step = self.drop_constraint(fk.schema, fk.table, fk.name, foreign_key=True)
            up.append(
                Step(
                    f"drop foreign key {fk.name} ({where} {other})",
                    step.kind,
                    step.sql,
                    lock=step.lock,
                    squawk_ignore=(("ban-drop-constraint", "a foreign key of the table the contract drops"),),
                )
            )
        up.append(
            Step(
                f"drop table {self.table}",
                "ddl",
                f"DROP TABLE IF EXISTS {self.table_sql}",
                lock="ACCESS EXCLUSIVE on the table (and its sequences), brief: no foreign key links it any more",
                squawk_ignore=(("ban-drop-table", "the guarded contract: no running code maps the table"),),
            )
        )
        return Phase(
            "contract",
            f"Drop {self.table_sql} and the foreign keys that link it to other tables.",
            tuple(up),
            tuple(self.recreate()),
            before=f"Every running instance stopped mapping {self.table_sql}.",
            after="Nothing: the table is gone.",
            rollback=(
                "Downgrade this revision: re-creates the table EMPTY (its rows are gone), with its columns, "
                "keys, checks, indexes, foreign keys (those of other tables NOT VALID) and grants."
            ),
        )

    # -- its downgrade ------------------------------------------------------------------
    def column_sql(self, c: dict[str, Any]) -> str:
        parts = [q(c["name"]), c["type_sql"]]
        if c.get("collation"):
            parts.append(f"COLLATE {c['collation']}")
        if c.get("identity"):
            parts.append(f"GENERATED {'ALWAYS' if c['identity'] == 'a' else 'BY DEFAULT'} AS IDENTITY")
        elif c.get("generated"):
            parts.append(f"GENERATED ALWAYS AS ({c['default']}) STORED")
        elif c.get("default") is not None:
            parts.append(f"DEFAULT {c['default']}")
        if c.get("not_null"):
            parts.append("NOT NULL")
        return " ".join(parts)

    def recreate(self) -> list[Step]:
        statements: list[str] = []
        for c in self.columns:
            if c.get("sequence"):
                as_type = f" AS {c['type_sql']}" if c["type_sql"] in _INTEGERS else ""
                statements.append(f"CREATE SEQUENCE IF NOT EXISTS {c['sequence']}{as_type};")
        body = ",\n    ".join(self.column_sql(c) for c in self.columns)
        statements.append(f"CREATE TABLE {self.table_sql} (\n    {body}\n);")
        for c in self.columns:
            if c.get("sequence"):
                statements.append(f"ALTER SEQUENCE {c['sequence']} OWNED BY {self.table_sql}.{q(c['name'])};")
        owner = self.f.extra.get("owner")
        if owner:
            statements.append(f"ALTER TABLE {self.table_sql} OWNER TO {q(str(owner))};")
        statements += grant_sql(self.table_sql, list(self.f.extra.get("table_grants", [])))
        if self.f.extra.get("row_security"):
            statements.append(f"ALTER TABLE {self.table_sql} ENABLE ROW LEVEL SECURITY;")
        if self.f.extra.get("force_row_security"):
            statements.append(f"ALTER TABLE {self.table_sql} FORCE ROW LEVEL SECURITY;")
        exists = f"SELECT to_regclass({literal(self.table_sql)}) IS NOT NULL"
        down: list[Step] = [
            Step(
                f"re-create table {self.table} (empty: its rows are gone)",
                "ddl",
                dollar_block("\n".join(statements)),
                lock="none (a new table)",
                skip_if=exists,
            )
        ]
        down += self.sequences_past_references()
        for chk in self.f.checks:
            down.append(self.add_check(chk.name, chk.expression, f"re-add check {chk.name}"))
            if chk.valid:
                down.append(self.validate_here(chk.name))
        anchor = self.f.columns[0] if self.f.columns else ""
        for ix in self.f.indexes:
            if ix.constraint and not ix.unique:
                continue  # an exclusion constraint: its definition is not among the facts
            definition = rewrite_index_definition(ix.definition, anchor, anchor, ix.name, concurrently=True)
            down.append(self.create_index(ix.name, definition))
            if ix.constraint:
                kind = "PRIMARY KEY" if ix.primary else "UNIQUE"
                down.append(
                    Step(
                        f"{kind.lower()} {ix.constraint} using its index",
                        "ddl",
                        f"ALTER TABLE {self.table_sql} ADD CONSTRAINT {q(ix.constraint)} {kind} USING INDEX {q(ix.name)}",
                        lock="ACCESS EXCLUSIVE, brief (an empty table)",
                        skip_if=self.constraint_exists(self.s, self.table, ix.constraint),
                    )
                )
        for fk in (*self.f.foreign_keys, *self.f.referenced_by):
            down.append(
                self.add_foreign_key(
                    fk, fk.name, fk.columns, fk.ref_columns, f"re-add foreign key {fk.name} (NOT VALID)"
                )
            )
            if fk.valid and (fk.schema, fk.table) == self.me:
                down.append(
                    self.validate(fk.schema, fk.table, fk.name, "SHARE UPDATE EXCLUSIVE (an empty table)")
                )
            elif fk.valid:
                down.append(self.validate_unless_orphans(fk))
        return down

    def validate_unless_orphans(self, fk: Any) -> Step:
        """Another table's key validated again when none of its rows lost their parent: after a
        contract stopped before DROP TABLE (abort gives back what it did), not after the drop."""
        child = qualified(fk.schema, fk.table)
        joined = " AND ".join(f"p.{q(r)} = c.{q(c)}" for c, r in zip(fk.columns, fk.ref_columns, strict=True))
        present = " AND ".join(f"c.{q(c)} IS NOT NULL" for c in fk.columns)
        orphans = (
            f"SELECT EXISTS (SELECT 1 FROM {child} c WHERE {present} "
            f"AND NOT EXISTS (SELECT 1 FROM {self.table_sql} p WHERE {joined}))"
        )
        valid = (
            f"SELECT convalidated FROM pg_constraint WHERE conrelid = {literal(child)}::regclass "
            f"AND conname = {literal(fk.name)}"
        )
        return Step(
            f"validate {fk.name} again if every row still has its parent",
            "concurrent",
            f"ALTER TABLE {child} VALIDATE CONSTRAINT {q(fk.name)}",
            lock=f"SHARE UPDATE EXCLUSIVE on {child}, ROW SHARE on the table (a scan; writes continue)",
            skip_if=f"SELECT ({orphans}) OR COALESCE(({valid}), true)",
        )

    def sequences_past_references(self) -> list[Step]:
        """Key sequences (serial or identity) moved past every value other tables still hold.

        The re-created table is empty, its sequences start again at 1, and the foreign keys of
        other tables come back NOT VALID over rows that reference the dropped rows: a new row
        must not take such an id, or those orphans would silently belong to it.
        """
        steps = []
        by_column: dict[str, list[str]] = {}
        for fk in self.f.referenced_by:
            if (fk.schema, fk.table) == self.me or len(fk.columns) != 1:
                continue
            by_column.setdefault(fk.ref_columns[0], []).append(
                f"(SELECT max({q(fk.columns[0])}) FROM {qualified(fk.schema, fk.table)})"
            )
        keyed = {c["name"] for c in self.columns if c.get("sequence") or c.get("identity")}
        for column, maxima in by_column.items():
            if column not in keyed:
                continue
            highest = maxima[0] if len(maxima) == 1 else f"GREATEST({', '.join(maxima)})"
            steps.append(
                Step(
                    f"move the sequence of {column} past the ids other tables still reference",
                    "sql",
                    f"SELECT setval(pg_get_serial_sequence({literal(self.table_sql)}, {literal(column)}), m) "
                    f"FROM (SELECT {highest}::bigint AS m) v WHERE m IS NOT NULL",
                    lock="none (reads the referencing tables)",
                )
            )
        return steps

    def notes(self) -> tuple[str, ...]:
        out = [
            f"the contract drops {self.table_sql} and its rows: its downgrade (and ecm abort after it) "
            "re-creates the table empty"
        ]
        incoming = [fk for fk in self.links if (fk.ref_schema, fk.ref_table) == self.me]
        if incoming:
            names = ", ".join(f"{fk.name} on {qualified(fk.schema, fk.table)}" for fk in incoming)
            out.append(
                f"foreign key(s) {names} go first; the downgrade re-adds them NOT VALID (their rows "
                "reference rows that are gone)"
            )
        if self.f.other_triggers or self.f.policies:
            what = [f"trigger(s) {', '.join(self.f.other_triggers)}"] if self.f.other_triggers else []
            what += [f"policies {', '.join(self.f.policies)}"] if self.f.policies else []
            out.append(f"the downgrade does not re-create {' and '.join(what)}")
        if any(ix.constraint and not ix.unique for ix in self.f.indexes):
            out.append("exclusion constraints are not re-created by the downgrade")
        return tuple(out)

    def plan(self) -> Plan:
        key = f"{self.s}.{self.table}"
        touches: dict[str, list[str]] = {key: ["*"]}
        for fk in self.links:
            for schema, table, cols in (
                (fk.schema, fk.table, fk.columns),
                (fk.ref_schema, fk.ref_table, fk.ref_columns),
            ):
                if (schema, table) != self.me:
                    merged = touches.setdefault(f"{schema}.{table}", [])
                    merged.extend(c for c in cols if c not in merged)
        return Plan(
            plan_id=self.plan_id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=f"drop table {self.table_sql}",
            phases=(self.contract(),),
            removes={key: ["*"]},
            touches=touches,
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.table,
                "facts": self.f.to_json(),
            },
            notes=self.notes(),
        )
