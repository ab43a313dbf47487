"""drop-column: expand (make the column harmless to code that no longer maps it), contract (drop it).

Pure: facts in, a :class:`Plan` out.

Between expand and contract, old code still maps and writes the column while new code
inserts rows without it. The expand's whole job is that those inserts succeed: the
column keeps NOT NULL when every such insert gets a value anyway (its default, a domain
default, an identity or generation, or ``--fill``, which becomes its DEFAULT), and
loses NOT NULL otherwise. What dropping NOT NULL cannot make accept a NULL (a NOT NULL
domain, ``UNIQUE NULLS NOT DISTINCT``, a multi-column ``MATCH FULL`` foreign key) is
refused at planning time, with ``--fill`` as the way out.

The contract drops what hangs on the column in the order that keeps ACCESS EXCLUSIVE
shortest: indexes ``CONCURRENTLY`` (no exclusive lock at all), then the constraints
that take their own brief lock (a foreign key's also locks the referenced table, which
``DROP COLUMN`` would otherwise hold together with this one), then the column, which is
then a catalog change on this table alone.

The values cannot come back. The contract's downgrade re-creates the column (its type,
default, comment, grants, indexes and constraints where the rows allow) in the shape
the expand left it in, which is what ``ecm abort`` then undoes further; every row holds
NULL, or the default when NOT NULL has to be re-established.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from pglast import ast, parse_sql
from pglast.enums.parsenodes import A_Expr_Kind
from pglast.parser import ParseError

from ...errors import BadInput
from ...sql.expressions import walk
from ...sql.quoting import literal, q, qualified
from ...sql.rewrite import _expression_sql, _parse_expression, rewrite_index_definition
from .. import checks, names
from ..blocks import Builder
from ..facts import CheckFact, IndexFact, TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param

#: Functions that do not return NULL for a NULL argument: a check built on them may reject NULL.
_NULL_AWARE_FUNCTIONS = frozenset({"num_nulls", "num_nonnulls", "concat", "concat_ws", "format"})

REWRITE = "ACCESS EXCLUSIVE for a table rewrite (PostgreSQL computes every row)"


@dataclass(frozen=True)
class DropColumn(Operation):
    """The operation's parameters (the facts come separately, from the catalog or MetaData)."""

    kind: ClassVar[str] = "drop-column"
    summary: ClassVar[str] = (
        "Drop a column with zero downtime: make it harmless to code that no longer maps it, "
        "then drop it once no running code maps it."
    )
    phases_help: ClassVar[str] = (
        "expand: rows inserted without the column must succeed: with --fill SQL it becomes the column's "
        "default (NOT NULL kept); with a default it has, nothing changes; otherwise NOT NULL is dropped "
        "(old code may then read NULL in rows new code inserts). "
        "contract (after code that maps the column is gone): its indexes dropped CONCURRENTLY, its "
        "constraints and foreign keys dropped, then the column. The values are gone: the contract's "
        "downgrade re-creates the column without them."
    )

    column_name: str = param("Column to drop.", metavar="COLUMN")
    fill: str | None = param(
        "SQL expression that rows inserted without the column get (its DEFAULT until the contract), "
        "so NOT NULL is kept; e.g. 0, '' or gen_random_uuid().",
        "--fill",
        default=None,
        metavar="SQL",
    )

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.column_name, "column")
        if self.fill is not None:
            fill_expression(self.fill)

    def column(self) -> str:
        return self.column_name

    def id_parts(self) -> tuple[str, ...]:
        return (self.column_name,)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        refusal = _refusal(facts, self.fill)
        if refusal:
            raise BadInput(refusal)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


# -- reading --fill and check expressions ---------------------------------------------------


@dataclass(frozen=True)
class Fill:
    sql: str  # as pglast prints the parsed expression: what was read is what runs
    constant: bool  # no function call: every row would get the same value


def fill_expression(text: str) -> Fill:
    """``--fill`` as the column DEFAULT it becomes: one expression, no column, no sub-query."""
    if not text.strip():
        raise BadInput("--fill is empty; give an SQL expression (0, '', now(), …) or leave --fill out")
    try:
        tree = _parse_expression(text)
    except BadInput as exc:
        raise BadInput(f"--fill is not a single SQL expression: {exc}") from exc
    nodes = list(walk(tree))
    if any(isinstance(n, ast.ColumnRef) for n in nodes):
        raise BadInput(
            f"--fill {text!r} refers to a column; a DEFAULT cannot (write a constant or a function call, "
            "and quote strings: --fill \"'text'\")"
        )
    if any(isinstance(n, ast.SubLink) for n in nodes):
        raise BadInput(f"--fill {text!r} contains a sub-query; a DEFAULT cannot")
    if any(isinstance(n, ast.ParamRef) for n in nodes):
        raise BadInput(f"--fill {text!r} contains a parameter; give the value itself")
    core = tree.arg if isinstance(tree, ast.TypeCast) else tree
    if isinstance(core, ast.A_Const) and core.isnull:
        raise BadInput("--fill NULL fills nothing; leave --fill out to drop NOT NULL instead")
    constant = not any(isinstance(n, ast.FuncCall | ast.SQLValueFunction) for n in nodes)
    return Fill(_expression_sql(tree), constant)


def _referenced(tree: object) -> set[str]:
    found: set[str] = set()
    for n in walk(tree):
        if isinstance(n, ast.ColumnRef) and n.fields and isinstance(n.fields[-1], ast.String):
            found.add(str(n.fields[-1].sval))
        elif isinstance(n, ast.IndexElem) and n.name:
            found.add(str(n.name))
    return found


def _columns_in(expression: str) -> set[str]:
    return _referenced(_parse_expression(expression))


def _index_columns(ix: IndexFact) -> set[str]:
    """Every column an index reads: keys, expressions, INCLUDE and predicate."""
    try:
        return _referenced(parse_sql(ix.definition))
    except ParseError:
        return set(ix.columns)


def _null_aware(expression: str) -> bool:
    """Whether the check may be FALSE (not NULL) when the column is NULL, read from its shape.

    Most operators and functions return NULL for a NULL argument, and a CHECK accepts NULL;
    these constructs are the usual ways a check tells NULL apart.
    """
    for n in walk(_parse_expression(expression)):
        if isinstance(n, ast.NullTest | ast.BooleanTest | ast.CoalesceExpr | ast.MinMaxExpr | ast.CaseExpr):
            return True
        if isinstance(n, ast.A_Expr) and n.kind in (
            A_Expr_Kind.AEXPR_DISTINCT,
            A_Expr_Kind.AEXPR_NOT_DISTINCT,
            A_Expr_Kind.AEXPR_NULLIF,
        ):
            return True
        if isinstance(n, ast.FuncCall):
            name = n.funcname[-1].sval if n.funcname and isinstance(n.funcname[-1], ast.String) else None
            if str(name or "").lower() in _NULL_AWARE_FUNCTIONS:
                return True
    return False


def _is_not_null_check(check: CheckFact, column: str) -> bool:
    """``CHECK (column IS NOT NULL)``: NOT NULL by another name, treated like it."""
    return check.expression.strip("() ").lower() == f"{q(column)} is not null".lower()


def _nulls_not_distinct(ix: IndexFact) -> bool:
    try:
        statements = parse_sql(ix.definition)
    except ParseError:
        return "NULLS NOT DISTINCT" in ix.definition.upper()
    stmt = statements[0].stmt if statements else None
    return bool(getattr(stmt, "nulls_not_distinct", False))


# -- what the table makes impossible -----------------------------------------------------------


def _inserts_get(facts: TableFacts, fill: str | None) -> str | None:
    """What a row inserted without the column gets, in words; None when it would be NULL."""
    col = facts.col
    if col.generated:
        return "its generated value"
    if col.identity:
        return "its identity value"
    if fill is not None:
        return f"the fill {fill_expression(fill).sql}"
    if col.default is not None:
        return f"its default {col.default}"
    if col.domain_default is not None:
        return f"the default of its domain, {col.domain_default}"
    return None


def _refusal(facts: TableFacts, fill: str | None) -> str | None:
    """The first reason the column cannot be dropped online, as the one-line error."""
    col = facts.col
    where = Operation.where(facts, col.name)
    if col.name in facts.primary_key:
        return (
            f"column {where} is part of the primary key; dropping a key column is not supported "
            "(change the primary key first)"
        )
    incoming = [f"{fk.name} on {qualified(fk.schema, fk.table)}" for fk in facts.referenced_by]
    if incoming:
        return (
            f"column {where} is referenced by foreign key(s) {', '.join(incoming)}; they would have to be "
            "dropped first: drop them (or plan that change) before dropping the column"
        )
    if facts.dependent_views:
        return (
            f"column {where} is used by view(s) {', '.join(facts.dependent_views)}; change or drop them first"
        )
    if facts.policies:
        return (
            f"column {where} is used by row-level security policies {', '.join(facts.policies)}; "
            "change them first"
        )
    kinds: dict[str, list[str]] = {}
    for kind, name in facts.dependents:
        kinds.setdefault(kind, []).append(name)
    why = {
        "rule": ("used by rule(s)", "change or drop them first"),
        "trigger": ("used by trigger(s) (UPDATE OF or WHEN)", "change or drop them first"),
        "trigger function": (
            "read as NEW/OLD.column by trigger function(s)",
            "they would fail on every write once it is gone: change them first",
        ),
        "generated column": ("used by generated column(s)", "drop them or change their expression first"),
        "publication": (
            "in the column list of publication(s)",
            "take it out of the list first (ALTER PUBLICATION … SET TABLE …)",
        ),
        "object": ("needed by", "DROP COLUMN would fail: change or drop them first"),
    }
    for kind, (what, todo) in why.items():
        if kind in kinds:
            return f"column {where} is {what} {', '.join(kinds[kind])}; {todo}"
    if facts.replica_identity_index:
        return (
            f"column {where} is in index {facts.replica_identity_index}, the table's REPLICA IDENTITY; "
            "dropping it would leave logical replication without one: change the replica identity first"
        )
    if fill is not None:
        if col.generated or col.identity:
            what = "a generated" if col.generated else "an identity"
            return (
                f"column {where} is {what} column: its values are made for every insert already; "
                "leave --fill out"
            )
        shown = fill_expression(fill)
        if shown.constant:
            for ix in facts.indexes:
                if ix.unique and not ix.primary and not ix.partial and ix.columns == (col.name,):
                    return (
                        f"--fill {shown.sql} is the same value for every row, and column {where} has unique "
                        f"index {ix.name}: the second row new code inserts would be a duplicate; fill with "
                        "distinct values (gen_random_uuid(), nextval(…)) or leave --fill out"
                    )
    if _inserts_get(facts, fill) is None:
        # New code's inserts leave the column NULL: say what no dropped NOT NULL can fix.
        hint = "give --fill SQL (a value rows inserted without the column get)"
        if col.not_null_domain:
            return (
                f"column {where} is of domain {col.not_null_domain}, which is NOT NULL and has no default: "
                f"rows inserted without the column would fail even without the column's NOT NULL; {hint}"
            )
        for ix in facts.indexes:
            if ix.unique and col.name in ix.columns and _nulls_not_distinct(ix):
                return (
                    f"column {where} is in unique index {ix.name} (NULLS NOT DISTINCT): a second row "
                    f"inserted without the column would be a duplicate; {hint} with distinct values"
                )
        for fk in facts.foreign_keys:
            if fk.match_full and len(fk.columns) > 1:
                return (
                    f"column {where} is in foreign key {fk.name} (MATCH FULL) with "
                    f"{', '.join(c for c in fk.columns if c != col.name)}: a row with the column NULL and "
                    f"those set is rejected; {hint} that the foreign key accepts"
                )
    return None


def _any(*probes: str) -> str:
    """One skip_if query from several: true when any of them is."""
    return "SELECT " + " OR ".join(f"({p})" for p in probes)


# -- the plan --------------------------------------------------------------------------------


class _Planner(Builder):
    def __init__(self, op: DropColumn, facts: TableFacts) -> None:
        plan_id = op.id_for(facts)
        super().__init__(facts, plan_id)
        self.op = op
        self.col = facts.col
        self.name = self.col.name
        self.c = q(self.name)
        self.fill = fill_expression(op.fill) if op.fill is not None else None
        self.nn = names.not_null_check(plan_id)
        #: New code's inserts leave the column NULL: the expand drops NOT NULL.
        self.null_path = _inserts_get(facts, op.fill) is None
        self.nn_checks = [c for c in facts.checks if self.null_path and _is_not_null_check(c, self.name)]
        self.checks = [c for c in facts.checks if c not in self.nn_checks]
        self.multi_checks = [c for c in self.checks if _columns_in(c.expression) - {self.name}]
        self.indexes = [ix for ix in facts.indexes if not ix.primary]
        # The shape the expand leaves, which the contract's downgrade re-creates.
        own_default = None if self.col.generated else self.col.default
        self.default_after = self.fill.sql if self.fill else own_default
        self.refill = self.default_after or self.col.domain_default
        self.not_null_after = (
            not self.col.nullable and not self.null_path and not self.col.identity and not self.col.generated
        )

    # -- probes ------------------------------------------------------------------------
    def has_nulls(self) -> str:
        return f"SELECT EXISTS (SELECT 1 FROM {self.table_sql} WHERE {self.c} IS NULL)"

    def is_not_null(self) -> str:
        return (
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
            f"{literal(self.table_sql)}::regclass AND attname = {literal(self.name)} AND attnotnull)"
        )

    def check_state(self, name: str, validated: bool) -> str:
        return (
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = "
            f"{literal(name)} AND conrelid = {literal(self.table_sql)}::regclass AND "
            f"{'' if validated else 'NOT '}convalidated)"
        )

    def violated(self, expression: str) -> str:
        return f"SELECT EXISTS (SELECT 1 FROM {self.table_sql} WHERE NOT ({expression}))"

    def restore_check(self, name: str, expression: str, valid: bool, label: str) -> list[Step]:
        """A check put back only when every row passes it: the rows' values are gone (or new
        code left them NULL), and a NOT VALID check that rows fail would reject every later
        update of those rows while its validation could never succeed."""
        steps = [
            dataclasses.replace(
                self.add_check(name, expression, label),
                skip_if=_any(self.constraint_exists(self.s, self.table, name), self.violated(expression)),
            )
        ]
        if valid:
            steps.append(
                dataclasses.replace(
                    self.validate_here(name),
                    skip_if=f"SELECT NOT ({self.check_state(name, validated=False)})",
                )
            )
        return steps

    def restore_not_null(self) -> list[Step]:
        """NOT NULL back through a NOT VALID check and VALIDATE (no long scan under ACCESS
        EXCLUSIVE), each step skipped while rows hold NULL: rows new code inserted, or the
        values the contract dropped, leave the column nullable rather than the rollback stuck."""
        leftover = self.drop_constraint(self.s, self.table, self.nn)
        return [
            dataclasses.replace(leftover, name=f"drop {self.nn} left by an interrupted rollback, if any"),
            dataclasses.replace(
                self.add_not_null_check(self.name, self.nn),
                name=f"add NOT NULL check {self.nn} (NOT VALID; skipped while {self.name} holds NULL)",
                skip_if=_any(
                    self.is_not_null(), self.constraint_exists(self.s, self.table, self.nn), self.has_nulls()
                ),
            ),
            dataclasses.replace(
                self.validate_here(self.nn),
                skip_if=f"SELECT NOT ({self.check_state(self.nn, validated=False)})",
            ),
            dataclasses.replace(
                self.set_not_null(self.name),
                skip_if=f"SELECT NOT ({self.check_state(self.nn, validated=True)})",
            ),
            self.drop_constraint(self.s, self.table, self.nn),
        ]

    # -- phases ------------------------------------------------------------------------
    def expand(self) -> Phase:
        col = self.col
        up: list[Step] = []
        down: list[Step] = []
        gets = _inserts_get(self.f, self.op.fill)
        if self.fill is not None:
            up.append(self.set_default(self.name, self.fill.sql, f"set default of {self.name} to the fill"))
            if col.default is not None:
                down.append(self.set_default(self.name, col.default, f"restore default of {self.name}"))
            else:
                down.append(self.drop_default(self.name, f"drop the fill default of {self.name}"))
        if self.null_path and not col.nullable:
            up.append(
                self.drop_not_null(
                    self.name,
                    reason="the plan's point: code that no longer maps the column inserts rows without it",
                )
            )
            down = self.restore_not_null() + down
        for chk in self.nn_checks:
            up.append(
                dataclasses.replace(
                    self.drop_constraint(self.s, self.table, chk.name),
                    name=f"drop check {chk.name} (NOT NULL by another name)",
                )
            )
            down = (
                self.restore_check(
                    chk.name,
                    chk.expression,
                    chk.valid,
                    f"re-add check {chk.name} (NOT VALID; skipped while {self.name} holds NULL)",
                )
                + down
            )
        if self.fill is not None:
            summary = (
                f"Give {self.name} the default {self.fill.sql}, so rows inserted without it get a value."
            )
        elif up:
            summary = f"Drop NOT NULL of {self.name}, so rows can be inserted without it."
        else:
            summary = f"Nothing to change: rows inserted without {self.name} already get {gets or 'NULL'}."
        reads = self.fill.sql if self.fill else ("NULL" if gets is None else gets.split(" ", 1)[1])
        return Phase(
            "expand",
            summary,
            tuple(up),
            tuple(down),
            before=(
                f"Nothing: old code keeps working (it still writes {self.name}); run before deploying code "
                f"that no longer maps {self.name}."
            ),
            after=(
                f"Code that no longer maps {self.name} may deploy; old code may read {reads} in the rows "
                f"inserted without {self.name}."
            ),
            rollback=self._expand_rollback(),
        )

    def _expand_rollback(self) -> str:
        restores = self._restores()
        if not restores:
            return "Downgrade this revision: nothing to undo."
        text = f"Downgrade this revision: restores {' and '.join(restores)} as before"
        if self.null_path:
            text += (
                f", but only if no row holds NULL by then (rows inserted without {self.name} keep it "
                "nullable)"
            )
        return (
            text
            + f". Roll back code that no longer maps {self.name} first: the guard cannot see it (it maps "
            "nothing the rollback changes), and its inserts would fail again."
        )

    def _restores(self) -> list[str]:
        what = []
        if self.null_path and not self.col.nullable:
            what.append("NOT NULL")
        if self.nn_checks:
            what.append("the NOT NULL check" + ("s" if len(self.nn_checks) > 1 else ""))
        if self.fill is not None:
            what.append("the default")
        return what

    def contract(self) -> Phase:
        up: list[Step] = [self.guard("contract-guard")]
        # Indexes first, CONCURRENTLY: they leave no work to DROP COLUMN's ACCESS EXCLUSIVE.
        for ix in self.indexes:
            if not ix.constraint:
                up.append(self.drop_index(ix.name))
        # Constraints that own an index cannot lose it concurrently; each takes a brief lock
        # of its own, and a foreign key's also on the referenced table.
        for ix in self.indexes:
            if ix.constraint:
                up.append(self.drop_constraint(self.s, self.table, ix.constraint))
        for fk in self.f.foreign_keys:
            up.append(self.drop_constraint(fk.schema, fk.table, fk.name, foreign_key=True))
        for chk in self.multi_checks:
            up.append(
                dataclasses.replace(
                    self.drop_constraint(self.s, self.table, chk.name),
                    name=f"drop check {chk.name} (it also constrains "
                    f"{', '.join(sorted(_columns_in(chk.expression) - {self.name}))})",
                )
            )
        up.append(
            self.drop_column(
                self.name,
                "the contract's deliberate drop, guarded by live-code checks; its values are gone",
                "ACCESS EXCLUSIVE on this table only, brief (catalog change, no rewrite)",
            )
        )
        return Phase(
            "contract",
            f"Drop {self.name} from {self.table_sql}: its indexes CONCURRENTLY, its constraints, then the "
            "column. Its values are gone.",
            tuple(up),
            tuple(self.contract_downgrade()),
            before=(
                f"Every application instance that maps {self.name} must be gone (the guard checks live "
                "instances)."
            ),
            after=f"Only code that does not map {self.name}.",
            rollback=(
                f"Downgrade this contract revision: re-creates {self.name} {self._recreated()}, with its "
                "indexes and constraints where the rows allow. The values are gone and do not come back."
            ),
        )

    def _recreated(self) -> str:
        if self.col.generated:
            return "as a generated column (PostgreSQL computes every row again: a table rewrite)"
        words = "nullable"
        if self.default_after is not None:
            words += f", with default {self.default_after}"
        if self.not_null_after:
            words = f"with every row set to {self.refill} and NOT NULL" + (
                f", default {self.default_after}" if self.default_after is not None else ""
            )
        else:
            words += ", every row NULL"
        return f"({words})"

    def readd_column(self) -> Step:
        col = self.col
        if col.generated:
            stored = " STORED" if col.generated == "s" else ""
            return Step(
                f"re-add generated column {self.name} (its values are computed again)",
                "ddl",
                f"ALTER TABLE {self.table_sql} ADD COLUMN IF NOT EXISTS {self.c} {col.type_sql} "
                f"GENERATED ALWAYS AS ({col.default}){stored}",
                lock=REWRITE,
            )
        if col.domain_constrained:
            # PostgreSQL checks every row against the domain (a rewrite) whatever we do: the
            # default goes in the same statement, so a NOT NULL domain gets a value at once.
            # Without a column default, ADD COLUMN gives every row the domain's own.
            default = f" DEFAULT {self.default_after}" if self.default_after is not None else ""
            return Step(
                f"re-add column {self.name} (its values are gone)",
                "ddl",
                f"ALTER TABLE {self.table_sql} ADD COLUMN IF NOT EXISTS {self.c} {self.type_of(col)}{default}",
                lock=REWRITE + ": the type is a domain with constraints",
            )
        return self.add_column(
            self.name, self.type_of(col), f"re-add column {self.name} (its values are gone)"
        )

    def contract_downgrade(self) -> list[Step]:
        col = self.col
        down: list[Step] = [self.readd_column()]
        if col.owned_sequence and not col.identity and not col.generated:
            as_type = f" AS {col.type_sql}" if col.type_sql in ("smallint", "integer", "bigint") else ""
            down.append(
                Step(
                    "re-create the column's sequence",
                    "ddl",
                    f"CREATE SEQUENCE IF NOT EXISTS {col.owned_sequence}{as_type} "
                    f"OWNED BY {self.table_sql}.{self.c}",
                    lock="brief",
                )
            )
        if self.default_after is not None:
            down.append(self.set_default(self.name, self.default_after, f"restore default of {self.name}"))
        if self.not_null_after and self.refill is not None:
            down.append(self.backfill(f"set every row's {self.name} to {self.refill}"))
            down += self.not_null_via_check(self.name, self.nn)
        down += self.comment(self.name, col.comment) + self.grants(col, self.name)
        for chk in self.checks:
            down += self.restore_check(
                chk.name,
                chk.expression,
                chk.valid,
                f"re-add check {chk.name} (NOT VALID; skipped if rows fail it)",
            )
        for ix in self.indexes:
            if ix.constraint and not ix.unique:
                continue  # an exclusion constraint: its definition is not among the facts
            definition = rewrite_index_definition(
                ix.definition, self.name, self.name, ix.name, concurrently=True
            )
            down.append(self.create_index(ix.name, definition))
            if ix.constraint:
                down.append(self.unique_using_index(ix.constraint, ix.name))
        for fk in self.f.foreign_keys:
            down.append(
                self.add_foreign_key(
                    fk, fk.name, fk.columns, fk.ref_columns, f"re-add foreign key {fk.name} (NOT VALID)"
                )
            )
            if fk.valid:
                down.append(self.validate(fk.schema, fk.table, fk.name, "SHARE UPDATE EXCLUSIVE"))
        return down

    # -- what the plan says about itself ---------------------------------------------------
    def notes(self) -> tuple[str, ...]:
        col = self.col
        out = [
            f"the contract drops {self.table_sql}.{self.c} and its values: its downgrade (and ecm abort after "
            f"it) re-creates the column {self._recreated()}, but the values are gone"
        ]
        if self.null_path and not col.nullable:
            out.append(
                f"the expand drops NOT NULL of {self.name}: old code may read NULL in rows that code "
                f"without {self.name} inserts; rolling the expand back restores NOT NULL only if no row "
                "holds NULL by then"
            )
        for chk in self.nn_checks:
            out.append(f"check {chk.name} is NOT NULL by another name: the expand drops it with NOT NULL")
        if self.null_path:
            for chk in self.checks:
                if _null_aware(chk.expression):
                    out.append(
                        f"check {chk.name} tests for NULL: if it rejects NULL, rows inserted without "
                        f"{self.name} fail (give --fill with a value it accepts); the contract's downgrade "
                        "re-creates it only if every row, NULL by then, passes it"
                    )
        if self.fill is not None:
            bound = [f"check {c.name}" for c in self.checks] + [
                f"foreign key {fk.name}" for fk in self.f.foreign_keys
            ]
            if bound:
                out.append(
                    f"rows inserted without {self.name} get {self.fill.sql}: it must satisfy "
                    f"{', '.join(bound)}"
                )
        for chk in self.multi_checks:
            others = ", ".join(sorted(_columns_in(chk.expression) - {self.name}))
            out.append(f"check {chk.name} also constrains {others}; the contract drops it with the column")
        for ix in self.indexes:
            others_in = sorted(_index_columns(ix) - {self.name})
            if others_in:
                kind = f"constraint {ix.constraint}" if ix.constraint else f"index {ix.name}"
                out.append(
                    f"{kind} also covers {', '.join(others_in)}; the contract drops it with the column: "
                    f"create one without {self.name} first if queries need it"
                )
            if ix.constraint and not ix.unique:
                out.append(
                    f"exclusion constraint {ix.constraint} is not re-created by the contract's downgrade"
                )
        if col.identity:
            out.append(
                f"the contract's downgrade re-creates {self.name} as a plain column: an identity needs NOT NULL "
                "values the contract dropped"
            )
        if col.generated:
            out.append(f"the contract's downgrade re-adds generated column {self.name}: a table rewrite")
        elif col.domain_constrained:
            out.append(
                f"the contract's downgrade re-adds {self.name} of a domain with constraints: PostgreSQL "
                "rewrites the table to check every row"
            )
        return tuple(out)

    def plan(self) -> Plan:
        key = f"{self.s}.{self.table}"
        reverse = None
        if self.not_null_after and self.refill is not None:
            keys = tuple(k for k in self.f.unique_keys if self.name not in k)
            spec = Builder(dataclasses.replace(self.f, unique_keys=keys), self.plan_id).backfill_spec(
                self.plan_id + ":reverse",
                set_sql=f"{self.c} = {self.refill}",
                pending_sql=f"{self.c} IS NULL",
            )
            reverse = spec.to_json()
        uses_nn = self.not_null_after or (self.null_path and not self.col.nullable)
        return Plan(
            plan_id=self.plan_id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=f"drop {self.table_sql}.{self.c}",
            phases=(self.expand(), self.contract()),
            removes={key: [self.name]},
            touches={key: [self.name]},
            creates=(self.nn,) if uses_nn else (),
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.table,
                "column": self.name,
                "fill": self.op.fill,
                "facts": self.f.to_json(),
            },
            reverse_backfill=reverse,
            notes=self.notes(),
        )
