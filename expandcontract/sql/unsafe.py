"""Statements that hurt running code when run online, read from PostgreSQL's parse tree.

Pure: parse trees in, findings out. ``ecm plan custom`` prints them as notes; each rule
has a stable id, the lock the statement takes, why running code suffers, and the ``ecm
plan`` that does the same change safely, so a linter (``ecm lint``) can reuse them as they
are. What a parse tree cannot know (whether a table is empty, a function volatile, a valid
``CHECK (col IS NOT NULL)`` in place) is read the cautious way and said so in ``why``.

Two rules only a linter of whole revisions asks for (``ecm plan custom`` runs every step
under lock_timeout and knows its server): ``ddl-without-lock-timeout``, on when
:attr:`Context.require_lock_timeout`, and the rules that depend on the server version,
read from :attr:`Context.pg_version` (None: a current server).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pglast import ast
from pglast.enums.parsenodes import AlterTableType, ConstrType, ObjectType, VariableSetKind
from pglast.enums.parsenodes import TransactionStmtKind as _Tx

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
            "add-column-default-rewrite",
            "ACCESS EXCLUSIVE for a table rewrite",
            "before PostgreSQL 11 ADD COLUMN with any DEFAULT writes the value into every row while it holds "
            "the lock (from 11 on a non-volatile default is catalog-only)",
            "`ecm plan add-column TABLE COLUMN TYPE --default SQL` (added without it, filled in batches)",
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
            "exists (none is validated before it in the same plan or revision)",
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
            "ddl-without-lock-timeout",
            "the statement's lock, queued: every later query on the table waits behind it",
            "no SET lock_timeout before this DDL in the revision: while it waits for a long-running query "
            "(a report, an open transaction) to finish, every query that comes after it waits too",
            "SET lock_timeout (e.g. op.execute(\"SET lock_timeout = '2s'\")) before the first DDL, and retry; "
            "or run it as an ecm plan (every step under lock_timeout, with bounded retries)",
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


class Hit(NamedTuple):
    rule: str
    detail: str
    #: The ``ecm plan …`` command line for this very change, when the tree says enough to write it.
    fix: str = ""


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    statement: str
    detail: str = ""
    fix: str = ""

    def message(self, source: str = "") -> str:
        """One line with the rule id first, for notes and linters alike."""
        rule = RULES[self.rule]
        shown = one_line(self.statement)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = f"{source} line {self.line}" if source else f"line {self.line}"
        detail = f" ({self.detail})" if self.detail else ""
        lock = f"; lock: {rule.lock}" if rule.lock else ""
        return (
            f"[{self.rule}] {where}: {shown}{detail}: {rule.why}{lock}; instead: {self.fix or rule.instead}"
        )


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
    #: Indexes built on ``created`` tables: dropping one again blocks no one either.
    created_indexes: set[str] = field(default_factory=set)
    #: Server major version the statements will run on; None: a current one.
    pg_version: int | None = None
    #: Report the first locking DDL that runs with no lock_timeout set before it (a linter of
    #: whole revisions wants this; a plan's steps always run under one).
    require_lock_timeout: bool = False
    #: Whether a (non-zero) lock_timeout is in force: session-wide, and transaction-local.
    lock_timeout: bool = False
    lock_timeout_local: bool = False
    #: The rule is said once per run of statements, at the first DDL.
    lock_timeout_reported: bool = False


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


def _add_column(table: str, col: ast.ColumnDef, ctx: Context) -> Iterator[Hit]:
    if table in ctx.created:
        return
    cons = _column_constraints(col)
    default = next((c.raw_expr for c in cons if c.contype == ConstrType.CONSTR_DEFAULT), None)
    not_null = any(c.contype == ConstrType.CONSTR_NOTNULL for c in cons)
    stored = any(c.contype == ConstrType.CONSTR_GENERATED for c in cons)
    if not_null and default is None and not stored:
        yield Hit(
            "add-column-not-null",
            f"column {col.colname}",
            _plan("add-column", table, col.colname, _sql(col.typeName), "--default", "SQL", "--not-null"),
        )
    if _type_name(col.typeName) in _SERIAL or stored or (default is not None and _volatile(default)):
        yield Hit(
            "add-column-volatile-default", f"column {col.colname}", _add_with_default(table, col, default)
        )
    elif default is not None and ctx.pg_version is not None and ctx.pg_version < 11:
        yield Hit(
            "add-column-default-rewrite",
            f"column {col.colname} (PostgreSQL {ctx.pg_version})",
            _add_with_default(table, col, default),
        )
    for con in cons:
        yield from _constraint(table, con, ctx)


def _constraint(table: str, con: ast.Constraint, ctx: Context) -> Iterator[Hit]:
    if table in ctx.created:
        return
    name = f"constraint {con.conname}" if con.conname else ""
    if con.contype == ConstrType.CONSTR_FOREIGN and not con.skip_validation:
        yield Hit("add-foreign-key-validating", name, _foreign_key_plan(table, con))
    elif con.contype == ConstrType.CONSTR_CHECK:
        if not con.skip_validation:
            fix = _plan("add-check", table, con.conname, _sql(con.raw_expr)) if con.conname else ""
            yield Hit("add-check-validating", name, fix)
        column = _is_not_null_check(con)
        if column and con.conname:
            ctx.not_null_checks[str(con.conname)] = (table, column)
            if not con.skip_validation:
                ctx.validated.add((table, column))
    elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not con.indexname:
        keys = [str(k.sval) for k in con.keys or () if isinstance(k, ast.String)]
        unique = con.contype == ConstrType.CONSTR_UNIQUE and keys
        fix = (
            _plan("add-unique", table, *keys, *(["--name", con.conname] if con.conname else []))
            if unique
            else ""
        )
        yield Hit("add-unique-blocking", name, fix)


def _sql(node: Any) -> str:
    """A node of the tree printed back as SQL (pglast's own printer)."""
    from pglast.stream import RawStream

    return str(RawStream()(node))


def _plan(kind: str, *args: Any) -> str:
    """``ecm plan KIND ARGS…`` as a shell command line (names and SQL quoted for the shell)."""
    import shlex

    return "ecm plan " + " ".join([kind, *(shlex.quote(str(a)) for a in args)])


def _add_with_default(table: str, col: ast.ColumnDef, default: Any) -> str:
    if default is None:  # serial or a stored generated column: no plain default to hand over
        return ""
    return _plan("add-column", table, col.colname, _sql(col.typeName), "--default", _sql(default))


def _foreign_key_plan(table: str, con: ast.Constraint) -> str:
    columns = [str(a.sval) for a in con.fk_attrs or () if isinstance(a, ast.String)]
    if not columns or not isinstance(con.pktable, ast.RangeVar):
        return ""
    target = _sql(con.pktable)
    referenced = [str(a.sval) for a in con.pk_attrs or () if isinstance(a, ast.String)]
    if referenced:
        target += "(" + ", ".join(referenced) + ")"
    extra = ["--name", con.conname] if con.conname else []
    return _plan("add-foreign-key", table, *columns, "--references", target, *extra)


def _index_plan(node: ast.IndexStmt) -> str:
    """``ecm plan add-index`` for an index on plain columns (expressions and options: by hand)."""
    columns = [e.name for e in node.indexParams or () if isinstance(e, ast.IndexElem)]
    if not columns or any(c is None for c in columns):
        return ""
    extra = ["--name", node.idxname] if node.idxname else []
    if node.unique:
        extra.append("--unique")
    if node.accessMethod and node.accessMethod != "btree":
        extra += ["--using", node.accessMethod]
    if node.whereClause is not None:
        extra += ["--where", _sql(node.whereClause)]
    return _plan("add-index", _table(node.relation), *columns, *extra)


def _declared(ctx: Context, table: str, column: str) -> bool:
    cols = ctx.removes.get(table, set())
    return "*" in cols or column in cols


def _alter_table(stmt: ast.AlterTableStmt, ctx: Context) -> Iterator[Hit]:
    table = _table(stmt.relation)
    for cmd in stmt.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        sub = cmd.subtype
        if sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            yield from _add_column(table, cmd.def_, ctx)
        elif sub == AlterTableType.AT_AlterColumnType and table not in ctx.created:
            type_name = getattr(cmd.def_, "typeName", None)
            fix = _plan("change-type", table, cmd.name, _sql(type_name)) if type_name is not None else ""
            yield Hit("alter-column-type", f"column {cmd.name}", fix)
        elif sub == AlterTableType.AT_SetNotNull and table not in ctx.created:
            if ctx.pg_version is not None and ctx.pg_version < 12:
                # Only PostgreSQL 12 and later skip the scan for a validated CHECK (col IS NOT NULL).
                yield Hit(
                    "set-not-null-scan",
                    f"column {cmd.name} (PostgreSQL {ctx.pg_version} scans regardless)",
                    _plan("set-not-null", table, cmd.name),
                )
            elif (table, str(cmd.name)) not in ctx.validated:
                yield Hit("set-not-null-scan", f"column {cmd.name}", _plan("set-not-null", table, cmd.name))
        elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            yield from _constraint(table, cmd.def_, ctx)
        elif sub == AlterTableType.AT_ValidateConstraint:
            found = ctx.not_null_checks.get(str(cmd.name))
            if found:
                ctx.validated.add(found)
        elif sub == AlterTableType.AT_DropColumn and table not in ctx.created:
            if not ctx.contract:
                yield Hit("drop-column-early", f"column {cmd.name}", _plan("drop-column", table, cmd.name))
            elif not _declared(ctx, table, str(cmd.name)):
                yield Hit("drop-undeclared", f"column {table}.{cmd.name}")


def _dropped_tables(stmt: ast.DropStmt) -> Iterable[str]:
    for obj in stmt.objects or ():
        names = [str(n.sval) for n in obj if isinstance(n, ast.String)] if isinstance(obj, tuple) else []
        if names:
            yield names[-1]


def findings(node: Any, line: int, sql: str, ctx: Context) -> list[Finding]:
    """What is unsafe online in one statement; ``ctx`` learns what the statement creates."""
    found: list[Hit] = []
    if ctx.require_lock_timeout:
        found.extend(_lock_timeout(node, ctx))
    if isinstance(node, ast.CreateStmt):
        ctx.created.add(_table(node.relation))
    elif isinstance(node, ast.IndexStmt):
        if _table(node.relation) in ctx.created:
            if node.idxname:
                ctx.created_indexes.add(str(node.idxname))
        elif not node.concurrent:
            found.append(
                Hit(
                    "create-index-blocking",
                    f"index {node.idxname}" if node.idxname else "",
                    _index_plan(node),
                )
            )
    elif isinstance(node, ast.DropStmt):
        if node.removeType == ObjectType.OBJECT_INDEX and not node.concurrent:
            indexes = list(_dropped_tables(node))
            if not indexes or any(i not in ctx.created_indexes for i in indexes):
                detail = f"index {', '.join(indexes)}" if indexes else ""
                found.append(
                    Hit(
                        "drop-index-blocking",
                        detail,
                        _plan("drop-index", indexes[0]) if len(indexes) == 1 else "",
                    )
                )
        elif node.removeType == ObjectType.OBJECT_TABLE:
            for table in _dropped_tables(node):
                if table in ctx.created:
                    continue
                if not ctx.contract:
                    found.append(Hit("drop-table-early", f"table {table}", _plan("drop-table", table)))
                elif not _declared(ctx, table, "*"):
                    found.append(Hit("drop-undeclared", f"table {table}"))
    elif isinstance(node, ast.AlterTableStmt):
        found.extend(_alter_table(node, ctx))
    elif isinstance(node, ast.RenameStmt):
        if node.renameType == ObjectType.OBJECT_COLUMN and node.relationType == ObjectType.OBJECT_TABLE:
            table = _table(node.relation)
            fix = _plan("rename-column", table, node.subname, node.newname)
            found.append(Hit("rename-column", f"column {node.subname} to {node.newname}", fix))
        elif node.renameType == ObjectType.OBJECT_TABLE:
            table = _table(node.relation)
            found.append(
                Hit(
                    "rename-table",
                    f"table {table} to {node.newname}",
                    _plan("rename-table", table, node.newname),
                )
            )
    elif isinstance(node, ast.VacuumStmt):
        if any(isinstance(o, ast.DefElem) and o.defname == "full" for o in node.options or ()):
            found.append(Hit("vacuum-full", ""))
    elif isinstance(node, ast.ClusterStmt):
        found.append(Hit("cluster", ""))
    elif isinstance(node, ast.LockStmt):
        found.append(Hit("lock-table", ""))
    elif (
        isinstance(node, ast.UpdateStmt | ast.DeleteStmt)
        and node.whereClause is None
        and _table(node.relation) not in ctx.created
    ):
        found.append(Hit("unbatched-write", f"every row of {_table(node.relation)}"))
    found.extend(_rerun(node))
    return [Finding(hit.rule, line, sql, hit.detail, hit.fix) for hit in found]


def _sets_lock_timeout(node: Any) -> tuple[bool, bool] | None:
    """(in force, transaction-local) when ``node`` sets or resets lock_timeout, else None."""
    if isinstance(node, ast.VariableSetStmt) and str(node.name or "").lower() == "lock_timeout":
        if node.kind != VariableSetKind.VAR_SET_VALUE:  # RESET, SET … TO DEFAULT
            return False, bool(node.is_local)
        return not _zero(node.args), bool(node.is_local)
    if isinstance(node, ast.SelectStmt):
        for call in walk(node):
            args = tuple(call.args or ()) if isinstance(call, ast.FuncCall) else ()
            if isinstance(call, ast.FuncCall) and _func_name(call) == "set_config" and len(args) == 3:
                name, value, local = args
                if _const(name) == "lock_timeout":
                    return not _zero((value,)), _const(local) is True
    return None


def _const(node: Any) -> Any:
    """A constant's Python value (str, int, bool), else None."""
    val = node.val if isinstance(node, ast.A_Const) else None
    for attribute in ("sval", "ival", "boolval"):
        if val is not None and hasattr(val, attribute):
            return getattr(val, attribute)
    return None


def _zero(args: Any) -> bool:
    """``0`` and ``'0'`` (any unit) turn lock_timeout off; so does an empty value."""
    value = _const(args[0]) if args else None
    if value is None:
        return True
    text = str(value).strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz ").strip()
    return not digits or digits.strip("0.") == ""


def _locking_ddl(node: Any, ctx: Context) -> bool:
    """Statements that queue every later query on an existing table while they wait for their lock.

    CONCURRENTLY builds and drops, and VALIDATE CONSTRAINT, take locks that let reads and writes
    through, so they are left out; so is anything on a table created in the same run, unless
    it adds a foreign key to an existing table (SHARE ROW EXCLUSIVE on that one: its writes wait).
    """
    if _references_existing(node, ctx):
        return True
    if isinstance(node, ast.AlterTableStmt):
        cmds = [c for c in node.cmds or () if isinstance(c, ast.AlterTableCmd)]
        only_validate = bool(cmds) and all(c.subtype == AlterTableType.AT_ValidateConstraint for c in cmds)
        return _table(node.relation) not in ctx.created and not only_validate
    if isinstance(node, ast.IndexStmt):
        return not node.concurrent and _table(node.relation) not in ctx.created
    if isinstance(node, ast.DropStmt):
        if node.removeType == ObjectType.OBJECT_INDEX:
            return not node.concurrent and any(i not in ctx.created_indexes for i in _dropped_tables(node))
        if node.removeType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW):
            return any(t not in ctx.created for t in _dropped_tables(node))
        return False
    if isinstance(node, ast.RenameStmt | ast.CreateTrigStmt):
        return node.relation is None or _table(node.relation) not in ctx.created
    if isinstance(node, ast.TruncateStmt | ast.LockStmt):
        return any(_table(r) not in ctx.created for r in node.relations or ())
    return isinstance(node, ast.ClusterStmt)


def _references_existing(node: Any, ctx: Context) -> bool:
    """A foreign key added by CREATE TABLE or ALTER TABLE that references a table not created here."""
    if not isinstance(node, ast.CreateStmt | ast.AlterTableStmt):
        return False
    return any(
        isinstance(n, ast.Constraint)
        and n.contype == ConstrType.CONSTR_FOREIGN
        and _table(n.pktable) not in ctx.created
        and _table(n.pktable) != _table(node.relation)
        for n in walk(node)
    )


def _lock_timeout(node: Any, ctx: Context) -> Iterator[Hit]:
    change = _sets_lock_timeout(node)
    if change is not None:
        on, local = change
        if local:
            ctx.lock_timeout_local = on
        else:
            ctx.lock_timeout = ctx.lock_timeout_local = on
        return
    if isinstance(node, ast.TransactionStmt) and node.kind in (
        _Tx.TRANS_STMT_COMMIT,
        _Tx.TRANS_STMT_ROLLBACK,
        _Tx.TRANS_STMT_PREPARE,
    ):
        ctx.lock_timeout_local = False  # SET LOCAL ends with its transaction
        return
    if (
        not ctx.lock_timeout_reported
        and not (ctx.lock_timeout or ctx.lock_timeout_local)
        and _locking_ddl(node, ctx)
    ):
        ctx.lock_timeout_reported = True
        yield Hit("ddl-without-lock-timeout", "the first DDL of the revision that waits for a lock")


def _rerun(node: Any) -> Iterator[Hit]:
    """Statements that fail when their phase runs again (most DDL has IF [NOT] EXISTS)."""
    if isinstance(node, ast.CreateStmt) and not node.if_not_exists:
        yield Hit("not-rerunnable", "CREATE TABLE without IF NOT EXISTS")
    elif (
        isinstance(node, ast.IndexStmt) and not node.if_not_exists and not (node.concurrent and node.idxname)
    ):
        yield Hit("not-rerunnable", "CREATE INDEX without IF NOT EXISTS")
    elif isinstance(node, ast.DropStmt) and not node.missing_ok:
        yield Hit("not-rerunnable", "DROP without IF EXISTS")
    elif isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                continue
            if cmd.subtype == AlterTableType.AT_AddColumn and not cmd.missing_ok:
                yield Hit("not-rerunnable", "ADD COLUMN without IF NOT EXISTS")
            elif cmd.subtype in (AlterTableType.AT_DropColumn, AlterTableType.AT_DropConstraint) and not (
                cmd.missing_ok
            ):
                yield Hit("not-rerunnable", "DROP without IF EXISTS")
