"""set-not-null: make a nullable column NOT NULL without a scan under ACCESS EXCLUSIVE.

Pure: facts in, a :class:`Plan` out. The contract is what the operation is for: a
``CHECK (col IS NOT NULL) NOT VALID`` that is then validated under SHARE UPDATE
EXCLUSIVE (reads and writes go on) lets ``SET NOT NULL`` skip its own scan, so the
ACCESS EXCLUSIVE lock lasts milliseconds. Everything before it exists so that no
write old code makes is rejected on the way:

* **With** ``--fill SQL``: the expand adds a ``BEFORE INSERT OR UPDATE`` trigger that
  replaces NULL with the fill, so old code writing NULL keeps working while the backfill
  fills the rows written before; the contract can then validate.
* **Without** it, nothing can be done at expand: a ``NOT VALID`` check there would make
  old code's updates of rows that hold NULL fail (a NOT VALID check is enforced on every
  row an UPDATE writes). The backfill phase only proves there is no NULL (and fails, with
  the count and the first keys, while there is), and the contract proves it again before
  it adds the check, since old code may write NULL until it is gone.

The fill may read other columns of the row by their bare names: the backfill's UPDATE
reads them as they are, the trigger as ``NEW.col`` (rewritten with pglast, printed and
parsed back, so what runs is what was checked). Those columns are in ``touches``: a plan
that drops or renames one while this one is in flight would break the trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pglast import ast
from pglast.stream import RawStream

from ...errors import BadInput
from ...guard import NOT_NULL
from ...sql import trigger as trig
from ...sql.expressions import is_null, one_line, single, walk
from ...sql.quoting import literal, q, qualified
from .. import checks, names
from ..blocks import Builder
from ..facts import TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param

#: How many keys of NULL rows the backfill's refusal names.
SAMPLE_KEYS = 10


@dataclass(frozen=True)
class Fill:
    """A checked ``--fill``: one SQL expression, as the backfill and as the trigger run it."""

    text: str  # as the user wrote it
    update_sql: str  # bare column references: the backfill's UPDATE reads the row itself
    trigger_sql: str  # references as new.col: the trigger reads the row being written
    reads: tuple[str, ...] = ()  # other columns of the table it reads


@dataclass(frozen=True)
class SetNotNull(Operation):
    """The operation's parameters (the facts come separately, from the catalog or MetaData)."""

    kind: ClassVar[str] = "set-not-null"
    summary: ClassVar[str] = (
        "Make a nullable column NOT NULL with zero downtime: an optional fill trigger and backfill, "
        "then NOT NULL proven by a validated check (no scan under ACCESS EXCLUSIVE)."
    )
    phases_help: ClassVar[str] = (
        "With --fill: expand adds a BEFORE INSERT OR UPDATE trigger that replaces NULL with the fill (old "
        "code's NULL writes succeed; RETURNING shows the fill, an ORM object keeps None until refreshed); "
        "backfill fills existing NULLs in batches. Without --fill: nothing at expand; the backfill phase "
        "fails (exit 1, with the count and the first keys) while rows hold NULL. "
        "contract (after old code that maps the column as nullable is gone): CHECK (col IS NOT NULL) NOT "
        "VALID, VALIDATE (SHARE UPDATE EXCLUSIVE), SET NOT NULL without a scan, the check and the trigger "
        "dropped."
    )

    target: str = param("Column to make NOT NULL.", metavar="COLUMN")
    fill: str | None = param(
        "SQL expression that replaces NULL (existing rows and old code's writes), e.g. \"''\" or "
        "\"'n/a-' || id\"; other columns of the row by their bare names.",
        "--fill",
        default=None,
        metavar="SQL",
    )

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.target, "column")
        if self.fill is not None:
            parse_fill(self.fill, self.target)

    def column(self) -> str:
        return self.target

    def id_parts(self) -> tuple[str, ...]:
        return (self.target,)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        col = facts.col
        where = self.where(facts, col.name)
        if col.name in facts.primary_key:
            raise BadInput(f"column {where} is part of the primary key, which makes it NOT NULL already")
        if not col.nullable:
            raise BadInput(f"column {where} is already NOT NULL")
        if col.generated:
            raise BadInput(
                f"column {where} is a generated column; its expression decides its value: make the "
                "expression non-null instead"
            )
        if self.fill is not None:
            parse_fill(self.fill, self.target, facts)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


# -- the fill ---------------------------------------------------------------------------------


def _expression(text: str) -> ast.Node:
    return single(text, "--fill", example=" e.g. --fill \"''\"")


def _printed(node: ast.Node, shown: str) -> str:
    """The tree as SQL, parsed back and compared: a printer slip fails here, at plan time."""
    sql = str(RawStream()(node))
    try:
        again = _expression(sql)
    except BadInput:
        again = None
    if again != node:
        raise BadInput(f"--fill {shown!r} does not survive printing as {sql!r}")
    return sql


def parse_fill(text: str, column: str, facts: TableFacts | None = None) -> Fill:
    """Check ``--fill`` and derive what the backfill and the trigger run.

    Without facts (before the table is read) only the shape is checked; with them, every
    column it reads must be a column of the table. Refused, each with its reason: a NULL
    fill (it would fill nothing), a subquery (its column references could not be told from
    the row's, and it would run once per written row inside old code's writes), parameters,
    aggregates and window functions (no meaning for one row), whole-row and qualified
    references (the trigger sees the row as NEW, the backfill as the table), and the column
    itself (it is NULL wherever the fill is used).
    """
    shown = one_line(text)
    tree = _expression(text)
    if is_null(tree):
        raise BadInput(f"--fill {shown!r} is NULL: it would leave every NULL in place")
    reads: list[str] = []
    refs: list[ast.ColumnRef] = []
    for node in walk(tree):
        if isinstance(node, ast.SubLink):
            raise BadInput(
                f"--fill {shown!r} contains a subquery; use a plain expression (functions are fine)"
            )
        if isinstance(node, ast.ParamRef):
            raise BadInput(f"--fill {shown!r} contains a parameter; write the value itself")
        if isinstance(node, ast.FuncCall) and (
            node.over is not None or node.agg_star or node.agg_distinct or node.agg_order or node.agg_filter
        ):
            raise BadInput(f"--fill {shown!r} uses an aggregate or window function; the fill is per row")
        if isinstance(node, ast.ColumnRef):
            fields = node.fields or ()
            if len(fields) != 1 or not isinstance(fields[0], ast.String):
                raise BadInput(
                    f"--fill {shown!r}: refer to other columns of the row by their bare names "
                    "(qty, not t.qty or t.*)"
                )
            name = str(fields[0].sval)
            if name == column:
                raise BadInput(
                    f"--fill {shown!r} reads column {q(column)} itself, which is NULL wherever the fill is used"
                )
            if facts is not None and facts.columns and name not in facts.columns:
                raise BadInput(
                    f"--fill {shown!r} reads column {q(name)}, which does not exist in table "
                    f"{qualified(facts.schema, facts.name)} (columns: {', '.join(q(c) for c in facts.columns)})"
                )
            if name not in reads:
                reads.append(name)
            refs.append(node)
    update_sql = _printed(tree, shown)
    for ref in refs:
        ref.fields = (ast.String(sval="new"), *(ref.fields or ()))
    trigger_sql = _printed(tree, shown)
    return Fill(text, update_sql, trigger_sql, tuple(reads))


# -- SQL of the plan's own objects ------------------------------------------------------------


def dollar_quoted(body: str, tag: str = "ecm") -> str:
    """``body`` in dollar quotes whose tag it does not contain (names and the fill may hold
    ``$ecm$`` and would otherwise end the quoting early)."""
    chosen, n = tag, 0
    while f"${chosen}$" in body:
        n += 1
        chosen = f"{tag}{n}"
    return f"${chosen}$\n{body}\n${chosen}$"


def fill_function_sql(schema: str, function: str, column: str, fill: Fill) -> str:
    """Replaces NULL with the fill and does nothing else: it assigns only NEW's own column,
    so it composes with any other plan's BEFORE trigger on the table."""
    c = q(column)
    body = (
        "BEGIN\n"
        f"    IF NEW.{c} IS NULL THEN\n"
        f"        NEW.{c} := {fill.trigger_sql};\n"
        "    END IF;\n"
        "    RETURN NEW;\n"
        "END"
    )
    return (
        f"CREATE OR REPLACE FUNCTION {qualified(schema, function)}() RETURNS trigger\n"
        f"LANGUAGE plpgsql AS {dollar_quoted(body)}"
    )


def fill_trigger_sql(schema: str, table: str, trigger: str, function: str, column: str) -> str:
    """``WHEN (NEW.col IS NULL)``: evaluated in C, so writes that carry a value (new code's,
    and the backfill's own, which write the fill themselves) never call the function. That
    is also why it needs no ``ecm.backfill`` skip like the rename trigger's."""
    return (
        f"CREATE OR REPLACE TRIGGER {q(trigger)} BEFORE INSERT OR UPDATE ON {qualified(schema, table)}\n"
        f"FOR EACH ROW WHEN (NEW.{q(column)} IS NULL)\n"
        f"EXECUTE FUNCTION {qualified(schema, function)}()"
    )


class _Planner(Builder):
    def __init__(self, op: SetNotNull, facts: TableFacts) -> None:
        plan_id = op.id_for(facts)
        super().__init__(facts, plan_id)
        self.op = op
        self.id = plan_id
        self.column = op.target
        self.c = q(op.target)
        self.fill = parse_fill(op.fill, op.target, facts) if op.fill is not None else None
        self.function = names.fit(f"{names.PREFIX}_{plan_id}_fill", key=plan_id + ":fn")
        self.trigger_name = names.fit(f"{names.PREFIX}_{plan_id}_fill", key=plan_id + ":trg")
        self.check = names.not_null_check(plan_id)

    # -- steps ---------------------------------------------------------------------
    def check_fill(self, fill: Fill) -> Step:
        """The server parses and plans the fill as the backfill will run it (types, functions,
        columns, constant errors), before anything exists: plpgsql would only find out inside
        old code's first NULL write."""
        return Step(
            "check the fill",
            "sql",
            f"EXPLAIN (COSTS OFF) UPDATE {self.table_sql} SET {self.c} = {fill.update_sql} WHERE false",
            lock="ROW EXCLUSIVE, brief (parsed and planned, never executed)",
        )

    def fill_trigger(self, fill: Fill) -> list[Step]:
        return [
            Step(
                "create fill function",
                "ddl",
                fill_function_sql(self.s, self.function, self.column, fill),
                lock="none",
            ),
            Step(
                "create fill trigger",
                "ddl",
                fill_trigger_sql(self.s, self.table, self.trigger_name, self.function, self.column),
                lock="SHARE ROW EXCLUSIVE on the table, brief",
            ),
        ]

    def drop_fill_trigger(self) -> list[Step]:
        return [
            Step(
                "drop fill trigger",
                "ddl",
                trig.drop_trigger_sql(self.s, self.table, self.trigger_name),
                lock="ACCESS EXCLUSIVE, brief",
            ),
            Step(
                "drop fill function",
                "ddl",
                trig.drop_function_sql(self.s, self.function),
                lock="none",
                squawk_ignore=(("ban-drop-function", "the plan's own fill function, no longer needed"),),
            ),
        ]

    def key_text(self) -> tuple[str, str]:
        """(SQL naming a row's key as text, ORDER BY) for the refusal's sample keys."""
        key = self.f.primary_key or (self.f.unique_keys[0] if self.f.unique_keys else ())
        if not key:
            return "'ctid=' || ctid::text", "ctid"
        parts = [f"{literal(k + '=')} || {q(k)}::text" for k in key]
        text = parts[0] if len(parts) == 1 else "'(' || " + " || ', ' || ".join(parts) + " || ')'"
        return text, ", ".join(q(k) for k in key)

    def no_nulls(self, label: str, then: str) -> Step:
        """Fails, naming how many rows hold NULL and the first keys, while any does.

        A ``concurrent`` step: one read-only scan of the table (ACCESS SHARE, blocks nothing
        but ACCESS EXCLUSIVE), so it runs without the short-DDL statement_timeout, like the
        VALIDATE that will scan it again."""
        key, order = self.key_text()
        where = f"{self.c} IS NULL"
        shown = f"{self.s}.{self.table}"
        body = (
            "DECLARE\n"
            "    n bigint;\n"
            "    keys text;\n"
            "BEGIN\n"
            f"    SELECT count(*) INTO n FROM {self.table_sql} WHERE {where};\n"
            "    IF n > 0 THEN\n"
            f"        SELECT string_agg(k, ', ') INTO keys FROM (SELECT {key} AS k FROM {self.table_sql}\n"
            f"         WHERE {where} ORDER BY {order} LIMIT {SAMPLE_KEYS}) s;\n"
            # Concatenation, not format(): the step runner hands the SQL to the driver, which
            # would read a percent sign as a placeholder.
            "        RAISE EXCEPTION USING ERRCODE = 'not_null_violation',\n"
            f"            MESSAGE = 'ecm: ' || n || {literal(f' rows of {shown} hold NULL in {self.column} (first keys: ')}\n"
            f"                || keys || {literal('): ' + then)};\n"
            "    END IF;\n"
            "END"
        )
        return Step(
            label,
            "concurrent",
            f"DO {dollar_quoted(body)}",
            lock="ACCESS SHARE (reads only: one scan of the table, no timeout)",
        )

    def drop_not_null_if_set(self, reason: str) -> Step:
        """DROP NOT NULL only where it is set: the column was nullable when the plan was made."""
        return Step(
            f"drop NOT NULL of {self.column}",
            "ddl",
            f"ALTER TABLE {self.table_sql} ALTER COLUMN {self.c} DROP NOT NULL",
            lock="ACCESS EXCLUSIVE, brief (no scan)",
            skip_if=(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
                f"{literal(self.table_sql)}::regclass AND attname = {literal(self.column)} AND attnotnull)"
            ),
            squawk_ignore=(("ban-drop-not-null", reason),),
        )

    # -- phases ------------------------------------------------------------------
    def expand(self) -> Phase:
        up: list[Step] = []
        if self.fill is not None:
            up = [self.check_fill(self.fill), *self.fill_trigger(self.fill)]
        down: list[Step] = [
            # What an interrupted contract (never recorded as applied) may have left.
            self.drop_constraint(self.s, self.table, self.check),
            self.drop_not_null_if_set(
                "rolling back: the column was nullable before the plan; only an interrupted contract set it"
            ),
        ]
        if self.fill is not None:
            down += self.drop_fill_trigger()
        if self.fill is not None:
            summary = (
                f"Replace NULL written to {self.column} of {self.table_sql} with the fill, by a trigger."
            )
            before = "Nothing: old code keeps working; its NULL writes store the fill from now on."
            rollback = (
                "Downgrade this revision: drops the fill trigger and its function (values already filled "
                "stay). Also undoes what an interrupted contract left (the check, NOT NULL)."
            )
        else:
            summary = (
                f"Nothing to add for {self.column} of {self.table_sql}: without a fill, any constraint "
                "now would reject old code's NULL writes."
            )
            before = "Nothing."
            rollback = (
                "Downgrade this revision: undoes what an interrupted contract left (the check, NOT NULL)."
            )
        return Phase(
            "expand",
            summary,
            tuple(up),
            tuple(down),
            before=before,
            after=(
                f"New code that maps {self.column} NOT NULL (and never writes NULL) may deploy once the "
                "backfill phase has run."
            ),
            rollback=rollback,
        )

    def backfill_phase(self) -> Phase:
        if self.fill is not None:
            return Phase(
                "backfill",
                f"Fill {self.column} where rows written before the trigger hold NULL.",
                (self.backfill(),),
                (),
                before="The expand revision of this plan.",
                after=(
                    f"No row holds NULL in {self.column}; new code may deploy, and the contract may run once "
                    "old code is gone."
                ),
                rollback="Nothing to undo: the filled values stay (the expand's downgrade drops the trigger).",
            )
        return Phase(
            "backfill",
            f"Prove no row holds NULL in {self.column} (no --fill: nothing can fill them).",
            (
                self.no_nulls(
                    f"check no NULL in {self.column}",
                    "set them to a value (or plan again with --fill SQL), then run this phase again",
                ),
            ),
            (),
            before="The expand revision of this plan.",
            after=(
                f"New code that maps {self.column} NOT NULL may deploy. Old code may still write NULL "
                "until it is gone; the contract checks again."
            ),
            rollback="Nothing to undo: the check changed nothing.",
        )

    def contract(self) -> Phase:
        up: list[Step] = [self.guard("contract-guard")]
        if self.fill is None:
            # Old code could write NULL until the guard saw it gone: prove it again before the
            # check exists, so a refusal leaves nothing behind.
            up.append(
                self.no_nulls(
                    f"check no NULL in {self.column}",
                    "set them to a value, then run the contract again",
                )
            )
        up += self.not_null_via_check(self.column, self.check)
        if self.fill is not None:
            up += self.drop_fill_trigger()  # last: until NOT NULL holds, a straggler's NULL is filled
        down: list[Step] = []
        if self.fill is not None:
            down += self.fill_trigger(self.fill)  # before NULL is allowed again
        down += [
            self.drop_constraint(self.s, self.table, self.check),
            self.drop_not_null_if_set("rolling back the contract: the column was nullable before it"),
        ]
        return Phase(
            "contract",
            f"Make {self.column} of {self.table_sql} NOT NULL, proven by a validated check (no scan under "
            "ACCESS EXCLUSIVE)" + ("; drop the fill trigger." if self.fill is not None else "."),
            tuple(up),
            tuple(down),
            before=(
                f"Every application instance that maps {self.column} as nullable must be gone (the guard checks "
                "live instances)" + (", and the backfill complete and verified." if self.fill else ".")
            ),
            after=f"Only code that maps {self.column} NOT NULL.",
            rollback=(
                "Downgrade this contract revision: "
                + ("re-creates the fill trigger, then " if self.fill is not None else "")
                + f"drops NOT NULL of {self.column}."
            ),
        )

    # -- the plan ----------------------------------------------------------------
    def notes(self) -> tuple[str, ...]:
        if self.fill is None:
            return (
                "without --fill, old code may write NULL until it is gone: the backfill phase and the "
                "contract fail (exit 1, with the count and the first keys) while any row holds NULL",
            )
        notes = [
            "old code's NULL writes store the fill: RETURNING shows it, but an ORM object keeps None "
            "until it is refreshed",
        ]
        if self.fill.reads:
            notes.append(
                f"the fill reads {', '.join(self.fill.reads)}: the trigger takes the values from the row being "
                "written (a generated column is not computed yet there)"
            )
        return tuple(notes)

    def created(self) -> tuple[str, ...]:
        made = [self.check]
        if self.fill is not None:
            made = [self.function, self.trigger_name, *made]
        return tuple(dict.fromkeys(made))

    def plan(self) -> Plan:
        key = f"{self.s}.{self.table}"
        spec = None
        if self.fill is not None:
            null = f"{self.c} IS NULL"
            spec = self.backfill_spec(
                self.id, set_sql=f"{self.c} = {self.fill.update_sql}", pending_sql=null, mismatch_sql=null
            ).to_json()
        fill_text = f" (fill {one_line(self.fill.text)})" if self.fill is not None else ""
        return Plan(
            plan_id=self.id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=f"set {self.table_sql}.{self.c} NOT NULL{fill_text}",
            phases=(self.expand(), self.backfill_phase(), self.contract()),
            touches={key: [self.column, *(self.fill.reads if self.fill is not None else ())]},
            creates=self.created(),
            # A live instance mapping the column as nullable may write NULL, which fails once the
            # fill trigger is gone: the guard holds the contract while one reports.
            breaks=({"table": key, "column": self.column, "kind": NOT_NULL},),
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.table,
                "column": self.column,
                "fill": self.op.fill,
                "facts": self.f.to_json(),
            },
            backfill=spec,
            notes=self.notes(),
        )
