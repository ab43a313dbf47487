"""Read and rewrite index and check definitions with PostgreSQL's own parser (pglast).

A rename must move every reference to the old column, and only those: a text search
would also hit string literals, function and type names, the table's name, or miss a
reference spelled differently. Parsing gives the references themselves (``ColumnRef``
and ``IndexElem`` nodes); the renamed tree is printed back and parsed once more, so
what is emitted is proven to mean what the tree says.

Index definitions are printed in ``pg_get_indexdef()``'s layout (``ON schema.table
USING method (...)``), whatever their source, so that definitions from the catalog and
from SQLAlchemy MetaData look alike, and a generated revision reads like the catalog.
Expressions inside them are printed by pglast (``CAST(x AS t)`` for ``x::t``).
"""

from __future__ import annotations

from typing import Any

from pglast import ast, parse_sql
from pglast.enums.parsenodes import SortByDir, SortByNulls
from pglast.enums.primnodes import CoercionForm
from pglast.parser import ParseError, scan
from pglast.stream import RawStream

from ..errors import BadInput
from .expressions import as_expression, one_line, walk
from .quoting import q, qualified

__all__ = [
    "has_keyword",
    "index_definition",
    "index_key_columns",
    "index_references_column",
    "references_column",
    "rewrite_column",
    "rewrite_index_definition",
]


# -- reading -------------------------------------------------------------------------------


def _parse_index(definition: str) -> ast.IndexStmt:
    try:
        statements = parse_sql(definition)
    except ParseError as exc:
        raise BadInput(f"cannot read index definition {one_line(definition)!r}: {exc}") from exc
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.IndexStmt):
        raise BadInput(f"not a single CREATE INDEX statement: {one_line(definition)!r}")
    return statements[0].stmt


def _parse_expression(expr: str) -> ast.Node:
    """The expression alone; anything that would turn ``SELECT expr`` into more is refused.

    The text is compared, as a tree, with ``SELECT NULL`` carrying the same expression,
    so a trailing ``FROM``, a second target or a second statement cannot slip through.
    """
    try:
        statements = parse_sql(f"SELECT {expr}")
    except ParseError as exc:
        raise BadInput(f"cannot read expression {one_line(expr)!r}: {exc}") from exc
    value = as_expression(statements)
    if value is None:
        raise BadInput(f"not a single SQL expression: {one_line(expr)!r}")
    return value


def _names(fields: tuple[Any, ...] | None) -> list[str | None]:
    """A ColumnRef's parts; ``None`` stands for ``*``."""
    return [f.sval if isinstance(f, ast.String) else None for f in fields or ()]


# -- renaming ------------------------------------------------------------------------------


class _Renamer:
    """Renames column references in a tree, and keeps what it saw for the error messages."""

    def __init__(self, old: str, new: str, relation: ast.RangeVar | None) -> None:
        self.old = old
        self.new = new
        self.relname = relation.relname if relation is not None else None
        self.schemaname = relation.schemaname if relation is not None else None
        self.renamed = 0
        self.whole_row = False
        self.unmovable: list[str] = []

    def _prefix_is_the_table(self, prefix: list[str | None]) -> bool:
        if self.relname is None:
            return False
        if len(prefix) == 1:
            return prefix[0] == self.relname
        return len(prefix) == 2 and prefix == [self.schemaname, self.relname]

    def column_ref(self, node: ast.ColumnRef) -> None:
        fields = node.fields or ()
        parts = _names(fields)
        if parts[-1] is None or (len(parts) == 1 and parts[0] == self.relname and parts[0] != self.old):
            self.whole_row = True  # table.* or a bare table name: the row, every column included
            return
        if parts[-1] == self.old and (len(parts) == 1 or self._prefix_is_the_table(parts[:-1])):
            fields[-1].sval = self.new
            self.renamed += 1
        elif self.old in parts:
            self.unmovable.append(".".join(q(p) if p is not None else "*" for p in parts))

    def index_elem(self, node: ast.IndexElem) -> None:
        if node.name == self.old:
            node.name = self.new
            self.renamed += 1

    def __call__(self, tree: Any) -> None:
        for node in walk(tree):
            if isinstance(node, ast.ColumnRef):
                self.column_ref(node)
            elif isinstance(node, ast.IndexElem):
                self.index_elem(node)


def _found(tree: Any, column: str, relation: ast.RangeVar | None = None) -> _Renamer:
    """Who refers to ``column``: a renamer that renames to the same name only counts."""
    renamer = _Renamer(column, column, relation)
    renamer(tree)
    return renamer


# -- printing ------------------------------------------------------------------------------


def _expression_sql(node: ast.Node) -> str:
    return str(RawStream()(node))


def _name_list(nodes: tuple[Any, ...]) -> str:
    return ".".join(q(n.sval) for n in nodes)


def _elem_sql(elem: ast.IndexElem) -> str:
    """One index key as pg_get_indexdef() spells it: ASC and default NULLS ordering left out."""
    if elem.name is not None:
        parts = [q(elem.name)]
    elif isinstance(elem.expr, ast.FuncCall) and elem.expr.funcformat == CoercionForm.COERCE_EXPLICIT_CALL:
        parts = [_expression_sql(elem.expr)]  # a plain function call needs no parentheses
    elif elem.expr is not None:
        parts = [f"({_expression_sql(elem.expr)})"]
    else:
        raise BadInput("an index key without a column or an expression")
    if elem.collation:
        parts.append(f"COLLATE {_name_list(elem.collation)}")
    if elem.opclass:
        opclass = _name_list(elem.opclass)
        if elem.opclassopts:
            opclass += f" ({', '.join(_expression_sql(o) for o in elem.opclassopts)})"
        parts.append(opclass)
    if elem.ordering == SortByDir.SORTBY_DESC:
        parts.append("DESC")
    elif elem.ordering != SortByDir.SORTBY_DEFAULT:
        raise BadInput(f"unexpected ordering {elem.ordering!r} of an index key")
    if elem.nulls_ordering == SortByNulls.SORTBY_NULLS_LAST:
        parts.append("NULLS LAST")
    elif elem.nulls_ordering == SortByNulls.SORTBY_NULLS_FIRST:
        parts.append("NULLS FIRST")
    return " ".join(parts)


def _default_ordering(elem: ast.IndexElem) -> None:
    """Spell a key's order as pg_get_indexdef() does: ASC, and the NULLS that goes with it, implied."""
    descending = elem.ordering == SortByDir.SORTBY_DESC
    if elem.ordering == SortByDir.SORTBY_ASC:
        elem.ordering = SortByDir.SORTBY_DEFAULT
    implied = SortByNulls.SORTBY_NULLS_FIRST if descending else SortByNulls.SORTBY_NULLS_LAST
    if elem.nulls_ordering == implied:
        elem.nulls_ordering = SortByNulls.SORTBY_NULLS_DEFAULT


def _option_sql(option: ast.DefElem) -> str:
    """A storage parameter as pg_get_indexdef() spells it (``fillfactor='70'``, no spaces)."""
    name = ".".join(q(n) for n in (option.defnamespace, option.defname) if n)
    if option.arg is None:
        return name
    if not isinstance(option.arg, ast.Node):
        raise BadInput(f"unexpected value of index storage parameter {name}")
    return f"{name}={_expression_sql(option.arg)}"


# What pg_get_indexdef() never prints; a definition carrying one is not an index's definition.
_FOREIGN_TO_INDEXDEF = ("excludeOpNames", "primary", "isconstraint", "deferrable", "initdeferred")


def _index_sql(stmt: ast.IndexStmt) -> str:
    relation = stmt.relation
    if relation is None or relation.relname is None or not stmt.indexParams:
        raise BadInput("an index definition needs a table and at least one key")
    odd = [a for a in _FOREIGN_TO_INDEXDEF if getattr(stmt, a)]
    if odd or relation.catalogname:
        raise BadInput(f"unexpected parts in an index definition: {', '.join(odd) or 'database name'}")
    parts = ["CREATE UNIQUE INDEX" if stmt.unique else "CREATE INDEX"]
    if stmt.concurrent:
        parts.append("CONCURRENTLY")
    if stmt.if_not_exists:
        parts.append("IF NOT EXISTS")
    if stmt.idxname:
        parts.append(q(stmt.idxname))
    parts.append("ON ONLY" if relation.inh is False else "ON")
    parts.append(qualified(relation.schemaname, relation.relname))
    parts.append(f"USING {q(stmt.accessMethod or 'btree')}")
    parts.append(f"({', '.join(_elem_sql(e) for e in stmt.indexParams)})")
    if stmt.indexIncludingParams:
        parts.append(f"INCLUDE ({', '.join(_elem_sql(e) for e in stmt.indexIncludingParams)})")
    # Before WITH and WHERE, where the grammar wants it (pglast's own printer puts it last).
    if stmt.nulls_not_distinct:
        parts.append("NULLS NOT DISTINCT")
    if stmt.options:
        parts.append(f"WITH ({', '.join(_option_sql(o) for o in stmt.options)})")
    if stmt.tableSpace:
        parts.append(f"TABLESPACE {q(stmt.tableSpace)}")
    if stmt.whereClause is not None:
        parts.append(f"WHERE ({_expression_sql(stmt.whereClause)})")
    return " ".join(parts)


def _printed_faithfully(stmt: ast.IndexStmt) -> str:
    """The statement's SQL, parsed back and compared: a printer slip fails here, not in production."""
    for elem in stmt.indexParams or ():
        _default_ordering(elem)
    sql = _index_sql(stmt)
    try:
        again = parse_sql(sql)
    except ParseError as exc:
        raise BadInput(f"index definition printed as invalid SQL ({exc}): {sql}") from exc
    if len(again) != 1 or again[0].stmt != stmt:
        raise BadInput(f"index definition does not survive printing: {sql}")
    return sql


# -- the public functions ------------------------------------------------------------------


def index_definition(sql: str, *, name: str | None = None, schema: str | None = None) -> str:
    """A CREATE INDEX statement in pg_get_indexdef()'s layout.

    For statements that did not come from the catalog (SQLAlchemy's ``CreateIndex``):
    the name and schema PostgreSQL would report are filled in, and what the catalog
    does not keep (CONCURRENTLY, IF NOT EXISTS, TABLESPACE) is dropped, so that the
    result can stand in for the catalog's definition and be compared with it.
    """
    stmt = _parse_index(sql)
    if name is not None:
        stmt.idxname = name
    if schema is not None and stmt.relation is not None and stmt.relation.schemaname is None:
        stmt.relation.schemaname = schema
    stmt.concurrent = False
    stmt.if_not_exists = False
    stmt.tableSpace = None
    return _printed_faithfully(stmt)


def index_references_column(definition: str, column: str) -> bool:
    """Whether an index reads ``column``: as a key, in an expression, INCLUDE or WHERE.

    A whole-row value (``t.*``) reads every column, so it counts, as in the catalog,
    where such an index depends on the table rather than on any one column.
    """
    stmt = _parse_index(definition)
    found = _found([stmt.indexParams, stmt.indexIncludingParams, stmt.whereClause], column, stmt.relation)
    return bool(found.renamed or found.unmovable or found.whole_row)


def index_key_columns(definition: str) -> tuple[str, ...] | None:
    """The key columns in order, or None when a key is an expression (as ``pg_index.indkey`` has 0)."""
    names = [e.name for e in _parse_index(definition).indexParams or ()]
    return None if any(n is None for n in names) else tuple(str(n) for n in names)


def rewrite_index_definition(
    definition: str, old: str, new: str, new_name: str, *, concurrently: bool
) -> str:
    """Turn ``pg_get_indexdef`` output for an index on ``old`` into one for ``new``.

    The index gets ``new_name`` and IF NOT EXISTS (plus CONCURRENTLY if asked), and
    every reference to ``old`` (keys, expressions, INCLUDE, WHERE) becomes ``new``; the
    table is left alone even if it shares the column's name. When ``old != new`` and no
    reference moves, or one cannot be moved, this raises :class:`BadInput`: an index
    kept on ``old`` would vanish with it in the contract, silently taking its
    uniqueness along. An index that reads the column only through a whole-row value
    is the exception: it has no reference to move, and its copy covers ``new`` too.
    """
    stmt = _parse_index(definition)
    label = q(stmt.idxname) if stmt.idxname else one_line(definition)
    if old != new:
        renamer = _Renamer(old, new, stmt.relation)
        renamer([stmt.indexParams, stmt.indexIncludingParams, stmt.whereClause])
        if renamer.unmovable:
            raise BadInput(
                f"index {label}: cannot move the reference {renamer.unmovable[0]} to column {q(new)}; "
                f"definition: {one_line(definition)}"
            )
        if not renamer.renamed and not renamer.whole_row:
            raise BadInput(
                f"index {label} does not reference column {q(old)}, so it cannot be moved to {q(new)}; "
                f"definition: {one_line(definition)}"
            )
    stmt.idxname = new_name
    stmt.if_not_exists = True
    stmt.concurrent = concurrently
    return _printed_faithfully(stmt)


def rewrite_column(expr: str, old: str, new: str, *, table: str | None = None) -> str:
    """Replace references to column ``old`` with ``new`` in an expression (a CHECK's, say).

    ``table`` lets ``table.old`` count as a reference too. Raises :class:`BadInput`
    when ``old != new`` and nothing was replaced, or a reference could not be (such as
    ``other.old``): a constraint copied unchanged would go on checking ``old``.
    """
    tree = _parse_expression(expr)
    if old == new:
        return _expression_sql(tree)
    renamer = _Renamer(old, new, ast.RangeVar(relname=table) if table else None)
    renamer(tree)
    if renamer.unmovable:
        raise BadInput(
            f"cannot move the reference {renamer.unmovable[0]} to column {q(new)} in {one_line(expr)!r}"
        )
    if not renamer.renamed:
        raise BadInput(f"expression {one_line(expr)!r} does not reference column {q(old)}")
    sql = _expression_sql(tree)
    if _parse_expression(sql) != tree:
        raise BadInput(f"expression does not survive printing: {sql}")
    return sql


def references_column(expr: str, column: str) -> bool:
    """Whether an expression refers to ``column`` (qualified references included)."""
    found = _found(_parse_expression(expr), column)
    return bool(found.renamed or found.unmovable)


def has_keyword(sql: str, keyword: str) -> bool:
    """Whether ``keyword`` appears as a bare word, not inside a string, a quoted name or a comment.

    The offline script must know whether a step may run inside a transaction block
    (``CONCURRENTLY`` may not); a substring test would be fooled by a column or a
    string literal that happens to contain the word. PostgreSQL's own scanner tells.
    """
    wanted = keyword.lower()
    try:
        found = scan(sql)
    except ParseError as exc:
        raise BadInput(f"cannot read SQL {one_line(sql)[:200]!r}: {exc}") from exc
    for token in found:
        text = sql[token.start : token.end + 1]
        bare_word = token.kind != "NO_KEYWORD" or (token.name == "IDENT" and not text.startswith('"'))
        if bare_word and text.lower() == wanted:
            return True
    return False
