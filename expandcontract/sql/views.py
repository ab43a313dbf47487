"""Move a view's or a policy's references from one column to another, through pglast.

A view must keep meaning what it meant once the column it reads is renamed away: its
query is parsed, the references to the table's column are renamed scope by scope (a
sub-query's own tables shadow the outer ones), each renamed output keeps its old name
(``t.full_name AS name``: readers of the view see the same columns), and the tree is
printed and parsed back to prove the text means what the tree says. Text substitution
would also hit literals, other tables' columns of the same name, and comments.

Only what ``pg_get_viewdef`` / ``pg_get_expr`` print is expected: references to a
column are qualified whenever more than one relation is in scope, so an unqualified
reference inside a multi-relation scope is refused rather than guessed at.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from ..errors import BadInput
from .expressions import one_line
from .quoting import q, qualified

__all__ = ["rename_in_policy", "rename_in_view"]


def _from_items(items: Any) -> list[ast.Node]:
    """The relations a FROM list brings into scope (joins flattened, an aliased join kept whole)."""
    found: list[ast.Node] = []
    for item in items or ():
        if isinstance(item, ast.JoinExpr) and item.alias is None:
            found += _from_items((item.larg, item.rarg))
        else:
            found.append(item)
    return found


def _label(item: ast.Node) -> str | None:
    alias = getattr(item, "alias", None)
    if alias is not None:
        return str(alias.aliasname)
    if isinstance(item, ast.RangeVar):
        return str(item.relname)
    return None


class _Scoped:
    """Renames ``old`` to ``new`` for one table, level by level."""

    def __init__(self, schema: str, table: str, old: str, new: str) -> None:
        self.schema, self.table, self.old, self.new = schema, table, old, new
        self.renamed = 0
        self.unmovable: list[str] = []

    def _is_table(self, item: ast.Node) -> bool:
        return (
            isinstance(item, ast.RangeVar)
            and item.relname == self.table
            and item.schemaname in (None, self.schema)
        )

    def select(self, stmt: ast.SelectStmt, outer: frozenset[str]) -> None:
        if stmt.withClause is not None:
            for cte in stmt.withClause.ctes or ():
                if isinstance(cte.ctequery, ast.SelectStmt):
                    self.select(cte.ctequery, outer)
        if stmt.larg is not None or stmt.rarg is not None:
            for side in (stmt.larg, stmt.rarg):
                if side is not None:
                    self.select(side, outer)
            self.expressions([stmt.sortClause, stmt.limitCount, stmt.limitOffset], outer, single=False)
            return
        items = _from_items(stmt.fromClause)
        labels = {label for i in items if (label := _label(i)) is not None}
        mine = {label for i in items if self._is_table(i) and (label := _label(i)) is not None}
        scope = frozenset((outer - labels) | mine)
        single = len(items) == 1 and self._is_table(items[0])
        for item in stmt.fromClause or ():
            self.from_item(item, scope, outer)
        for target in stmt.targetList or ():
            before = self.renamed
            self.expressions(target.val, scope, single)
            if self.renamed > before and target.name is None and isinstance(target.val, ast.ColumnRef):
                target.name = self.old  # the output keeps its name: the view's readers see no change
        self.expressions(
            [
                stmt.whereClause,
                stmt.groupClause,
                stmt.havingClause,
                stmt.sortClause,
                stmt.windowClause,
                stmt.distinctClause,
                stmt.valuesLists,
                stmt.limitCount,
                stmt.limitOffset,
            ],
            scope,
            single,
        )

    def from_item(self, item: Any, scope: frozenset[str], outer: frozenset[str]) -> None:
        if isinstance(item, ast.JoinExpr):
            self.from_item(item.larg, scope, outer)
            self.from_item(item.rarg, scope, outer)
            self.expressions(item.quals, scope, single=False)
        elif isinstance(item, ast.RangeSubselect) and isinstance(item.subquery, ast.SelectStmt):
            self.select(item.subquery, scope if item.lateral else outer)
        elif isinstance(item, ast.RangeFunction):
            self.expressions(item.functions, scope, single=False)

    def expressions(self, node: Any, scope: frozenset[str], single: bool) -> None:
        if isinstance(node, ast.SelectStmt):
            self.select(node, scope)
        elif isinstance(node, ast.ColumnRef):
            self.column_ref(node, scope, single)
        elif isinstance(node, ast.Node):
            for attribute in node:
                self.expressions(getattr(node, attribute), scope, single)
        elif isinstance(node, tuple | list):
            for item in node:
                self.expressions(item, scope, single)

    def column_ref(self, node: ast.ColumnRef, scope: frozenset[str], single: bool) -> None:
        fields = node.fields or ()
        parts = [f.sval if isinstance(f, ast.String) else None for f in fields]
        if not parts or parts[-1] != self.old:
            return
        prefix = parts[:-1]
        if (
            (not prefix and single)
            or (len(prefix) == 1 and prefix[0] in scope)
            or (prefix == [self.schema, self.table] and self.table in scope)
        ):
            fields[-1].sval = self.new
            self.renamed += 1
        elif not prefix:
            self.unmovable.append(q(self.old))


def _parse_select(sql: str, what: str) -> ast.SelectStmt:
    try:
        statements = parse_sql(sql)
    except ParseError as exc:
        raise BadInput(f"cannot read {what}: {exc}") from exc
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        raise BadInput(f"{what} is not a single SELECT")
    return statements[0].stmt


def _printed(stmt: ast.SelectStmt, what: str) -> str:
    sql = str(RawStream()(stmt))
    if _parse_select(sql, what) != stmt:
        raise BadInput(f"{what} does not survive printing: {one_line(sql)[:300]}")
    return sql


def _rename(
    stmt: ast.SelectStmt, schema: str, table: str, old: str, new: str, what: str, *, required: bool = True
) -> int:
    renamer = _Scoped(schema, table, old, new)
    renamer.select(stmt, frozenset())
    if renamer.unmovable:
        raise BadInput(
            f"{what}: an unqualified reference to {q(old)} among several relations cannot be moved to {q(new)}"
        )
    if required and not renamer.renamed:
        raise BadInput(f"{what} does not reference {qualified(schema, table)}.{q(old)}")
    return renamer.renamed


def rename_in_view(definition: str, schema: str, table: str, old: str, new: str, *, view: str) -> str:
    """The view's query (``pg_get_viewdef`` text) reading ``new`` wherever it read ``old``."""
    what = f"view {view}"
    stmt = _parse_select(definition, what)
    _rename(stmt, schema, table, old, new, what)
    return _printed(stmt, what)


def rename_in_policy(expression: str, schema: str, table: str, old: str, new: str, *, policy: str) -> str:
    """A policy's USING / WITH CHECK expression reading ``new`` instead of ``old``.

    The expression is read as the WHERE clause of a query over the table, which is the
    scope PostgreSQL gives it: bare names are the table's columns.
    """
    what = f"policy {q(policy)}"
    stmt = _parse_select(f"SELECT FROM {qualified(schema, table)} WHERE {expression}", what)
    if not _rename(stmt, schema, table, old, new, what, required=False):
        return expression  # the other of USING / WITH CHECK may be the one that reads the column
    printed = _printed(stmt, what)
    again = _parse_select(printed, what)
    assert again.whereClause is not None
    return str(RawStream()(again.whereClause))
