"""add-foreign-key: a foreign key without a scan under a lock that stops writes.

``ALTER TABLE … ADD FOREIGN KEY`` alone holds SHARE ROW EXCLUSIVE on both tables while it
scans the referencing one: every write to either waits for the scan. Split up:

* **expand**: the orphans are counted first (a row whose key has no referenced row would
  make the validation fail; the plan is refused, with keys, before anything is built); the
  referencing columns get an index ``CONCURRENTLY`` (without one, every delete of a
  referenced row scans the referencing table, under the constraint's own trigger); then the
  constraint ``NOT VALID``: SHARE ROW EXCLUSIVE on both tables for a catalog change only.
* **contract**: the orphans counted again (rows written before the constraint existed), then
  ``VALIDATE CONSTRAINT``: one scan under SHARE UPDATE EXCLUSIVE on the referencing table and
  ROW SHARE on the referenced, so reads and writes of both go on.

Validation is the contract, not a step of the expand, for two reasons: the scan may be long
and the expand is what a deploy waits for; and a plan is finished (later plans on these
columns are let through) once its contract is applied. Nothing running can be hurt by it: it
rejects no write the ``NOT VALID`` constraint did not already reject, so there is no guard.

What does change for running code happens at the expand, for old code too: a ``NOT VALID``
foreign key is enforced on every write from then on, and its ON DELETE / ON UPDATE action
applies at once to deletes and key updates of referenced rows. The plan's notes say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import BadInput
from ...sql.prechecks import violations
from ...sql.quoting import q, qualified
from .. import checks, names
from ..blocks import Builder
from ..constraints import Reference, parse_reference, require_free_name, row_key, values_text
from ..facts import ForeignKeyFact, IndexFact, TableFacts, related_facts
from ..model import Phase, Plan, Step
from .base import Operation, param

ACTIONS = ("NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT")

#: What a delete of a referenced row does to referencing rows, per ON DELETE action.
_ON_DELETE = {
    "NO ACTION": "fails (foreign-key violation) while rows of {child} reference it",
    "RESTRICT": "fails (foreign-key violation) while rows of {child} reference it",
    "CASCADE": "deletes the rows of {child} that reference it",
    "SET NULL": "sets {cols} of the rows of {child} that reference it to NULL",
    "SET DEFAULT": "sets {cols} of the rows of {child} that reference it to their default",
}

#: The locks of the validation, shown in plans.
VALIDATE_LOCKS = (
    "SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the referenced "
    "(one scan; reads and writes of both continue)"
)


def action(value: str | None, option: str) -> str:
    """``cascade``, ``set-null``, ``SET NULL``: one spelling, or BadInput listing them."""
    if value is None:
        return "NO ACTION"
    spelled = " ".join(value.replace("-", " ").replace("_", " ").upper().split())
    if spelled not in ACTIONS:
        raise BadInput(f"{option} {value!r} is not an action; use one of {', '.join(ACTIONS)}")
    return spelled


@dataclass(frozen=True)
class AddForeignKey(Operation):
    kind: ClassVar[str] = "add-foreign-key"
    summary: ClassVar[str] = (
        "Add a foreign key with zero downtime: orphans counted first, an index on the referencing "
        "columns concurrently, the constraint NOT VALID (brief lock), then validated without blocking writes."
    )
    phases_help: ClassVar[str] = (
        "expand: count rows whose key has no referenced row (exit 1 with the count and sample keys, "
        "nothing built); CREATE INDEX CONCURRENTLY on the referencing columns unless an index leads with "
        "them or --no-index; ADD CONSTRAINT … FOREIGN KEY … NOT VALID (SHARE ROW EXCLUSIVE on both "
        "tables, brief). From then on it is enforced on every write, and its ON DELETE action applies to "
        "deletes of referenced rows, old code's included. contract: the orphans counted again, then "
        "VALIDATE CONSTRAINT (SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the "
        "referenced: reads and writes continue). RTABLE follows SQL's rules: quote names that are not "
        'lower case, e.g. --references \'"Parents"("Key")\'.'
    )
    whole_table: ClassVar[bool] = True

    columns: tuple[str, ...] = param("Referencing column(s) of TABLE, in key order.", metavar="COLUMN...")
    references: str = param(
        "Referenced table, optionally schema-qualified, with its columns in parentheses (default: its "
        "primary key); names as in SQL (quote mixed case).",
        "--references",
        metavar="RTABLE[(RCOLUMN...)]",
    )
    on_delete: str | None = param(
        "ON DELETE action: NO ACTION (default), RESTRICT, CASCADE, SET NULL, SET DEFAULT.",
        "--on-delete",
        default=None,
        metavar="ACTION",
    )
    on_update: str | None = param(
        "ON UPDATE action: NO ACTION (default), RESTRICT, CASCADE, SET NULL, SET DEFAULT.",
        "--on-update",
        default=None,
        metavar="ACTION",
    )
    constraint: str | None = param(
        "Constraint name (default: TABLE_COLUMNS_fkey).", "--name", default=None, metavar="N"
    )
    no_index: bool = param(
        "Build no index on the referencing columns (deletes of referenced rows then scan TABLE).",
        "--no-index",
        default=False,
    )

    # -- input ------------------------------------------------------------------------
    def check_input(self) -> None:
        super().check_input()
        if not self.columns:
            raise BadInput("give at least one referencing COLUMN")
        for column in self.columns:
            checks.identifier(column, "column")
        if len(set(self.columns)) != len(self.columns):
            raise BadInput(f"column {q(self._repeated())} is given twice")
        if self.constraint is not None:
            checks.identifier(self.constraint, "constraint")
        action(self.on_delete, "--on-delete")
        action(self.on_update, "--on-update")
        ref = parse_reference(self.references)
        if ref.columns and len(ref.columns) != len(self.columns):
            raise BadInput(
                f"{len(self.columns)} referencing column(s) but {len(ref.columns)} referenced: "
                "give as many of each"
            )

    def _repeated(self) -> str:
        return next(c for c in self.columns if self.columns.count(c) > 1)

    def reference(self) -> Reference:
        return parse_reference(self.references)

    def related(self, facts: TableFacts) -> tuple[tuple[str, str], ...]:
        ref = self.reference()
        # Unqualified: the referencing table's schema (documented), not the search_path.
        return ((ref.schema or facts.schema, ref.table),)

    def id_parts(self) -> tuple[str, ...]:
        return self.columns

    def parent(self, facts: TableFacts) -> TableFacts:
        ref = self.reference()
        try:
            return related_facts(facts, ref.schema or facts.schema, ref.table)
        except KeyError:
            raise BadInput(
                "add-foreign-key reads the referenced table's keys from the database: plan it without "
                "--from-metadata"
            ) from None

    def validate(self, facts: TableFacts) -> None:
        _Planner(self, facts)  # every refusal is in the planner's reading of the facts

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        return _Planner(self, facts).plan()


def _types(facts: TableFacts) -> dict[str, list[object]]:
    found: dict[str, list[object]] = facts.extra.get("column_types", {})
    return found


class _Planner(Builder):
    """Reads the facts of both tables (refusing what cannot work) and writes the plan."""

    def __init__(self, op: AddForeignKey, facts: TableFacts) -> None:
        plan_id = op.id_for(facts)
        super().__init__(facts, plan_id)
        checks.table_is_plannable(facts)
        self.op = op
        self.id = plan_id
        self.parent = op.parent(facts)
        checks.table_is_plannable(self.parent)
        self.cols = op.columns
        self.parent_sql = qualified(self.parent.schema, self.parent.name)
        self.on_delete = action(op.on_delete, "--on-delete")
        self.on_update = action(op.on_update, "--on-update")
        for column in self.cols:
            if column not in facts.columns:
                raise BadInput(
                    f"column {q(column)} does not exist in table {self.table_sql} "
                    f"(columns: {', '.join(q(c) for c in facts.columns)})"
                )
        self.ref_cols = self._referenced()
        self._check_types()
        self._check_actions()
        self.constraint = op.constraint or names.fit(f"{self.table}_{'_'.join(self.cols)}_fkey")
        require_free_name(facts, self.constraint)
        for fk in facts.foreign_keys:
            if fk.columns == self.cols and (fk.ref_schema, fk.ref_table) == (
                self.parent.schema,
                self.parent.name,
            ):
                raise BadInput(
                    f"foreign key {q(fk.name)} already makes ({', '.join(q(c) for c in self.cols)}) of "
                    f"{self.table_sql} reference {self.parent_sql}"
                )
        self.covering = self._covering_index()
        self.index = None if (op.no_index or self.covering) else self._index_name()

    # -- reading the facts ------------------------------------------------------------
    def _referenced(self) -> tuple[str, ...]:
        ref = self.op.reference()
        cols = ref.columns or self.parent.primary_key
        if not cols:
            raise BadInput(
                f"table {self.parent_sql} has no primary key: name the referenced columns, "
                f"--references {ref.sql()}(COLUMN, ...)"
            )
        if len(cols) != len(self.cols):
            raise BadInput(
                f"{len(self.cols)} referencing column(s) but the primary key of {self.parent_sql} has "
                f"{len(cols)} ({', '.join(q(c) for c in cols)})"
            )
        for column in cols:
            if column not in self.parent.columns:
                raise BadInput(
                    f"column {q(column)} does not exist in table {self.parent_sql} "
                    f"(columns: {', '.join(q(c) for c in self.parent.columns)})"
                )
        if not any(self._is_key(ix, cols) for ix in self.parent.indexes):
            raise BadInput(
                f"({', '.join(q(c) for c in cols)}) of {self.parent_sql} is not its primary key or a unique "
                "constraint or index: a foreign key must reference one (add-unique makes one online)"
            )
        return tuple(cols)

    @staticmethod
    def _is_key(ix: IndexFact, cols: tuple[str, ...]) -> bool:
        """What PostgreSQL accepts as referenced: a valid, plain, non-partial unique index on
        exactly those columns, in any order."""
        plain = ix.valid and ix.unique and not ix.partial and not ix.expression
        return plain and len(ix.columns) == len(cols) and set(ix.columns) == set(cols)

    def _check_types(self) -> None:
        mine, theirs = _types(self.f), _types(self.parent)
        for col, ref in zip(self.cols, self.ref_cols, strict=True):
            a, b = mine.get(col), theirs.get(ref)
            if a is None or b is None or a[1] != b[1]:
                shown_a = a[0] if a else "?"
                shown_b = b[0] if b else "?"
                raise BadInput(
                    f"column {self.table_sql}.{q(col)} is {shown_a} but {self.parent_sql}.{q(ref)} is "
                    f"{shown_b}: a foreign key needs the same types (change-type makes them equal online)"
                )

    def _check_actions(self) -> None:
        types = _types(self.f)
        for which, act in (("--on-delete", self.on_delete), ("--on-update", self.on_update)):
            if act != "SET NULL":
                continue
            strict = [c for c in self.cols if types.get(c, [None, None, False])[2]]
            if strict:
                raise BadInput(
                    f"{which} SET NULL but column {self.table_sql}.{q(strict[0])} is NOT NULL: every "
                    "such delete or update of a referenced row would fail"
                )

    def _covering_index(self) -> str | None:
        """An index whose leading key columns are the referencing columns (any order): a
        referenced row's delete finds its referencing rows through it."""
        n = len(self.cols)
        for ix in self.f.indexes:
            if ix.valid and not ix.partial and not ix.expression and set(ix.columns[:n]) == set(self.cols):
                return ix.name
        return None

    def _index_name(self) -> str:
        taken = {ix.name for ix in self.f.indexes}
        base = f"{self.table}_{'_'.join(self.cols)}_idx"
        name, n = names.fit(base), 1
        while name in taken:
            n += 1
            name = names.fit(f"{base}{n}")
        return name

    # -- steps ----------------------------------------------------------------------
    def orphans(self) -> Step:
        cols = ", ".join(self.cols)
        present = " AND ".join(f"c.{q(c)} IS NOT NULL" for c in self.cols)
        joined = " AND ".join(f"p.{q(r)} = c.{q(c)}" for c, r in zip(self.cols, self.ref_cols, strict=True))
        key, order = row_key(self.f, "c")
        sample = f"{key} || ': ' || {values_text('c', self.cols)}"
        query = violations(
            f"FROM {self.table_sql} AS c WHERE {present} AND NOT EXISTS "
            f"(SELECT FROM {self.parent_sql} AS p WHERE {joined}) ORDER BY {order}",
            sample,
        )
        return Step(
            f"rows of {self.table_sql} whose {cols} has no row in {self.parent_sql}",
            "precheck",
            query,
            lock="ACCESS SHARE on both tables (reads only: one scan)",
        )

    def create_fk_index(self, name: str) -> Step:
        cols = ", ".join(q(c) for c in self.cols)
        return self.create_index(
            name, f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {q(name)} ON {self.table_sql} ({cols})"
        )

    def fact(self) -> ForeignKeyFact:
        return ForeignKeyFact(
            name=self.constraint,
            schema=self.s,
            table=self.table,
            columns=self.cols,
            ref_schema=self.parent.schema,
            ref_table=self.parent.name,
            ref_columns=self.ref_cols,
            on_update=self.on_update,
            on_delete=self.on_delete,
            valid=False,
        )

    # -- phases ---------------------------------------------------------------------
    def expand(self) -> Phase:
        up = [self.orphans()]
        if self.index is not None:
            up.append(self.create_fk_index(self.index))
        up.append(
            self.add_foreign_key(
                self.fact(),
                self.constraint,
                self.cols,
                self.ref_cols,
                f"add foreign key {self.constraint} (NOT VALID)",
            )
        )
        down = [self.drop_constraint(self.s, self.table, self.constraint, foreign_key=True)]
        if self.index is not None:
            down.append(self.drop_index(self.index))
        return Phase(
            "expand",
            f"Add foreign key {self.constraint} from {self.table_sql} to {self.parent_sql} NOT VALID"
            + (f", with index {self.index}" if self.index else "")
            + ": enforced on every write from now on.",
            tuple(up),
            tuple(down),
            before="Nothing: old code keeps working as long as it writes keys that exist.",
            after="New code that relies on the foreign key may deploy.",
            rollback=(
                f"Downgrade this revision: drops {self.constraint}"
                + (f" and the index {self.index}" if self.index else "")
                + "."
            ),
        )

    def contract(self) -> Phase:
        return Phase(
            "contract",
            f"Validate {self.constraint}: one scan of {self.table_sql}, reads and writes continue.",
            (self.orphans(), self.validate(self.s, self.table, self.constraint, VALIDATE_LOCKS)),
            (),
            before="The expand of this plan (no guard: validating rejects nothing the expand did not).",
            after=f"{self.constraint} is valid: every row of {self.table_sql} has its referenced row.",
            rollback=(
                "Nothing to undo here (a validated constraint cannot be made NOT VALID again); "
                "the expand's downgrade drops it."
            ),
        )

    def notes(self) -> tuple[str, ...]:
        cols = ", ".join(self.cols)
        child = self.table_sql
        out = [
            f"from the expand on, {self.constraint} is enforced for old code too: an insert or update of "
            f"{child} whose {cols} has no row in {self.parent_sql} fails, and a delete of a row of "
            f"{self.parent_sql} "
            + _ON_DELETE[self.on_delete].format(child=child, cols=cols)
            + f" (ON DELETE {self.on_delete})",
        ]
        if self.on_update != "NO ACTION":
            out.append(
                f"ON UPDATE {self.on_update} applies from the expand on: changing "
                f"{', '.join(self.ref_cols)} of a referenced row changes or blocks the rows of {child}"
            )
        if self.covering:
            out.append(f"index {self.covering} already leads with {cols}: no index is built")
        elif self.op.no_index:
            out.append(
                f"--no-index: every delete (and key update) of a row of {self.parent_sql} scans {child} "
                "for referencing rows"
            )
        return tuple(out)

    def plan(self) -> Plan:
        child_key = f"{self.s}.{self.table}"
        parent_key = f"{self.parent.schema}.{self.parent.name}"
        touches: dict[str, list[str]] = {child_key: list(self.cols)}
        touches.setdefault(parent_key, [])
        touches[parent_key] += [c for c in self.ref_cols if c not in touches[parent_key]]
        cols = ", ".join(q(c) for c in self.cols)
        refs = ", ".join(q(c) for c in self.ref_cols)
        return Plan(
            plan_id=self.id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=f"add foreign key {q(self.constraint)} {self.table_sql} ({cols}) -> {self.parent_sql} ({refs})",
            phases=(self.expand(), self.contract()),
            touches=touches,
            creates=(self.constraint, *((self.index,) if self.index else ())),
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.table,
                "columns": list(self.cols),
                "references": self.op.references,
                "ref_schema": self.parent.schema,
                "ref_table": self.parent.name,
                "ref_columns": list(self.ref_cols),
                "on_delete": self.on_delete,
                "on_update": self.on_update,
                "name": self.constraint,
                "index": self.index,
                "facts": self.f.to_json(),
            },
            notes=self.notes(),
        )
