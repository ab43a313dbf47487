"""Statements that hurt running code when run online, read from PostgreSQL's parse tree.

Pure: parse trees in, findings out. ``ecm plan custom`` prints them as notes; each rule
has a stable id, the lock the statement takes, why running code suffers, and the ``ecm
plan`` that does the same change safely, so a linter (``ecm lint``) can reuse them as they
are. What a parse tree cannot know (whether a table is empty, a function volatile, a valid
``CHECK (col IS NOT NULL)`` in place) is read the cautious way and said so in ``why``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums.parsenodes import AlterTableType, ConstrType, ObjectType

from .expressions import one_line, walk


@dataclass(frozen=True)
class Rule:
    id: str
    lock: str
    why: str
    instead: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule(
            "create-index-blocking",
            "SHARE on the table for the whole build",
            "CREATE INDEX without CONCURRENTLY blocks every INSERT, UPDATE and DELETE until the index is built",
            "CREATE INDEX CONCURRENTLY, or `ecm plan add-index`",
        ),
        Rule(
            "drop-index-blocking",
            "ACCESS EXCLUSIVE on the index's table",
            "DROP INDEX without CONCURRENTLY waits behind every running query on the table and blocks all of "
            "them, reads included, while it waits",
            "DROP INDEX CONCURRENTLY, or `ecm plan drop-index`",
        ),
        Rule(
            "add-column-not-null",
            "ACCESS EXCLUSIVE",
            "ADD COLUMN … NOT NULL without a default fails on a table with rows, and old code's inserts "
            "that leave the column out fail once it exists",
            "`ecm plan add-column TABLE COLUMN TYPE --default SQL --not-null`",
        ),
        Rule(
            "add-column-volatile-default",
            "ACCESS EXCLUSIVE for a table rewrite",
            "a volatile default (random(), gen_random_uuid(), clock_timestamp(), nextval(), serial, a STORED "
            "generated column) makes PostgreSQL compute every row while it holds the lock",
            "`ecm plan add-column TABLE COLUMN TYPE --default SQL` (added without it, filled in batches)",
        ),
        Rule(
            "alter-column-type",
            "ACCESS EXCLUSIVE, usually for a table rewrite",
            "ALTER COLUMN … TYPE rewrites the table and its indexes unless the types are binary coercible, and "
            "breaks prepared statements of running code either way",
            "`ecm plan change-type TABLE COLUMN TYPE`",
        ),
        Rule(
            "set-not-null-scan",
            "ACCESS EXCLUSIVE while every row is scanned",
            "SET NOT NULL scans the whole table under the lock unless a valid CHECK (column IS NOT NULL) "
            "exists (none is validated before it in this plan)",
            "`ecm plan set-not-null TABLE COLUMN`",
        ),
        Rule(
            "add-foreign-key-validating",
            "SHARE ROW EXCLUSIVE on both tables while every row is checked",
            "a foreign key added without NOT VALID checks every row while writes to both tables wait",
            "ADD CONSTRAINT … FOREIGN KEY … NOT VALID, then VALIDATE CONSTRAINT; or `ecm plan add-foreign-key`",
        ),
        Rule(
            "add-check-validating",
            "ACCESS EXCLUSIVE while every row is checked",
            "a CHECK added without NOT VALID checks every row while all queries on the table wait",
            "ADD CONSTRAINT … CHECK (…) NOT VALID, then VALIDATE CONSTRAINT; or `ecm plan add-check`",
        ),
        Rule(
            "add-unique-blocking",
            "ACCESS EXCLUSIVE while the index is built",
            "ADD UNIQUE / PRIMARY KEY builds its index under the lock: every query on the table waits",
            "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … USING INDEX; or `ecm plan add-unique`",
        ),
        Rule(
            "rename-column",
            "ACCESS EXCLUSIVE, brief",
            "running code still uses the old name: its next query fails",
            "`ecm plan rename-column TABLE OLD NEW`",
        ),
        Rule(
            "rename-table",
            "ACCESS EXCLUSIVE, brief",
            "running code still uses the old name: its next query fails",
            "`ecm plan rename-table OLD NEW`",
        ),
        Rule(
            "drop-column-early",
            "ACCESS EXCLUSIVE, brief",
            "outside the contract no guard checks that running code stopped using the column: old code's "
            "next query that names it fails",
            "drop it in the contract file and declare it with --removes TABLE.COLUMN; or `ecm plan drop-column`",
        ),
        Rule(
            "drop-table-early",
            "ACCESS EXCLUSIVE",
            "outside the contract no guard checks that running code stopped using the table",
            "drop it in the contract file and declare it with --removes TABLE; or `ecm plan drop-table`",
        ),
        Rule(
            "drop-undeclared",
            "ACCESS EXCLUSIVE",
            "the contract drops it but --removes does not name it: the guard cannot hold the contract for "
            "code that still uses it",
            "declare it: --removes TABLE.COLUMN (a column) or --removes TABLE (a table)",
        ),
        Rule(
            "vacuum-full",
            "ACCESS EXCLUSIVE for a full rewrite",
            "VACUUM FULL rewrites the table: every query on it waits until it is done",
            "plain VACUUM, or pg_repack",
        ),
        Rule(
            "cluster",
            "ACCESS EXCLUSIVE for a full rewrite",
            "CLUSTER rewrites the table: every query on it waits until it is done",
            "pg_repack",
        ),
        Rule(
            "lock-table",
            "the mode it names (ACCESS EXCLUSIVE by default) until the step's transaction ends",
            "an explicit lock queues every later query on the table behind it",
            "leave locking to the statements (each step already runs under lock_timeout)",
        ),
        Rule(
            "unbatched-write",
            "ROW EXCLUSIVE, and a row lock on every row it touches until it commits",
            "an UPDATE or DELETE without WHERE touches every row in one transaction: running code's writes "
            "to those rows wait, the step may run past statement_timeout, and the table bloats",
            "write it in batches (WHERE key ranges, repeated until done); for a copy between columns "
            "`ecm plan add-column … --fill SQL` backfills in resumable batches",
        ),
        Rule(
            "not-rerunnable",
            "",
            "a phase is run again after an interruption (and re-run in review); this statement fails the "
            "second time",
            "IF NOT EXISTS / IF EXISTS / CREATE OR REPLACE",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    statement: str
    detail: str = ""

    def message(self, source: str = "") -> str:
        """One line with the rule id first, for notes and linters alike."""
        rule = RULES[self.rule]
        shown = one_line(self.statement)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = f"{source} line {self.line}" if source else f"line {self.line}"
        detail = f" ({self.detail})" if self.detail else ""
        lock = f"; lock: {rule.lock}" if rule.lock else ""
        return f"[{self.rule}] {where}: {shown}{detail}: {rule.why}{lock}; instead: {rule.instead}"


@dataclass
class Context:
    """What the statements before this one established, in the order they run.

    ``created``: tables created by the plan (an index on them blocks no one); ``validated``:
    (table, column) pairs with a validated ``CHECK (column IS NOT NULL)`` before them;
    ``contract``: statements of the contract phase, where drops belong; ``removes``: what the
    user declared the contract removes, ``{table: {columns}}`` (``"*"`` the table itself).
    """

    contract: bool = False
    removes: dict[str, set[str]] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    not_null_checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # constraint -> (table, column)
    validated: set[tuple[str, str]] = field(default_factory=set)


#: Functions whose value differs per row: a default on them rewrites the table.
VOLATILE = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
        "setseed",
    }
)
_SERIAL = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})


def _table(rel: Any) -> str:
    return str(rel.relname) if isinstance(rel, ast.RangeVar) and rel.relname else ""


def _func_name(node: ast.FuncCall) -> str:
    last = node.funcname[-1] if node.funcname else None
    return str(last.sval).lower() if isinstance(last, ast.String) else ""


def _volatile(expr: Any) -> bool:
    return any(isinstance(n, ast.FuncCall) and _func_name(n) in VOLATILE for n in walk(expr))


def _type_name(type_name: Any) -> str:
    names = getattr(type_name, "names", None) or ()
    last = names[-1] if names else None
    return str(last.sval).lower() if isinstance(last, ast.String) else ""


def _column_constraints(col: ast.ColumnDef) -> list[ast.Constraint]:
    return [c for c in col.constraints or () if isinstance(c, ast.Constraint)]


def _is_not_null_check(con: ast.Constraint) -> str | None:
    """The column of ``CHECK (column IS NOT NULL)``, else None."""
    expr = con.raw_expr
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == 1:  # IS_NOT_NULL
        arg = expr.arg
        if isinstance(arg, ast.ColumnRef) and arg.fields and isinstance(arg.fields[-1], ast.String):
            return str(arg.fields[-1].sval)
    return None


def _add_column(table: str, col: ast.ColumnDef, ctx: Context) -> Iterator[tuple[str, str]]:
    if table in ctx.created:
        return
    cons = _column_constraints(col)
    default = next((c.raw_expr for c in cons if c.contype == ConstrType.CONSTR_DEFAULT), None)
    not_null = any(c.contype == ConstrType.CONSTR_NOTNULL for c in cons)
    stored = any(c.contype == ConstrType.CONSTR_GENERATED for c in cons)
    if not_null and default is None and not stored:
        yield "add-column-not-null", f"column {col.colname}"
    if _type_name(col.typeName) in _SERIAL or stored or (default is not None and _volatile(default)):
        yield "add-column-volatile-default", f"column {col.colname}"
    for con in cons:
        yield from _constraint(table, con, ctx)


def _constraint(table: str, con: ast.Constraint, ctx: Context) -> Iterator[tuple[str, str]]:
    if table in ctx.created:
        return
    name = f"constraint {con.conname}" if con.conname else ""
    if con.contype == ConstrType.CONSTR_FOREIGN and not con.skip_validation:
        yield "add-foreign-key-validating", name
    elif con.contype == ConstrType.CONSTR_CHECK:
        if not con.skip_validation:
            yield "add-check-validating", name
        column = _is_not_null_check(con)
        if column and con.conname:
            ctx.not_null_checks[str(con.conname)] = (table, column)
            if not con.skip_validation:
                ctx.validated.add((table, column))
    elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not con.indexname:
        yield "add-unique-blocking", name


def _declared(ctx: Context, table: str, column: str) -> bool:
    cols = ctx.removes.get(table, set())
    return "*" in cols or column in cols


def _alter_table(stmt: ast.AlterTableStmt, ctx: Context) -> Iterator[tuple[str, str]]:
    table = _table(stmt.relation)
    for cmd in stmt.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        sub = cmd.subtype
        if sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            yield from _add_column(table, cmd.def_, ctx)
        elif sub == AlterTableType.AT_AlterColumnType and table not in ctx.created:
            yield "alter-column-type", f"column {cmd.name}"
        elif sub == AlterTableType.AT_SetNotNull and table not in ctx.created:
            if (table, str(cmd.name)) not in ctx.validated:
                yield "set-not-null-scan", f"column {cmd.name}"
        elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            yield from _constraint(table, cmd.def_, ctx)
        elif sub == AlterTableType.AT_ValidateConstraint:
            found = ctx.not_null_checks.get(str(cmd.name))
            if found:
                ctx.validated.add(found)
        elif sub == AlterTableType.AT_DropColumn and table not in ctx.created:
            if not ctx.contract:
                yield "drop-column-early", f"column {cmd.name}"
            elif not _declared(ctx, table, str(cmd.name)):
                yield "drop-undeclared", f"column {table}.{cmd.name}"


def _dropped_tables(stmt: ast.DropStmt) -> Iterable[str]:
    for obj in stmt.objects or ():
        names = [str(n.sval) for n in obj if isinstance(n, ast.String)] if isinstance(obj, tuple) else []
        if names:
            yield names[-1]


def findings(node: Any, line: int, sql: str, ctx: Context) -> list[Finding]:
    """What is unsafe online in one statement; ``ctx`` learns what the statement creates."""
    found: list[tuple[str, str]] = []
    if isinstance(node, ast.CreateStmt):
        ctx.created.add(_table(node.relation))
    elif isinstance(node, ast.IndexStmt):
        if not node.concurrent and _table(node.relation) not in ctx.created:
            found.append(("create-index-blocking", f"index {node.idxname}" if node.idxname else ""))
    elif isinstance(node, ast.DropStmt):
        if node.removeType == ObjectType.OBJECT_INDEX and not node.concurrent:
            found.append(("drop-index-blocking", ""))
        elif node.removeType == ObjectType.OBJECT_TABLE:
            for table in _dropped_tables(node):
                if table in ctx.created:
                    continue
                if not ctx.contract:
                    found.append(("drop-table-early", f"table {table}"))
                elif not _declared(ctx, table, "*"):
                    found.append(("drop-undeclared", f"table {table}"))
    elif isinstance(node, ast.AlterTableStmt):
        found.extend(_alter_table(node, ctx))
    elif isinstance(node, ast.RenameStmt):
        if node.renameType == ObjectType.OBJECT_COLUMN and node.relationType == ObjectType.OBJECT_TABLE:
            found.append(("rename-column", f"column {node.subname} to {node.newname}"))
        elif node.renameType == ObjectType.OBJECT_TABLE:
            found.append(("rename-table", f"table {_table(node.relation)} to {node.newname}"))
    elif isinstance(node, ast.VacuumStmt):
        if any(isinstance(o, ast.DefElem) and o.defname == "full" for o in node.options or ()):
            found.append(("vacuum-full", ""))
    elif isinstance(node, ast.ClusterStmt):
        found.append(("cluster", ""))
    elif isinstance(node, ast.LockStmt):
        found.append(("lock-table", ""))
    elif (
        isinstance(node, ast.UpdateStmt | ast.DeleteStmt)
        and node.whereClause is None
        and _table(node.relation) not in ctx.created
    ):
        found.append(("unbatched-write", f"every row of {_table(node.relation)}"))
    found.extend(_rerun(node))
    return [Finding(rule, line, sql, detail) for rule, detail in found]


def _rerun(node: Any) -> Iterator[tuple[str, str]]:
    """Statements that fail when their phase runs again (most DDL has IF [NOT] EXISTS)."""
    if isinstance(node, ast.CreateStmt) and not node.if_not_exists:
        yield "not-rerunnable", "CREATE TABLE without IF NOT EXISTS"
    elif (
        isinstance(node, ast.IndexStmt) and not node.if_not_exists and not (node.concurrent and node.idxname)
    ):
        yield "not-rerunnable", "CREATE INDEX without IF NOT EXISTS"
    elif isinstance(node, ast.DropStmt) and not node.missing_ok:
        yield "not-rerunnable", "DROP without IF EXISTS"
    elif isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                continue
            if cmd.subtype == AlterTableType.AT_AddColumn and not cmd.missing_ok:
                yield "not-rerunnable", "ADD COLUMN without IF NOT EXISTS"
            elif cmd.subtype in (AlterTableType.AT_DropColumn, AlterTableType.AT_DropConstraint) and not (
                cmd.missing_ok
            ):
                yield "not-rerunnable", "DROP without IF EXISTS"
