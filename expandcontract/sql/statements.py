"""A file of the user's SQL as statements, read by PostgreSQL's own parser (pglast).

Splitting on ``;`` would cut a string literal, a dollar-quoted function body or a ``DO``
block in two; the parser knows where each statement ends. Each statement keeps its text
as written (a reviewer reads what will run), its parse tree (what the rules and the
runner look at) and its line (what a message points to).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.enums.parsenodes import AlterTableType, ObjectType, TransactionStmtKind
from pglast.parser import ParseError

from ..errors import BadInput
from .expressions import one_line


@dataclass(frozen=True)
class Statement:
    sql: str  # as written, without the closing ';'
    node: Any  # the statement's parse tree (an ast.Node subclass)
    line: int  # 1-based line of the file where it starts


@dataclass(frozen=True)
class Unit:
    """What runs as one step: one statement, or a ``BEGIN … COMMIT`` block (one transaction)."""

    statements: tuple[Statement, ...]
    block: bool = False

    @property
    def line(self) -> int:
        return self.statements[0].line


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, max(0, offset)) + 1


def split(text: str, source: str) -> tuple[Statement, ...]:
    """Every statement of ``text`` (a file called ``source`` in messages); BadInput when it does
    not parse or holds none."""
    if not text.strip():
        raise BadInput(f"{source} is empty: give at least one SQL statement")
    try:
        parsed = parse_sql(text)
    except ParseError as exc:
        where = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        at = f" (line {_line(text, where)})" if where is not None else ""
        raise BadInput(f"{source} is not valid SQL{at}: {one_line(str(exc.args[0]))}") from None
    out: list[Statement] = []
    for raw in parsed:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        body = text[start:end]
        # The statement's location includes any comment lines before it: start at its first
        # line of code, so a message points to the statement and not to its comment.
        stripped = body.lstrip()
        start += len(body) - len(stripped)
        out.append(Statement(stripped.rstrip().rstrip(";").rstrip(), raw.stmt, _line(text, start)))
    if not out:
        raise BadInput(f"{source} holds no SQL statement (only comments)")
    return tuple(out)


def _kind(node: Any) -> TransactionStmtKind | None:
    return node.kind if isinstance(node, ast.TransactionStmt) else None


_BEGIN = {TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START}


def units(statements: tuple[Statement, ...], source: str) -> tuple[Unit, ...]:
    """Statements grouped into steps: a complete ``BEGIN … COMMIT`` block is one step; any other
    transaction control (a lone COMMIT, ROLLBACK, SAVEPOINT, a block left open) is refused,
    because each step already runs in a transaction of its own."""
    out: list[Unit] = []
    block: list[Statement] | None = None
    for stmt in statements:
        kind = _kind(stmt.node)
        if kind in _BEGIN:
            if block is not None:
                raise BadInput(f"{source} line {stmt.line}: BEGIN inside a BEGIN … COMMIT block")
            block = []
        elif kind == TransactionStmtKind.TRANS_STMT_COMMIT and block is not None:
            if not block:
                raise BadInput(f"{source} line {stmt.line}: empty BEGIN … COMMIT block")
            out.append(Unit(tuple(block), block=True))
            block = None
        elif kind is not None:
            raise BadInput(
                f"{source} line {stmt.line}: {one_line(stmt.sql)!r} is transaction control; each statement "
                "runs in a transaction of its own, and only a complete BEGIN … COMMIT block is accepted "
                "(it runs as one step)"
            )
        elif block is not None:
            if concurrent(stmt.node) or no_transaction(stmt.node):
                raise BadInput(
                    f"{source} line {stmt.line}: {one_line(stmt.sql)!r} cannot run inside a transaction "
                    "block; move it out of BEGIN … COMMIT"
                )
            block.append(stmt)
        else:
            out.append(Unit((stmt,)))
    if block is not None:
        raise BadInput(f"{source}: BEGIN without COMMIT (line {statements[-1].line} is the last statement)")
    return tuple(out)


def _has_option(options: Any, name: str) -> bool:
    return any(isinstance(o, ast.DefElem) and o.defname == name for o in options or ())


def concurrent(node: Any) -> bool:
    """Statements that must run without a statement timeout (they wait behind old snapshots
    and scan, blocking no reads or writes): CREATE/DROP INDEX CONCURRENTLY, REINDEX
    CONCURRENTLY, VALIDATE CONSTRAINT, DETACH PARTITION CONCURRENTLY."""
    if isinstance(node, ast.IndexStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return _has_option(node.params, "concurrently")
    if isinstance(node, ast.AlterTableStmt) and node.cmds:
        cmds = [c for c in node.cmds if isinstance(c, ast.AlterTableCmd)]
        if cmds and all(c.subtype == AlterTableType.AT_ValidateConstraint for c in cmds):
            return True
        return any(
            c.subtype == AlterTableType.AT_DetachPartition
            and isinstance(c.def_, ast.PartitionCmd)
            and bool(c.def_.concurrent)
            for c in cmds
        )
    return False


def no_transaction(node: Any) -> bool:
    """Statements PostgreSQL refuses inside a transaction block, CONCURRENTLY aside."""
    return isinstance(node, ast.VacuumStmt | ast.CreatedbStmt | ast.DropdbStmt | ast.AlterSystemStmt)


def built_index(node: Any, default_schema: str) -> tuple[str, str] | None:
    """(schema, name) of the index a CREATE INDEX CONCURRENTLY builds, when it is named: the
    runner then drops an INVALID leftover of an interrupted build before building it again."""
    if isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname and node.relation:
        return (node.relation.schemaname or default_schema, str(node.idxname))
    return None


def is_drop(node: Any, kind: ObjectType) -> bool:
    return isinstance(node, ast.DropStmt) and node.removeType == kind
