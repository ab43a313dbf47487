"""add-column: a new column that old code, which does not know it, never notices.

Pure: facts in, a :class:`Plan` out. Old code keeps inserting rows without the column,
so whatever the column needs from an insert must come from its default, and nothing may
rewrite the table under ACCESS EXCLUSIVE on the way. PostgreSQL (11+) adds a column
without touching a row when the value existing rows get is not volatile: it computes it
once and keeps it in the catalog (``attmissingval``), NOT NULL included (nothing to scan:
the stored value is not NULL). A volatile value (``gen_random_uuid()``,
``clock_timestamp()``), a value computed from other columns, or a type that is a domain
with constraints makes it rewrite the whole table instead. So the plan has one of two
shapes, decided here from the value existing rows get (``--fill``, else ``--default``):

* **catalog only** (no such value, or a non-volatile one): one ``ALTER TABLE``. A
  ``--fill`` that differs from ``--default`` rides in the same statement: the column is
  added with the fill as its default (existing rows get it) and, in the same statement,
  given ``--default`` for rows inserted from then on (``SET DEFAULT`` never rewrites).
* **backfilled** (volatile, or reading other columns): the column is added nullable
  with ``--default`` for new rows in one statement (so no insert lands between the two
  without it), existing rows are filled in key-range batches, and ``--not-null`` becomes
  a contract: a ``NOT VALID`` check, validated (no long lock), then ``SET NOT NULL``
  without a scan. The check cannot come earlier: a ``NOT VALID`` check is enforced on
  every row an UPDATE writes, and old code updates rows the backfill has not reached.

Volatility is decided here, without the server: the expression is read with
PostgreSQL's own parser (pglast) and is non-volatile only when every function in it is
on :data:`NON_VOLATILE_FUNCTIONS` (built-ins that are immutable or stable; the test suite
checks the list against ``pg_proc.provolatile``) and every operator and node is a plain
one. Anything else (user functions, unknown built-ins) counts as volatile. Misjudging in
that direction costs a backfill, never a rewrite; the other direction, and what only the
server knows (whether TYPE exists, whether it is a domain with constraints), is caught by
the expand's first step, a probe that repeats the ``ADD COLUMN`` on a one-row temporary
table and refuses, with nothing changed, when PostgreSQL rewrote that table or rejected
the type, the default or the fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pglast import ast, parse_sql
from pglast.enums.parsenodes import A_Expr_Kind
from pglast.parser import ParseError
from pglast.stream import RawStream

from ...errors import BadInput
from ...sql.expressions import is_null, one_line, single, walk
from ...sql.quoting import literal, q, qualified
from .. import checks, names
from ..blocks import Builder
from ..facts import TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param

#: Built-in functions that are immutable or stable in every overload (``pg_proc.provolatile``
#: 'i' or 's'; tests/test_add_column_live.py checks each against the server). A stable one
#: such as ``now()`` is evaluated once by the ALTER: every existing row gets that one value,
#: as PostgreSQL defines it.
_NON_VOLATILE = (
    # time of the transaction or statement, settings and identity (stable)
    "now transaction_timestamp statement_timestamp current_setting current_database current_schema "
    "current_user session_user current_role user current_catalog current_date current_time "
    "current_timestamp localtime localtimestamp "
    # text
    "lower upper initcap btrim ltrim rtrim concat concat_ws format length char_length octet_length "
    "substr substring replace left right lpad rpad repeat reverse md5 sha256 encode decode to_char "
    "to_hex split_part translate quote_ident quote_literal "
    # dates and numbers
    "to_date to_timestamp to_number date_trunc date_part extract make_date make_time make_timestamp "
    "make_timestamptz make_interval justify_interval timezone age abs round trunc floor ceil ceiling "
    "mod power sqrt nullif "
    # json, arrays, ranges
    "jsonb_build_object json_build_object jsonb_build_array json_build_array to_jsonb to_json "
    "array_fill cardinality int4range int8range numrange daterange tsrange tstzrange"
)
NON_VOLATILE_FUNCTIONS = frozenset(_NON_VOLATILE.split())

#: Operators of the built-in types (immutable); a user-defined operator may be anything.
PLAIN_OPERATORS = frozenset(
    {"+", "-", "*", "/", "%", "^", "||", "=", "<>", "!=", "<", ">", "<=", ">=", "~~", "!~~", "@", "|/"}
)

#: Expression nodes that compute nothing of their own beyond what their children do.
_PLAIN_NODES: tuple[type[ast.Node], ...] = (
    ast.A_Const,
    ast.TypeCast,
    ast.TypeName,
    ast.String,
    ast.Integer,
    ast.Float,
    ast.Boolean,
    ast.BitString,
    ast.SQLValueFunction,
    ast.A_ArrayExpr,
    ast.BoolExpr,
    ast.NullTest,
    ast.BooleanTest,
    ast.CaseExpr,
    ast.CaseWhen,
    ast.CoalesceExpr,
    ast.MinMaxExpr,
    ast.CollateClause,
    ast.RowExpr,
    ast.ColumnRef,
    ast.A_Indirection,
    ast.A_Indices,
    ast.NamedArgExpr,
    ast.FuncCall,
    ast.A_Expr,
)

#: ``serial`` is not a type: it adds a sequence and a nextval() default, which rewrites.
_SERIALS = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})

#: squawk's rules about the choice of type: the plan was asked for this type, so the
#: offline script says so instead of failing review on the user's own decision.
_TYPE_RULES = {
    "int4": "prefer-bigint-over-int",
    "int2": "prefer-bigint-over-smallint",
    "timestamp": "prefer-timestamp-tz",
    "varchar": "prefer-text-field",
    "bpchar": "ban-char-field",
}

#: Aggregates that look like plain calls (``max(x)``): no meaning for one row.
_AGGREGATES = frozenset(
    {"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "bool_and", "bool_or", "every"}
    | {"json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "bit_and", "bit_or", "xmlagg"}
)

#: The dollar-quote tag of the offline backfill procedure, which embeds the fill.
_PROCEDURE_TAG = "$ecm$"


# -- reading TYPE, --default and --fill ------------------------------------------------------------


@dataclass(frozen=True)
class ColumnType:
    """TYPE as PostgreSQL's parser read it, printed back (so what runs is what was checked)."""

    text: str
    sql: str
    name: str  # the type's own name, without schema, as the parser knows it (int4, varchar, …)

    @property
    def squawk_ignore(self) -> tuple[tuple[str, str], ...]:
        rule = _TYPE_RULES.get(self.name)
        return ((rule, f"the type the plan was asked for ({self.sql})"),) if rule else ()


def parse_type(text: str) -> ColumnType:
    """TYPE alone, compared as a tree with ``CAST(NULL AS …)`` carrying it, so nothing can
    ride along (a second statement, a constraint, a comment hiding a parenthesis)."""
    shown = one_line(text)
    if not shown:
        raise BadInput('TYPE is empty: give a type, e.g. text or "varchar(20)"')
    wrong = BadInput(
        f"TYPE {shown!r} is not one PostgreSQL type name (quote it in the shell as one argument, "
        'e.g. "varchar(20)" or "numeric(10,2)")'
    )
    try:
        statements = parse_sql(f"SELECT CAST(NULL AS {text})")
    except ParseError:
        raise wrong from None
    statement = statements[0].stmt if len(statements) == 1 else None
    targets: tuple[Any, ...] = getattr(statement, "targetList", None) or ()
    cast = targets[0].val if len(targets) == 1 and targets[0].name is None else None
    if not isinstance(statement, ast.SelectStmt) or not isinstance(cast, ast.TypeCast):
        raise wrong
    expected: Any = parse_sql("SELECT CAST(NULL AS text)")[0].stmt
    expected.targetList[0].val.typeName = cast.typeName
    if statement != expected:
        raise wrong
    tn: Any = cast.typeName
    if tn.setof or tn.pct_type:
        raise wrong
    name = str(tn.names[-1].sval)
    if name.lower() in _SERIALS and len(tn.names) == 1 and not tn.arrayBounds:
        raise BadInput(
            f"TYPE {shown!r} is not a type: it adds a sequence and a nextval() default, and a volatile "
            "default rewrites the table; add bigint with --default \"nextval('a_sequence')\" "
            "(existing rows are backfilled), or an identity column by hand"
        )
    sql = str(RawStream()(tn))
    printed: Any = parse_sql(f"SELECT CAST(NULL AS {sql})")[0].stmt
    again = printed.targetList[0].val.typeName
    if again != tn:
        raise BadInput(f"TYPE {shown!r} does not survive printing as {sql!r}")
    return ColumnType(text, sql, name)


@dataclass(frozen=True)
class Expression:
    """A checked ``--default`` or ``--fill``: one SQL expression, printed back by pglast."""

    text: str  # as the user wrote it
    sql: str  # as printed: what runs is what was checked
    null: bool  # the NULL constant (possibly cast)
    volatile_part: str | None  # what makes it count as volatile (None: it is not volatile)
    reads: tuple[str, ...] = ()  # columns of the row it reads (--fill only)
    compound: bool = False  # not a constant, cast or function call: needs parentheses after DEFAULT
    calls: bool = False  # calls a function (now(), CURRENT_DATE): evaluated when it is stored

    @property
    def catalog_only(self) -> bool:
        """Whether PostgreSQL can store it once for every existing row (no rewrite)."""
        return self.volatile_part is None and not self.reads

    @property
    def clause(self) -> str:
        """For ``DEFAULT …``, whose grammar is narrower than anywhere else (b_expr); squawk
        also reads a bare constant or call there better than a parenthesized one."""
        return f"({self.sql})" if self.compound else self.sql

    @property
    def wrapped(self) -> str:
        return f"({self.sql})"


def _expression(text: str, option: str) -> ast.Node:
    return single(text, option)


def volatile_part(tree: ast.Node) -> str | None:
    """The first part of ``tree`` not known to be immutable or stable, or None.

    Unknown means volatile: the price of a wrong "volatile" is a backfill, the price of a
    wrong "not volatile" a rewrite under ACCESS EXCLUSIVE (which the expand's probe refuses).
    """
    for node in walk(tree):
        if not isinstance(node, _PLAIN_NODES):
            return type(node).__name__
        if isinstance(node, ast.FuncCall):
            funcname: tuple[Any, ...] = node.funcname or ()
            parts = [str(n.sval) for n in funcname]
            schema_ok = len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog")
            if not schema_ok or parts[-1] not in NON_VOLATILE_FUNCTIONS:
                return f"{'.'.join(parts)}()"
        if isinstance(node, ast.A_Expr) and node.kind in (
            A_Expr_Kind.AEXPR_OP,
            A_Expr_Kind.AEXPR_OP_ANY,
            A_Expr_Kind.AEXPR_OP_ALL,
        ):
            operator: tuple[Any, ...] = node.name or ()
            ops = [str(n.sval) for n in operator]
            if len(ops) != 1 or ops[0] not in PLAIN_OPERATORS:
                return f"operator {'.'.join(ops)}"
    return None


def parse_expression(
    text: str, option: str, column: str, facts: TableFacts | None = None, *, reads_allowed: bool
) -> Expression:
    """Check ``--default`` / ``--fill`` and classify it.

    Refused, each with its reason: subqueries, parameters, aggregates and window functions
    (no meaning for one row), qualified or whole-row references, and, in a default, any
    column reference (PostgreSQL forbids them there). A fill may read other columns of the
    row by their bare names; with facts, each must exist.
    """
    shown = one_line(text)
    tree = _expression(text, option)
    reads: list[str] = []
    for node in walk(tree):
        if isinstance(node, ast.SubLink):
            raise BadInput(
                f"{option} {shown!r} contains a subquery; use a plain expression (functions are fine)"
            )
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
            if not reads_allowed:
                raise BadInput(
                    f"{option} {shown!r} reads a column; a default cannot (PostgreSQL forbids it): give "
                    "existing rows a value computed from other columns with --fill"
                )
            fields = node.fields or ()
            if len(fields) != 1 or not isinstance(fields[0], ast.String):
                raise BadInput(
                    f"{option} {shown!r}: refer to other columns of the row by their bare names "
                    "(qty, not t.qty or t.*)"
                )
            name = str(fields[0].sval)
            if name == column:
                raise BadInput(
                    f"{option} {shown!r} reads column {q(column)} itself, which does not exist yet"
                )
            if facts is not None and facts.columns and name not in facts.columns:
                raise BadInput(
                    f"{option} {shown!r} reads column {q(name)}, which does not exist in table "
                    f"{qualified(facts.schema, facts.name)} (columns: {', '.join(q(c) for c in facts.columns)})"
                )
            if name not in reads:
                reads.append(name)
    sql = str(RawStream()(tree))
    try:
        again = _expression(sql, option)
    except BadInput:
        again = None
    if again != tree:
        raise BadInput(f"{option} {shown!r} does not survive printing as {sql!r}")
    if _PROCEDURE_TAG in sql:
        raise BadInput(
            f"{option} {shown!r} contains {_PROCEDURE_TAG}, the dollar-quote tag of ecm's offline backfill "
            "procedure; write that text another way (e.g. '$' || 'ecm$')"
        )
    compound = not isinstance(tree, ast.A_Const | ast.FuncCall | ast.TypeCast | ast.SQLValueFunction)
    calls = any(isinstance(n, ast.FuncCall | ast.SQLValueFunction) for n in walk(tree))
    return Expression(text, sql, is_null(tree), volatile_part(tree), tuple(reads), compound, calls)


def _dollar_quoted(body: str, tag: str = "ecm_probe") -> str:
    """``body`` in dollar quotes whose tag it does not contain."""
    chosen, n = tag, 0
    while f"${chosen}$" in body:
        n += 1
        chosen = f"{tag}{n}"
    return f"${chosen}$\n{body}\n${chosen}$"


# -- the operation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddColumn(Operation):
    """The operation's parameters (the facts come separately, from the catalog or MetaData)."""

    kind: ClassVar[str] = "add-column"
    summary: ClassVar[str] = (
        "Add a column with zero downtime: never a table rewrite; old code that does not know the column "
        "keeps inserting."
    )
    phases_help: ClassVar[str] = (
        "When the value existing rows get (--fill, else --default) is absent or not volatile: one "
        "catalog-only ALTER TABLE (expand), NOT NULL included. When it is volatile (gen_random_uuid(), "
        "clock_timestamp(), any function not known to be stable) or reads other columns: expand adds the "
        "column nullable with --default for new rows; backfill fills existing rows in batches; contract "
        "(--not-null only, once no live code maps the column as nullable) adds CHECK (col IS NOT NULL) NOT "
        "VALID, validates it and sets NOT NULL without a scan. The expand first checks, on a temporary "
        "table, that PostgreSQL would not rewrite (a domain type with constraints does) and accepts the "
        "type, default and fill."
    )

    new: str = param("Name of the column to add.", metavar="COLUMN")
    type_sql: str = param(
        'Its type, as one argument (quote it in the shell: "varchar(20)", "numeric(10,2)", "text[]").',
        metavar="TYPE",
    )
    default: str | None = param(
        "SQL default for rows inserted from now on (and for existing rows unless --fill is given), "
        'e.g. "0", "now()", "gen_random_uuid()".',
        "--default",
        default=None,
        metavar="SQL",
    )
    not_null: bool = param(
        "Make the column NOT NULL (needs --default: old code that does not know the column keeps inserting).",
        "--not-null",
        default=False,
    )
    fill: str | None = param(
        "SQL value for the rows that exist already, when it differs from --default; may read other "
        "columns of the row by their bare names (e.g. \"'legacy-' || id\"). Stored once when it is "
        "constant, else backfilled in batches.",
        "--fill",
        default=None,
        metavar="SQL",
    )

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.new, "column")
        parse_type(self.type_sql)
        default = self.default_expression()
        fill = self.fill_expression()
        if self.not_null:
            if default is None:
                raise BadInput(
                    "--not-null needs --default: old code that does not know the column keeps inserting "
                    "rows without it"
                )
            if default.null:
                raise BadInput(
                    f"--default {one_line(default.text)!r} is NULL: with --not-null every insert that "
                    "leaves the column out would fail"
                )
            if fill is not None and fill.null:
                raise BadInput(
                    f"--fill {one_line(fill.text)!r} is NULL: existing rows would stay NULL, which "
                    "--not-null forbids"
                )

    def default_expression(self) -> Expression | None:
        if self.default is None:
            return None
        return parse_expression(self.default, "--default", self.new, reads_allowed=False)

    def fill_expression(self, facts: TableFacts | None = None) -> Expression | None:
        if self.fill is None:
            return None
        return parse_expression(self.fill, "--fill", self.new, facts, reads_allowed=True)

    def column(self) -> None:
        return None

    def id_parts(self) -> tuple[str, ...]:
        return (self.new,)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        self.require_new_column(facts, self.new)
        self.fill_expression(facts)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


class _Planner(Builder):
    def __init__(self, op: AddColumn, facts: TableFacts) -> None:
        plan_id = op.id_for(facts)
        super().__init__(facts, plan_id)
        self.op = op
        self.id = plan_id
        self.new = op.new
        self.c = q(op.new)
        self.type = parse_type(op.type_sql)
        self.default = op.default_expression()
        fill = op.fill_expression(facts)
        # A fill the default already gives is no fill: one value for old and new rows.
        self.fill = (
            None if fill is not None and self.default is not None and fill.sql == self.default.sql else fill
        )
        # What existing rows get: the fill when given, else what the default computes.
        self.existing = self.fill if self.fill is not None else self.default
        self.backfilled = (
            self.existing is not None and not self.existing.null and not self.existing.catalog_only
        )
        # Catalog only with a value: ADD COLUMN … DEFAULT <value for existing rows>.
        self.stored_default = not self.backfilled and self.existing is not None and not self.existing.null
        self.contract_needed = self.backfilled and op.not_null
        self.nn = names.not_null_check(plan_id)
        self.key = f"{self.s}.{self.table}"

    # -- SQL --------------------------------------------------------------------------------------
    def add_clauses(self, *, if_not_exists: bool = True) -> str:
        """The ADD COLUMN and what rides with it in the same statement (so no insert lands
        between them); the same text, without IF NOT EXISTS, runs on the probe table."""
        c = self.c
        add = f"ADD COLUMN {'IF NOT EXISTS ' if if_not_exists else ''}{c} {self.type.sql}"
        existing, default = self.existing, self.default
        if self.stored_default:
            assert existing is not None
            add += f" DEFAULT {existing.clause}" + (" NOT NULL" if self.op.not_null else "")
            if self.fill is None:
                return add
            # Existing rows keep the fill (attmissingval); new rows get --default, or nothing.
            new_rows = "NULL" if default is None or default.null else default.clause
            return f"{add}, ALTER COLUMN {c} SET DEFAULT {new_rows}"
        if default is not None and not default.null:
            add += f", ALTER COLUMN {c} SET DEFAULT {default.clause}"
        return add

    def probe(self) -> Step:
        """What only the server knows, asked of a one-row temporary table before the real ALTER."""
        probe = "pg_temp.ecm_add_column_probe"
        where = f"{self.table_sql}.{self.c}"
        rewrite = (
            f"adding column {where} {self.type.sql} would rewrite the whole table under ACCESS EXCLUSIVE "
            "(PostgreSQL rewrites when the type is a domain with constraints, or when the value for existing "
            "rows is volatile); nothing was changed. Add the column as the domain's base type with a CHECK "
            "constraint instead, or plan this change by hand"
        )
        fill_check = ""
        if self.backfilled:
            assert self.existing is not None
            # The backfill's own statement, on the probe table: names resolve against the table,
            # assignment casts and UPDATE's rules (no aggregates) apply, and no row is read.
            fill_check = (
                f"\n        UPDATE {probe} SET {self.c} = {self.existing.wrapped} "
                f"FROM {self.table_sql} WHERE false;"
            )
        clauses = self.add_clauses(if_not_exists=False)
        body = (
            "#variable_conflict use_column\n"
            "DECLARE\n"
            "    ecm_before oid;\n"
            "    ecm_after oid;\n"
            "BEGIN\n"
            "    BEGIN\n"
            "        CREATE TEMP TABLE ecm_add_column_probe () ON COMMIT DROP;\n"
            f"        INSERT INTO {probe} DEFAULT VALUES;\n"
            f"        ecm_before := pg_relation_filenode({literal(probe)});\n"
            f"        ALTER TABLE {probe} {clauses};\n"
            f"        ecm_after := pg_relation_filenode({literal(probe)});{fill_check}\n"
            "    EXCEPTION WHEN OTHERS THEN\n"
            "        RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = "
            f"{literal(f'cannot add column {where} {self.type.sql}: ')} || SQLERRM || "
            f"{literal(' (found on a temporary probe table; nothing was changed)')};\n"
            "    END;\n"
            "    IF ecm_after IS DISTINCT FROM ecm_before THEN\n"
            f"        RAISE EXCEPTION USING MESSAGE = {literal(rewrite)};\n"
            "    END IF;\n"
            "END"
        )
        return Step(
            f"probe column {self.new}",
            "ddl",
            f"DO {_dollar_quoted(body)}",
            lock="none on the table (a temporary probe table; ACCESS SHARE on the table for the fill)",
            skip_if=self.column_exists(self.new),
        )

    def add(self) -> Step:
        ignore = list(self.type.squawk_ignore)
        if self.stored_default:
            ignore.append(
                (
                    "adding-field-with-default",
                    "the value for existing rows is not volatile: PostgreSQL stores it once in the catalog, "
                    "no rewrite (measured; the probe step before this one refuses a rewrite)",
                )
            )
        if len(ignore) > 1:
            # squawk honours only the comment right above a statement: one comment, every rule.
            ignore = [(", ".join(r for r, _ in ignore), "; ".join(why for _, why in ignore))]
        return Step(
            f"add column {self.new}",
            "ddl",
            f"ALTER TABLE {self.table_sql} {self.add_clauses()}",
            lock="ACCESS EXCLUSIVE, brief (catalog only: no rewrite, no scan)",
            squawk_ignore=tuple(ignore),
        )

    # -- phases -----------------------------------------------------------------------------------
    def described(self) -> str:
        parts = [f"{self.c} {self.type.sql}"]
        if self.default is not None:
            parts.append(f"DEFAULT {self.default.clause}")
        if self.op.not_null:
            parts.append("NOT NULL")
        return " ".join(parts)

    def expand(self) -> Phase:
        existing = self.existing
        if self.backfilled:
            assert existing is not None
            summary = (
                f"Add {self.c} {self.type.sql} to {self.table_sql}, nullable"
                + (f", with DEFAULT {self.default.clause} for new rows" if self.default is not None else "")
                + f"; existing rows are filled with {existing.sql} by the backfill."
            )
            after = f"Code that reads {self.new} may deploy once the backfill has run."
        else:
            summary = f"Add {self.described()} to {self.table_sql}: catalog only, no rewrite."
            after = f"Code that maps {self.new} may deploy now."
        return Phase(
            "expand",
            summary,
            (self.probe(), self.add()),
            (
                self.guard("expand-downgrade"),
                self.drop_column(
                    self.new,
                    "rolling back the expand: the new column goes, and every value written to it with it",
                ),
            ),
            before="Nothing: old code does not know the column and keeps inserting without it.",
            after=after,
            rollback=(
                f"Downgrade this revision: drops {self.new}, and every value written to it is gone. "
                f"Refused while live instances map {self.new}."
            ),
        )

    def backfill_phase(self) -> Phase:
        assert self.existing is not None
        return Phase(
            "backfill",
            f"Give {self.new} the value {self.existing.sql} in every row that holds NULL (the rows that "
            "existed before the expand), in key-range batches.",
            (self.backfill(),),
            (),
            before="The expand revision of this plan.",
            after=f"Every row has {self.new}; code that reads it may deploy.",
            rollback=(
                f"Nothing to undo: the values are harmless (the expand's downgrade drops {self.new} with them)."
            ),
        )

    def contract(self) -> Phase:
        return Phase(
            "contract",
            f"Make {self.new} NOT NULL: a NOT VALID check, validated without a long lock, then SET NOT NULL "
            "without a scan.",
            (self.guard("contract-guard"), *self.not_null_via_check(self.new, self.nn)),
            (
                self.drop_constraint(self.s, self.table, self.nn),
                self.drop_not_null(
                    self.new,
                    reason=f"rolling back the contract: {self.new} is nullable again, as after the backfill "
                    "(its values stay)",
                ),
            ),
            before=(
                f"The backfill complete and verified, and no live instance that maps {self.new} as nullable "
                "(such code may write NULL, which fails from here on; the guard checks)."
            ),
            after=f"Code may rely on {self.new} being NOT NULL.",
            rollback=f"Downgrade this contract revision: {self.new} becomes nullable again; its values stay.",
        )

    def notes(self) -> tuple[str, ...]:
        existing = self.existing
        if existing is None or existing.null:
            return ()
        which = "--fill" if self.fill is not None else "--default"
        if self.backfilled:
            why = (
                f"it reads {', '.join(existing.reads)}"
                if existing.reads
                else f"{existing.volatile_part} is volatile or not known to be stable"
            )
            return (
                f"existing rows get {which} {existing.sql} from the backfill, in batches ({why}); "
                "the table is never rewritten",
            )
        if existing.calls:
            return (
                f"existing rows get {which} {existing.sql}, evaluated once by the ALTER and kept in the "
                "catalog (no rewrite): every existing row gets that one value",
            )
        return (f"existing rows get {which} {existing.sql}, kept in the catalog (no rewrite)",)

    def plan(self) -> Plan:
        phases: list[Phase] = [self.expand()]
        backfill: dict[str, Any] | None = None
        if self.backfilled:
            assert self.existing is not None
            phases.append(self.backfill_phase())
            backfill = self.backfill_spec(
                self.id,
                set_sql=f"{self.c} = {self.existing.wrapped}",
                pending_sql=f"{self.c} IS NULL",
            ).to_json()
        if self.contract_needed:
            phases.append(self.contract())
        reads = list(self.existing.reads) if self.backfilled and self.existing is not None else []
        return Plan(
            plan_id=self.id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=f"add column {self.table_sql}.{self.described()}",
            phases=tuple(phases),
            adds={self.key: [self.new]},
            touches={self.key: [self.new, *reads]},
            creates=(self.nn,) if self.contract_needed else (),
            breaks=({"table": self.key, "column": self.new, "kind": "not-null"},)
            if self.contract_needed
            else (),
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.table,
                "column": self.new,
                "type": self.type.sql,
                "default": self.default.sql if self.default is not None else None,
                "fill": self.fill.sql if self.fill is not None else None,
                "not_null": self.op.not_null,
                "shape": "backfilled" if self.backfilled else "catalog-only",
                "facts": self.f.to_json(),
            },
            backfill=backfill,
            notes=self.notes(),
        )
