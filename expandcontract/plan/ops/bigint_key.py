"""bigint-key: an integer primary key, and every foreign key that references it, made bigint.

The same-name shape of change-type, on several tables at once:

* **expand** — a shadow ``bigint`` column beside the key and beside each referencing column,
  kept in step by one trigger per table (``NEW.shadow := NEW.column``);
* **backfill** — one batched backfill per table (each child, then the parent), each with
  checkpoints of its own (the children's are keyed ``PLAN:child:N``);
* **contract** — guard; NOT NULL of the shadows proven by validated checks; a unique index
  built concurrently on the parent's shadow (and copies of the other indexes); foreign keys
  between the shadows added NOT VALID, then validated; each child swapped in one short
  transaction (its foreign key already points at the parent's shadow), the parent last
  (primary key ``USING INDEX``, sequence widened and re-owned or identity moved), old columns
  dropped. Every swap is a ``swap`` step: it waits until live instances mapping that table
  paused their prepared statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import BadInput
from ...sql.quoting import literal, q, qualified
from ...sql.rewrite import index_references_column
from ...sql.transaction import one_transaction
from .. import checks, names
from ..blocks import Builder
from ..facts import ColumnFacts, ForeignKeyFact, IndexFact, TableFacts, related_facts
from ..model import Phase, Plan, Step
from .base import Operation, param

INTEGER = "integer"
BIGINT = "bigint"


@dataclass(frozen=True)
class BigintKey(Operation):
    kind: ClassVar[str] = "bigint-key"
    whole_table: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "Make an integer primary key bigint, with every foreign-key column referencing it: shadow "
        "columns, batched backfills, swaps under the same names."
    )
    phases_help: ClassVar[str] = (
        "Expand: a bigint shadow beside the key and beside each referencing column, each table's kept "
        "in step by a trigger.\n\nBackfill: each table's existing rows, batched.\n\n"
        "Contract (after old code is gone): unique index on the parent's shadow built concurrently, "
        "foreign keys between the shadows NOT VALID then validated, each child swapped, the parent "
        "last (primary key USING INDEX, sequence widened or identity moved)."
    )

    column_name: str | None = param(
        "The key column (default: the table's single-column primary key).", metavar="COLUMN", default=None
    )

    def check_input(self) -> None:
        super().check_input()
        if self.column_name is not None:
            checks.identifier(self.column_name, "column")

    def id_parts(self) -> tuple[str, ...]:
        return (self.column_name,) if self.column_name else ()

    def key(self, facts: TableFacts) -> str:
        where = self.where(facts)
        if len(facts.primary_key) > 1:
            raise BadInput(
                f"table {where} has a composite primary key ({', '.join(facts.primary_key)}); "
                "bigint-key changes a single-column key"
            )
        if not facts.primary_key:
            raise BadInput(f"table {where} has no primary key; bigint-key changes a primary key")
        if self.column_name is not None and self.column_name != facts.primary_key[0]:
            if self.column_name not in facts.columns:
                raise BadInput(f"column {qualified(None, self.column_name)} does not exist in table {where}")
            raise BadInput(
                f"column {self.where(facts, self.column_name)} is not the primary key of {where} "
                f"(the key is {facts.primary_key[0]})"
            )
        return facts.primary_key[0]

    def children(self, facts: TableFacts) -> list[ForeignKeyFact]:
        key = facts.primary_key[0] if len(facts.primary_key) == 1 else None
        return sorted(
            (fk for fk in facts.referenced_by if key in fk.ref_columns),
            key=lambda fk: (fk.schema, fk.table, fk.name),
        )

    def related(self, facts: TableFacts) -> tuple[tuple[str, str], ...]:
        seen: list[tuple[str, str]] = []
        for fk in self.children(facts):
            if (fk.schema, fk.table) not in seen and (fk.schema, fk.table) != (facts.schema, facts.name):
                seen.append((fk.schema, fk.table))
        return tuple(seen)

    def related_columns(self, facts: TableFacts) -> tuple[tuple[str, str, str], ...]:
        if len(facts.primary_key) != 1:
            return ()
        key = self.column_name if self.column_name in facts.primary_key else facts.primary_key[0]
        out = [(facts.schema, facts.name, key)]
        for fk in self.children(facts):
            if len(fk.columns) == 1:
                out.append((fk.schema, fk.table, fk.columns[0]))
        return tuple(out)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        k = self.key(facts)
        cols = _column_facts(facts)
        parent = cols.get((facts.schema, facts.name, k))
        if parent is None or any(
            (fk.schema, fk.table, fk.columns[0]) not in cols for fk in self.children(facts)
        ):
            raise BadInput(
                "bigint-key reads the key, its sequence and the foreign keys referencing it from the database; "
                "--from-metadata is not supported"
            )
        where = self.where(facts, k)
        if parent.column is not None and parent.col.type_sql == BIGINT:
            raise BadInput(f"column {where} is already bigint")
        if parent.column is None or parent.col.type_sql != INTEGER:
            have = parent.column.type_sql if parent.column else "?"
            raise BadInput(f"column {where} is not an integer key ({have}); bigint-key widens integer keys")
        _refuse_uses(parent, where)
        if any(k in fk.columns for fk in parent.foreign_keys):
            raise BadInput(f"column {where} is itself a foreign key; bigint-key cannot carry that over yet")
        if parent.checks:
            raise BadInput(f"column {where} is used by check constraint(s); drop them first")
        for fk in self.children(facts):
            fwhere = f"{qualified(fk.schema, fk.table)}.{qualified(None, fk.columns[0])}"
            if len(fk.columns) != 1:
                raise BadInput(
                    f"foreign key {fk.name} on {qualified(fk.schema, fk.table)} is composite; not supported"
                )
            if (fk.schema, fk.table) == (facts.schema, facts.name):
                raise BadInput(f"foreign key {fk.name} references its own table; not supported yet")
            child = cols[(fk.schema, fk.table, fk.columns[0])]
            ctype = child.col.type_sql
            if ctype != INTEGER:
                raise BadInput(
                    f"column {fwhere} (foreign key {fk.name}) is {ctype}, not integer; bigint-key widens "
                    "integer referencing columns only"
                )
            _refuse_uses(child, fwhere)
            if len(child.foreign_keys) != 1 or child.referenced_by or child.checks:
                raise BadInput(
                    f"column {fwhere} takes part in other constraints than {fk.name}; not supported"
                )
            checks.table_is_plannable(child)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


def _column_facts(facts: TableFacts) -> dict[tuple[str, str, str], TableFacts]:
    out: dict[tuple[str, str, str], TableFacts] = {}
    for data in facts.extra.get("columns", []):
        f = TableFacts.from_json(data)
        if f.column is not None:
            out[(f.schema, f.name, f.column.name)] = f
    return out


def _refuse_uses(f: TableFacts, where: str) -> None:
    if f.dependent_views or f.policies:
        raise BadInput(
            f"column {where} is used by view(s) or policies {', '.join(f.dependent_views + f.policies)}; "
            "change or drop them first"
        )
    for kind, name in f.dependents:
        if kind in ("rule", "trigger", "generated column", "publication", "object"):
            raise BadInput(f"column {where} is used by {kind} {name}; change or drop it first")
    if f.col.generated:
        raise BadInput(f"column {where} is a generated column")


def _dollar(body: str, tag: str) -> str:
    chosen, n = tag, 0
    while f"${chosen}$" in body:
        n += 1
        chosen = f"{tag}{n}"
    return f"${chosen}$"


def _do(lines: list[str], declare: str = "") -> str:
    body = "\n".join(
        "    " + (x if x.startswith(("EXECUTE", "SELECT", "next_value")) else f"EXECUTE {literal(x)};")
        for x in lines
    )
    body = f"{declare}BEGIN\n{body}\nEND"
    d = _dollar(body, "ecm_swap")
    return f"DO {d}\n{body}\n{d}"


class _Side:
    """One table of the plan: the parent, or a child with the foreign key that references the parent."""

    def __init__(
        self, planner: _Planner, facts: TableFacts, col: ColumnFacts, n: int, fk: ForeignKeyFact | None
    ) -> None:
        plan_id = planner.plan_id
        self.b = Builder(facts, plan_id)
        self.f = facts
        self.col = col
        self.c = col.name
        self.fk = fk
        tag = "parent" if fk is None else f"child:{n}"
        self.tag = tag
        self.shadow = names.fit(f"{self.c}_{names.PREFIX}_new", key=f"{plan_id}:{tag}:shadow")
        self.retired = names.fit(f"{self.c}_{names.PREFIX}_old", key=f"{plan_id}:{tag}:old")
        self.function = (
            names.function_name(plan_id)
            if fk is None
            else names.fit(f"{names.PREFIX}_{plan_id}_sync{n}", key=f"{plan_id}:{tag}:fn")
        )
        self.trigger = names.trigger_name(plan_id)
        self.nn = names.not_null_check(plan_id)
        # Key, expression, INCLUDE or WHERE: every index DROP COLUMN would take with the column.
        self.indexes = [ix for ix in facts.indexes if index_references_column(ix.definition, self.c)]
        self.index_names = {
            ix.name: names.derived(ix.name, self.c, self.shadow, plan_id) for ix in self.indexes
        }
        self.fk_new = names.derived(fk.name, self.c, self.shadow, plan_id) if fk else ""
        self.spec_id = plan_id if fk is None else f"{plan_id}:{tag}"
        self.table_key = f"{facts.schema}.{facts.name}"

    @property
    def t(self) -> str:
        return self.b.table_sql

    def function_sql(self) -> str:
        body = f"BEGIN\n    NEW.{q(self.shadow)} := NEW.{q(self.c)};\n    RETURN NEW;\nEND"
        d = _dollar(body, "ecm")
        fn = qualified(self.f.schema, self.function)
        return f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger\nLANGUAGE plpgsql AS {d}\n{body}\n{d}"

    def expand(self) -> list[Step]:
        return [
            self.b.add_column(
                self.shadow, BIGINT, f"add column {self.shadow} (bigint) to {self.f.name}", copied=False
            ),
            *self.b.trigger(self.function, self.trigger, self.function_sql()),
        ]

    def expand_down(self) -> list[Step]:
        return [
            *self.b.drop_trigger(self.function, self.trigger),
            self.b.drop_column(self.shadow, "rolling back expand: the shadow only held copies"),
        ]

    def spec(self, suffix: str = "") -> dict[str, object]:
        distinct = f"{q(self.shadow)} IS DISTINCT FROM {q(self.c)}"
        spec = self.b.backfill_spec(
            self.spec_id + suffix,
            set_sql=f"{q(self.shadow)} = {q(self.c)}",
            pending_sql=distinct,
            mismatch_fix="run `ecm upgrade --phase backfill` again (each table's backfill resumes)",
        )
        return spec.to_json()

    def backfill_step(self, suffix: str = "") -> Step:
        name = f"backfill {self.f.name}" + (" again" if suffix else "")
        # A child's backfill names its spec (plan.spec["backfills"]); the parent's is the plan's own.
        return Step(
            name,
            "backfill",
            "" if self.fk is None else self.spec_id + suffix,
            lock="row locks of one batch at a time",
        )

    def pk_index(self) -> IndexFact | None:
        return next((ix for ix in self.indexes if ix.primary), None)

    def contract_prepare(self) -> list[Step]:
        from ...sql.rewrite import rewrite_index_definition

        steps: list[Step] = []
        if not self.col.nullable:
            steps.append(self.b.add_not_null_check(self.shadow, self.nn))
            steps.append(self.b.validate_here(self.nn))
        for ix in self.indexes:
            name = self.index_names[ix.name]
            definition = rewrite_index_definition(ix.definition, self.c, self.shadow, name, concurrently=True)
            steps.append(self.b.create_index(name, definition))
        return steps

    def add_fk(self, parent: _Side) -> list[Step]:
        assert self.fk is not None
        return [
            self.b.add_foreign_key(
                self.fk,
                self.fk_new,
                [self.shadow],
                [parent.shadow],
                f"add foreign key {self.fk_new} (NOT VALID)",
            ),
            self.b.validate(
                self.f.schema,
                self.f.name,
                self.fk_new,
                "SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the referenced",
            ),
        ]

    def carry(self) -> list[str]:
        """Default, indexes, grants and comment of the old column, onto the swapped-in one."""
        t, c = self.t, q(self.c)
        lines: list[str] = []
        for ix in self.indexes:
            if ix.primary:
                continue
            lines.append(
                f"ALTER INDEX IF EXISTS {qualified(self.f.schema, self.index_names[ix.name])} RENAME TO {q(ix.name)}"
            )
            if ix.constraint and ix.unique:
                lines.append(
                    f"ALTER TABLE {t} ADD CONSTRAINT {q(ix.constraint)} UNIQUE USING INDEX {q(ix.name)}"
                )
        for g in self.col.grants:
            grantee = "PUBLIC" if g.grantee.upper() == "PUBLIC" else q(g.grantee)
            option = " WITH GRANT OPTION" if g.grantable else ""
            lines.append(f"GRANT {g.privilege} ({c}) ON {t} TO {grantee}{option}")
        if self.col.comment is not None:
            lines.append(f"COMMENT ON COLUMN {t}.{c} IS {literal(self.col.comment)}")
        return lines

    def renames(self) -> list[str]:
        t, c = self.t, q(self.c)
        lines = [
            f"DROP TRIGGER IF EXISTS {q(self.trigger)} ON {t}",
            f"ALTER TABLE {t} RENAME COLUMN {c} TO {q(self.retired)}",
            f"ALTER TABLE {t} RENAME COLUMN {q(self.shadow)} TO {c}",
        ]
        if not self.col.nullable:
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL")
            lines.append(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {q(self.nn)}")
        return lines

    def done_sql(self) -> str:
        return (
            "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
            f"{literal(self.t)}::regclass AND attname = {literal(self.shadow)} AND NOT attisdropped)"
        )

    def child_swap(self) -> Step:
        assert self.fk is not None
        t = self.t
        lines = [
            f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE",
            f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {q(self.fk.name)}",
        ]
        lines += self.renames()
        if self.col.default is not None:
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {q(self.retired)} DROP DEFAULT")
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {q(self.c)} SET DEFAULT {self.col.default}")
        lines.append(f"ALTER TABLE {t} DROP COLUMN {q(self.retired)}")
        lines.append(f"ALTER TABLE {t} RENAME CONSTRAINT {q(self.fk_new)} TO {q(self.fk.name)}")
        lines += self.carry()
        return Step(
            f"swap {self.shadow} in as {self.c} on {self.f.name}",
            "swap",
            _do(lines),
            lock=f"ACCESS EXCLUSIVE on {self.f.name} and the parent, brief (catalog only)",
            skip_if=self.done_sql(),
            squawk_ignore=(("ban-drop-column", "the contract's deliberate drop of the retired old column"),),
        )

    def parent_swap(self) -> Step:
        t, c = self.t, q(self.c)
        col = self.col
        pk = self.pk_index()
        assert pk is not None and pk.constraint
        lines: list[str] = [f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"]
        if col.identity:
            lines.append(
                f"EXECUTE 'SELECT nextval(' || quote_literal(pg_get_serial_sequence({literal(t)}, {literal(self.c)})) "
                "|| ')' INTO next_value;"
            )
        lines.append(f"ALTER TABLE {t} DROP CONSTRAINT {q(pk.constraint)}")
        if col.identity:
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {c} DROP IDENTITY IF EXISTS")
        lines += self.renames()
        if col.nullable:  # a primary key column is NOT NULL: the validated check proves it
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL")
        lines.append(
            f"ALTER TABLE {t} ADD CONSTRAINT {q(pk.constraint)} PRIMARY KEY USING INDEX {q(self.index_names[pk.name])}"
        )
        if col.default is not None and not col.identity:
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {q(self.retired)} DROP DEFAULT")
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {col.default}")
        if col.owned_sequence and not col.identity:
            seq = col.owned_sequence
            lines.append(f"ALTER SEQUENCE {seq} OWNED BY {t}.{c}")
            alter = literal(f"ALTER SEQUENCE {seq} AS bigint")
            lines.append(
                f"EXECUTE (SELECT CASE WHEN t.typlen < 8 THEN {alter} ELSE 'SELECT' END "
                "FROM pg_sequence s JOIN pg_type t ON t.oid = s.seqtypid "
                f"WHERE s.seqrelid = {literal(seq)}::regclass);"
            )
        if col.identity:
            kind = "ALWAYS" if col.identity == "a" else "BY DEFAULT"
            lines.append(
                "EXECUTE format('ALTER TABLE %s ALTER COLUMN %I ADD GENERATED "
                f"{kind} AS IDENTITY (START WITH %s)', {literal(t)}, {literal(self.c)}, next_value);"
            )
        lines.append(f"ALTER TABLE {t} DROP COLUMN {q(self.retired)}")
        lines += self.carry()
        return Step(
            f"swap {self.shadow} in as {self.c} on {self.f.name} (primary key USING INDEX)",
            "swap",
            _do(lines, "DECLARE\n    next_value bigint;\n"),
            lock=f"ACCESS EXCLUSIVE on {self.f.name}, brief (catalog only: the shadow is filled, indexed, proven NOT NULL)",
            skip_if=self.done_sql(),
            squawk_ignore=(("ban-drop-column", "the contract's deliberate drop of the retired old column"),),
        )

    def contract_cleanup(self) -> list[Step]:
        return [
            self.b.drop_trigger(self.function, self.trigger)[1],
            # The swapped-in column has no statistics yet: a sample, not a scan.
            Step(
                f"analyze {self.f.name} ({self.c})",
                "sql",
                f"ANALYZE {self.t} ({q(self.c)})",
                lock="SHARE UPDATE EXCLUSIVE (reads a sample; reads and writes continue)",
            ),
        ]

    # -- rollback of the contract --------------------------------------------------------------
    def convert_back(self) -> Step:
        t, c = self.t, q(self.c)
        sql = f"ALTER TABLE {t} ALTER COLUMN {c} TYPE integer"
        if self.fk is None and self.col.owned_sequence and not self.col.identity:
            seq = self.col.owned_sequence
            alter = literal(f"ALTER SEQUENCE {seq} AS integer")
            sql = _do(
                [
                    sql,
                    f"EXECUTE (SELECT CASE WHEN t.typlen > 4 THEN {alter} ELSE 'SELECT' END "
                    "FROM pg_sequence s JOIN pg_type t ON t.oid = s.seqtypid "
                    f"WHERE s.seqrelid = {literal(seq)}::regclass);",
                ]
            )
        return Step(
            f"convert {self.c} of {self.f.name} back to integer",
            "swap",
            sql,
            lock="ACCESS EXCLUSIVE for a table rewrite: a rollback, not an online change (fails if a value no longer fits)",
            skip_if=(
                f"SELECT format_type(atttypid, atttypmod) = 'integer' FROM pg_attribute WHERE attrelid = "
                f"{literal(t)}::regclass AND attname = {literal(self.c)}"
            ),
        )

    def restore_fk(self, parent: _Side) -> list[Step]:
        """The child's foreign key on the parent's key again (after a half-done contract it may point
        at the parent's shadow)."""
        assert self.fk is not None
        fk = self.fk
        points_at_key = (
            "SELECT EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.confrelid "
            f"AND a.attnum = k.confkey[1] WHERE k.conname = {literal(fk.name)} AND k.conrelid = {literal(self.t)}::regclass "
            f"AND a.attname = {literal(parent.c)})"
        )
        sql = one_transaction(
            [
                f"ALTER TABLE {self.t} DROP CONSTRAINT IF EXISTS {q(fk.name)}",
                self.b.fk_sql(fk, fk.name, [self.c], [parent.c]),
            ]
        )
        return [
            Step(
                f"point {fk.name} at {parent.f.name}.{parent.c} again",
                "ddl",
                sql,
                lock="SHARE ROW EXCLUSIVE on both tables, brief (NOT VALID)",
                skip_if=points_at_key,
                squawk_ignore=(("ban-drop-constraint", "re-created at once, on the original key"),),
            ),
            self.b.validate(self.f.schema, self.f.name, fk.name),
        ]


class _Planner:
    def __init__(self, op: BigintKey, facts: TableFacts) -> None:
        self.op = op
        self.f = facts
        self.plan_id = op.id_for(facts)
        cols = _column_facts(facts)
        k = op.key(facts)
        pfacts = cols[(facts.schema, facts.name, k)]
        whole = TableFacts.from_json({**facts.to_json(), "column": pfacts.to_json()["column"]})
        self.parent = _Side(self, whole, pfacts.col, 0, None)
        self.children: list[_Side] = []
        for n, fk in enumerate(op.children(facts), 1):
            child = related_facts(facts, fk.schema, fk.table)
            cf = cols[(fk.schema, fk.table, fk.columns[0])]
            self.children.append(_Side(self, child, cf.col, n, fk))

    @property
    def sides(self) -> list[_Side]:
        return [*self.children, self.parent]

    def restore(self) -> list[Step]:
        """Swapped columns back to integer and the children's foreign keys on the parent's key
        again, from any point of the contract; each step skips when there is nothing to undo."""
        steps = [side.convert_back() for side in self.sides]
        for side in self.children:
            steps += side.restore_fk(self.parent)
            steps.append(side.b.drop_constraint(side.f.schema, side.f.name, side.fk_new, foreign_key=True))
        return steps

    def expand(self) -> Phase:
        up: list[Step] = []
        for side in [self.parent, *self.children]:
            up += side.expand()
        # After a contract that stopped between swaps (its revision never marked applied, so an
        # abort starts here), swapped columns go back first; on an expanded plan these all skip.
        down: list[Step] = [Builder.guard("expand-downgrade"), *self.restore()]
        for side in self.sides:
            down += [side.b.drop_index(n) for n in side.index_names.values()]
            down += (
                [side.b.drop_constraint(side.f.schema, side.f.name, side.nn)] if not side.col.nullable else []
            )
        for side in self.sides:
            down += side.expand_down()
        return Phase(
            "expand",
            f"Add bigint shadow columns beside {self.parent.c} of {self.parent.t} and the {len(self.children)} column(s) "
            "referencing it, each kept in step by a trigger.",
            tuple(up),
            tuple(down),
            before="Nothing: old code keeps working.",
            after="New code that maps the key and the referencing columns as bigint may deploy once the backfill has run.",
            rollback="Downgrade this revision: drops the shadows, triggers and functions.",
        )

    def backfill(self) -> Phase:
        return Phase(
            "backfill",
            "Copy each table's key (or referencing column) into its shadow, batched, table by table.",
            tuple(side.backfill_step() for side in self.sides),
            (),
            before="The expand revision of this plan.",
            after="Every row of every table has its shadow filled.",
            rollback="Nothing to undo.",
        )

    def contract(self) -> Phase:
        p = self.parent
        up: list[Step] = [Builder.guard("contract-guard")]
        for side in self.sides:
            up += side.contract_prepare()
        for side in self.children:
            up += side.add_fk(p)
        for side in self.children:
            up.append(side.child_swap())
        up.append(p.parent_swap())
        for side in self.sides:
            up += side.contract_cleanup()
        down: list[Step] = self.restore()
        for side in self.sides:
            down += [side.b.drop_index(n) for n in side.index_names.values() if n]
            if not side.col.nullable:
                down.append(side.b.drop_constraint(side.f.schema, side.f.name, side.nn))
        for side in self.sides:
            down.append(
                side.b.add_column(
                    side.shadow, BIGINT, f"re-add shadow {side.shadow} on {side.f.name}", copied=False
                )
            )
            down += side.b.trigger(side.function, side.trigger, side.function_sql())
        for side in self.sides:
            down.append(side.backfill_step(":rollback"))
        return Phase(
            "contract",
            "Build the parent's unique index and the foreign keys between the shadows, swap each child, then the "
            "parent (primary key USING INDEX), drop the old columns.",
            tuple(up),
            tuple(down),
            before="Every application instance that maps the key or a referencing column as integer must be gone (the guard checks).",
            after="Only code that maps them as bigint.",
            rollback=(
                "Downgrade this contract revision: converts the columns back to integer (a rewrite; fails once a "
                "value past 2^31-1 exists) and rebuilds the expand's shadows, filled again."
            ),
        )

    def plan(self) -> Plan:
        p = self.parent
        key = p.table_key
        breaks = tuple(
            {"table": s.table_key, "column": s.c, "kind": "retype", "old_type": INTEGER, "new_type": BIGINT}
            for s in self.sides
        )
        touches: dict[str, list[str]] = {}
        for s in self.sides:
            touches.setdefault(s.table_key, []).extend([s.c, s.shadow])
        creates: list[str] = []
        for s in self.sides:
            creates += [s.function, s.trigger, *s.index_names.values()]
            if s.fk:
                creates.append(s.fk_new)
        spec = {
            "operation": self.op.kind,
            "schema": self.f.schema,
            "table": self.f.name,
            "column": p.c,
            "type": BIGINT,
            "facts": self.f.to_json(),
            # One backfill per child table, each named by its step (runtime._backfill).
            "backfills": [s.spec() for s in self.children],
            "rollback_backfills": [s.spec(":rollback") for s in self.children],
            # The table each swap step waits on (live instances that map it pause prepared statements).
            "swap_tables": {
                **{s.child_swap().name: s.table_key for s in self.children},
                **{s.convert_back().name: s.table_key for s in self.sides},
                p.parent_swap().name: key,
            },
        }
        return Plan(
            plan_id=self.plan_id,
            operation=self.op.kind,
            schema=self.f.schema,
            table=self.f.name,
            title=f"make {p.t}.{q(p.c)} and {len(self.children)} referencing column(s) bigint",
            phases=(self.expand(), self.backfill(), self.contract()),
            touches=touches,
            creates=tuple(creates),
            breaks=breaks,
            spec=spec,
            backfill=p.spec(),
            reverse_backfill=p.spec(":rollback"),
            notes=(
                "the key and the referencing columns change their result type under the same names, which breaks "
                "statements running code prepared before (psycopg prepares after 5 executions): each swap waits until "
                "every live instance that maps its table confirmed, from its LiveReporter, that its engine stopped "
                "preparing (docs/operations/bigint-key.md)",
            ),
        )
