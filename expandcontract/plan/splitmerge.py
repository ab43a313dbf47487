"""What split-column and merge-columns share: columns computed from other columns, both ways.

Both operations are one shape seen from two ends: OLD columns (one for split-column, several
for merge-columns) and NEW columns (several, one), each NEW computed from the OLD ones by a
*forward* expression and each OLD recomputed from the NEW ones by a *reverse* expression.
Expressions come from the command line; they are read with PostgreSQL's parser (pglast),
may refer only to the other side's columns by their bare names, and are printed back so
what runs is what was checked. Inside the trigger and the round-trip query the references are
qualified on the tree (``new.first_name``), never by text substitution, so a column named
like a PL/pgSQL variable or like one of the plan's aliases cannot be misread.

The trigger is rename-column's truth table with sides instead of columns: a write that sets
only the old side fills the new, only the new fills the old, both (or an insert that gives
any new column) and the new side wins. An update that changes neither side brings the new
side in step, unless the row already is in step the other way (its old side is what the
reverse expressions make of its new side): a value new code wrote that does not round-trip
is kept until a writer changes a side, instead of being recomputed by any unrelated update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.stream import RawStream

from ..backfill.spec import BackfillSpec
from ..errors import BadInput
from ..sql import prechecks
from ..sql.expressions import one_line, single, walk
from ..sql.quoting import literal, q, qualified
from ..sql.rewrite import index_references_column, references_column
from . import checks, names
from .blocks import Builder
from .facts import TableFacts
from .model import Phase, Plan, Step

#: Aggregates that look like plain calls (``max(x)``): no meaning for one row.
_AGGREGATES = frozenset(
    {"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "bool_and", "bool_or", "every"}
    | {"json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "bit_and", "bit_or", "xmlagg"}
)
#: The dollar-quote tag of the trigger function and of the offline backfill procedure.
_TAG = "$ecm$"
#: Aliases of the round-trip query: the table's row, its forward values, the values back.
_ROW, _FWD, _BACK = "_ecm_row", "_ecm_new", "_ecm_back"


@dataclass(frozen=True)
class Column:
    """A column on either side: its name, its type (no collation), and the type as ADD COLUMN needs it."""

    name: str
    type_sql: str
    declared: str  # type plus COLLATE, for ADD COLUMN
    not_null: bool = False
    default: str | None = None


@dataclass(frozen=True)
class Computed:
    """One column's value computed from the other side: ``target`` = ``sql``."""

    target: Column
    text: str  # as the user wrote it
    sql: str  # as pglast printed it

    def qualified(self, prefix: str) -> str:
        """The expression with every column reference read from ``prefix`` (``new.x``)."""
        tree = parse_sql(f"SELECT {self.sql}")[0].stmt.targetList[0].val  # type: ignore[union-attr]
        for node in walk(tree):
            if isinstance(node, ast.ColumnRef):
                node.fields = (ast.String(sval=prefix), *(node.fields or ()))
        return str(RawStream()(tree))

    def cast(self, prefix: str | None = None) -> str:
        """As a value of the target's type, for comparisons (assignments cast by themselves)."""
        sql = self.qualified(prefix) if prefix else self.sql
        return f"CAST(({sql}) AS {self.target.type_sql})"


# -- reading the command line ------------------------------------------------------------------


def assignment(text: str, what: str, *, typed: bool) -> tuple[str, str | None, str]:
    """``NAME=SQL`` (``NAME:TYPE=SQL`` when ``typed``) as (name, type or None, SQL).

    The first ``=`` ends the name (SQL may contain more), so a column name cannot contain
    ``=``, nor ``:`` when a type may follow it."""
    left, sep, sql = text.partition("=")
    example = (
        "first_name:text=\"split_part(name, ' ', 1)\""
        if typed
        else "first_name=\"split_part(full_name, ' ', 1)\""
    )
    if not sep or not left:
        raise BadInput(f"{what} {one_line(text)!r} is not NAME=SQL (e.g. {example})")
    type_text: str | None = None
    if typed and ":" in left:
        left, _, type_text = left.partition(":")
    checks.identifier(left, what)
    return left, type_text, sql


def parse_type(text: str) -> str:
    """TYPE of a new column, printed back by pglast (add-column's reading of TYPE)."""
    from .ops.add_column import parse_type as read

    return read(text).sql


def expression(text: str, option: str, allowed: tuple[str, ...], side: str) -> str:
    """One SQL expression over ``allowed`` columns only, printed back; else BadInput (exit 2)."""
    shown = one_line(text)
    tree = single(text, option)
    for node in walk(tree):
        if isinstance(node, ast.SubLink):
            raise BadInput(f"{option} {shown!r} contains a subquery; use a plain expression over {side}")
        if isinstance(node, ast.ParamRef):
            raise BadInput(f"{option} {shown!r} contains a parameter; write the value itself")
        if isinstance(node, ast.FuncCall) and (
            node.over is not None
            or node.agg_star
            or node.agg_distinct
            or node.agg_order
            or node.agg_filter
            or str(node.funcname[-1].sval) in _AGGREGATES  # type: ignore[index]
        ):
            raise BadInput(f"{option} {shown!r} uses an aggregate or window function; the value is per row")
        if isinstance(node, ast.ColumnRef):
            fields: tuple[Any, ...] = node.fields or ()
            if len(fields) != 1 or not isinstance(fields[0], ast.String):
                raise BadInput(
                    f"{option} {shown!r}: refer to {side} by their bare names (name, not t.name or t.*)"
                )
            name = str(fields[0].sval)
            if name not in allowed:
                raise BadInput(
                    f"{option} {shown!r} reads column {q(name)}; it may read only {side} "
                    f"({', '.join(q(c) for c in allowed)})"
                )
    sql = str(RawStream()(tree))
    try:
        again: ast.Node | None = single(sql, option)
    except BadInput:
        again = None
    if again != tree:
        raise BadInput(f"{option} {shown!r} does not survive printing as {sql!r}")
    if _TAG in sql:
        raise BadInput(
            f"{option} {shown!r} contains {_TAG}, the dollar-quote tag of ecm's trigger; write it another way"
        )
    return sql


def old_columns(facts: TableFacts, wanted: tuple[str, ...]) -> tuple[Column, ...]:
    """The existing columns the plan retires, refused (exit 2) when dropping them online is not
    something this plan can undo: keys, identity and generated columns, and anything built
    on them (indexes, constraints, views, policies), which would have to be carried too."""
    table = qualified(facts.schema, facts.name)
    rows = {str(c["name"]): c for c in facts.extra.get("table_columns") or ()}
    if not rows:
        raise BadInput(
            f"the columns of {table} must be read from the database (--from-metadata is not supported here)"
        )
    out = []
    for name in wanted:
        where = f"{table}.{q(name)}"
        c = rows.get(name)
        if c is None:
            raise BadInput(
                f"column {q(name)} does not exist in table {table} (columns: {', '.join(q(x) for x in rows)})"
            )
        if name in facts.primary_key:
            raise BadInput(f"column {where} is part of the primary key; it cannot be dropped online")
        if c.get("identity") or c.get("generated"):
            raise BadInput(
                f"column {where} is an identity or generated column; its values cannot be dual-written"
            )
        _refuse_dependents(facts, name, where)
        collate = f" COLLATE {c['collation']}" if c.get("collation") else ""
        out.append(
            Column(
                name, str(c["type_sql"]), f"{c['type_sql']}{collate}", bool(c["not_null"]), c.get("default")
            )
        )
    return tuple(out)


def _refuse_dependents(facts: TableFacts, name: str, where: str) -> None:
    drop = (
        "drop it first (and re-create it on the new columns after the contract), or plan the change by hand"
    )
    for ix in facts.indexes:
        if index_references_column(ix.definition, name):
            raise BadInput(f"column {where} is used by index {q(ix.name)}; {drop}")
    for fk in facts.foreign_keys:
        if name in fk.columns:
            raise BadInput(f"column {where} is part of foreign key {q(fk.name)}; {drop}")
    for fk in facts.referenced_by:
        if name in fk.ref_columns:
            raise BadInput(
                f"column {where} is referenced by foreign key {q(fk.name)} of {q(fk.table)}; {drop}"
            )
    for chk in facts.checks:
        if references_column(chk.expression, name):
            raise BadInput(f"column {where} is used by check constraint {q(chk.name)}; {drop}")
    if facts.dependent_views:
        raise BadInput(
            f"table {where.rpartition('.')[0]} is used by view(s) {', '.join(facts.dependent_views)}; {drop}"
        )
    if facts.policies:
        raise BadInput(
            f"table {where.rpartition('.')[0]} has row-level security policies {', '.join(facts.policies)}; {drop}"
        )


def new_column(facts: TableFacts, name: str, type_text: str | None, taken: set[str]) -> Column:
    if name in facts.columns:
        raise BadInput(
            f"column {q(name)} already exists in table {qualified(facts.schema, facts.name)}; pick another name"
        )
    if name in taken:
        raise BadInput(f"column {q(name)} is named twice")
    taken.add(name)
    type_sql = parse_type(type_text) if type_text is not None else "text"
    return Column(name, type_sql, type_sql)


# -- the plan ------------------------------------------------------------------------------------


class Planner(Builder):
    """Steps for OLD columns retired in favour of NEW ones computed from them."""

    def __init__(
        self,
        facts: TableFacts,
        plan_id: str,
        *,
        operation: str,
        title: str,
        forward: tuple[Computed, ...],
        reverse: tuple[Computed, ...],
        spec: dict[str, Any],
    ) -> None:
        super().__init__(facts, plan_id)
        self.operation = operation
        self.title = title
        self.forward = forward
        self.reverse = reverse
        self.old = tuple(c.target for c in reverse)
        self.new = tuple(c.target for c in forward)
        self.spec = spec
        self.function = names.function_name(plan_id)
        self.trigger_name = names.trigger_name(plan_id)
        self.nn = {
            c.name: names.fit(f"{names.PREFIX}_{plan_id}_nn_{c.name}", key=f"{plan_id}:nn:{c.name}")
            for c in self.old
            if c.not_null
        }

    # -- SQL ---------------------------------------------------------------------------------
    @staticmethod
    def row(columns: tuple[Column, ...], prefix: str | None = None) -> str:
        p = f"{prefix}." if prefix else ""
        return f"ROW({', '.join(p + q(c.name) for c in columns)})"

    def function_sql(self) -> str:
        def assign(computed: tuple[Computed, ...], pad: str) -> str:
            return "\n".join(f"{pad}NEW.{q(c.target.name)} := {c.qualified('new')};" for c in computed)

        all_null = " AND ".join(f"NEW.{q(c.name)} IS NULL" for c in self.new)
        recomputed = ", ".join(c.cast("new") for c in self.reverse)
        return f"""CREATE OR REPLACE FUNCTION {qualified(self.s, self.function)}() RETURNS trigger
LANGUAGE plpgsql AS {_TAG}
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF {all_null} THEN
{assign(self.forward, " " * 12)}
        ELSE
{assign(self.reverse, " " * 12)}
        END IF;
    ELSIF {self.row(self.new, "NEW")} IS DISTINCT FROM {self.row(self.new, "OLD")} THEN
{assign(self.reverse, " " * 8)}
    ELSIF {self.row(self.old, "NEW")} IS DISTINCT FROM {self.row(self.old, "OLD")}
        OR ({all_null}) OR {self.row(self.old, "NEW")} IS DISTINCT FROM ROW({recomputed}) THEN
{assign(self.forward, " " * 8)}
    END IF;
    RETURN NEW;
END
{_TAG}"""

    def round_trip(self) -> Step:
        """Existing rows whose old values do not come back through the new columns."""
        key = self.f.primary_key or (self.f.unique_keys[0] if self.f.unique_keys else ())
        sample = (
            " || ', ' || ".join(f"{literal(k + '=')} || {_ROW}.{q(k)}::text" for k in key)
            if key
            else f"'ctid=' || {_ROW}.ctid::text"
        )
        if len(self.old) == 1:
            have, back = f"{_ROW}.{q(self.old[0].name)}::text", f"{_BACK}.{q(self.old[0].name)}::text"
        else:
            have, back = f"{self.row(self.old, _ROW)}::text", f"{self.row(self.old, _BACK)}::text"
        sample += f" || ': ' || quote_nullable({have}) || ' comes back as ' || quote_nullable({back})"
        fwd = ", ".join(f"{c.cast(_ROW)} AS {q(c.target.name)}" for c in self.forward)
        rev = ", ".join(f"{c.cast(_FWD)} AS {q(c.target.name)}" for c in self.reverse)
        from_where = (
            f"FROM {self.table_sql} AS {_ROW} CROSS JOIN LATERAL (SELECT {fwd}) AS {_FWD} "
            f"CROSS JOIN LATERAL (SELECT {rev}) AS {_BACK} "
            f"WHERE {self.row(self.old, _ROW)} IS DISTINCT FROM {self.row(self.old, _BACK)}"
        )
        olds = ", ".join(c.name for c in self.old)
        news = ", ".join(c.name for c in self.new)
        return Step(
            f"rows whose {olds} would not come back from {news} (round trip)",
            "precheck",
            prechecks.violations(from_where, sample),
            lock="none (reads the table)",
        )

    def spec_for(self, plan_id: str, *, towards_new: bool) -> BackfillSpec:
        """Fill one side from the other where the row is in step neither way (a row the
        trigger brought in step from the other side, a newer write, is left alone)."""
        fill, back = (self.forward, self.reverse) if towards_new else (self.reverse, self.forward)
        filled = tuple(c.target for c in fill)
        source = tuple(c.target for c in back)
        set_sql = ", ".join(f"{q(c.target.name)} = {c.sql}" for c in fill)
        computed = f"ROW({', '.join(c.cast() for c in fill)})"
        recomputed = f"ROW({', '.join(c.cast() for c in back)})"
        never = " AND ".join(f"{q(c.name)} IS NULL" for c in filled)
        pending = (
            f"{self.row(filled)} IS DISTINCT FROM {computed} AND "
            f"({self.row(source)} IS DISTINCT FROM {recomputed} OR ({never}))"
        )
        return self.backfill_spec(
            plan_id,
            set_sql=set_sql,
            pending_sql=pending,
            mismatch_label="are in step neither way (no writer and no batch has computed one side from the other)",
        )

    # -- phases --------------------------------------------------------------------------------
    def expand(self) -> Phase:
        up: list[Step] = [self.round_trip()]
        up += [self.add_column(c.name, c.declared, f"add column {c.name}", copied=False) for c in self.new]
        up += self.trigger(self.function, self.trigger_name, self.function_sql())
        down: list[Step] = [self.guard("expand-downgrade")]
        down += self.drop_trigger(self.function, self.trigger_name)
        down += [
            self.drop_column(
                c.name, "rolling back expand: the column only held computed values", "ACCESS EXCLUSIVE, brief"
            )
            for c in self.new
        ]
        news = ", ".join(c.name for c in self.new)
        olds = ", ".join(c.name for c in self.old)
        return Phase(
            "expand",
            f"Add {news} beside {olds} on {self.table_sql}; one trigger keeps both sides in step.",
            tuple(up),
            tuple(down),
            before="Nothing: old code keeps working. The first step refuses when existing rows do not round-trip.",
            after=f"New code that reads and writes {news} may deploy once the backfill has run.",
            rollback=f"Downgrade this revision: drops {news} and the trigger. Refused while live instances map {news}.",
        )

    def backfill_phase(self) -> Phase:
        news = ", ".join(c.name for c in self.new)
        return Phase(
            "backfill",
            f"Compute {news} for rows written before the trigger existed.",
            (self.backfill(),),
            (),
            before="The expand revision of this plan.",
            after=f"Code that reads {news} sees every row; the contract may run once old code is gone.",
            rollback="Nothing to undo: expand's downgrade drops the new columns.",
        )

    def contract(self) -> Phase:
        olds = ", ".join(c.name for c in self.old)
        up: list[Step] = [self.guard("contract-guard")]
        for c in self.old:
            if c.not_null:
                # Once the trigger is gone nothing fills the old column on new code's inserts.
                up.append(
                    self.drop_not_null(c.name, reason="the old column loses NOT NULL only on its way out")
                )
        up += self.drop_trigger(self.function, self.trigger_name)
        up += [
            self.drop_column(c.name, "the contract's deliberate drop, guarded by live-code checks")
            for c in self.old
        ]
        down: list[Step] = [
            self.add_column(c.name, c.declared, f"re-add column {c.name}", copied=False) for c in self.old
        ]
        down += self.trigger(self.function, self.trigger_name, self.function_sql())
        down.append(self.backfill("reverse backfill"))
        for c in self.old:
            if c.not_null:
                down += self.not_null_via_check(c.name, self.nn[c.name])
            if c.default is not None:
                down.append(self.set_default(c.name, c.default, f"restore default of {c.name}"))
        return Phase(
            "contract",
            f"Drop {olds} from {self.table_sql} and the trigger; the new columns alone hold the data.",
            tuple(up),
            tuple(down),
            before=f"Every instance that maps {olds} must be gone (the guard checks), and the backfill verified.",
            after=f"Only code that uses {', '.join(c.name for c in self.new)}.",
            rollback=f"Downgrade this contract revision: re-creates {olds} with the trigger and recomputes them from the new columns.",
        )

    def plan(self) -> Plan:
        key = f"{self.s}.{self.table}"
        return Plan(
            plan_id=self.plan_id,
            operation=self.operation,
            schema=self.s,
            table=self.table,
            title=self.title,
            phases=(self.expand(), self.backfill_phase(), self.contract()),
            removes={key: [c.name for c in self.old]},
            adds={key: [c.name for c in self.new]},
            touches={key: [c.name for c in (*self.old, *self.new)]},
            creates=(self.function, self.trigger_name, *self.nn.values()),
            spec={**self.spec, "facts": self.f.to_json()},
            backfill=self.spec_for(self.plan_id, towards_new=True).to_json(),
            reverse_backfill=self.spec_for(self.plan_id + ":reverse", towards_new=False).to_json(),
            notes=(
                "Values drift when new code writes a value that does not round-trip: old code then reads "
                "what the reverse expressions make of it, and the trigger does not warn.",
            ),
        )
