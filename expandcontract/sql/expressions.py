"""One SQL expression given on the command line (a fill, a default, a conversion), read by pglast.

Shared by the operations that take expressions, so each refuses the same things the same way:
the text is compared, as a tree, with ``SELECT NULL`` carrying the same expression, so a
second statement, a trailing ``FROM`` or a second target cannot ride along.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError

from ..errors import BadInput


def one_line(text: str) -> str:
    """Whitespace runs as one space: for messages that quote what the user gave."""
    return " ".join(text.split())


def walk(node: Any) -> Iterator[ast.Node]:
    """Every node of a pglast tree, depth first."""
    if isinstance(node, ast.Node):
        yield node
        for attribute in node:
            yield from walk(getattr(node, attribute))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from walk(item)


def single(text: str, option: str, *, example: str = "") -> ast.Node:
    """``text`` as exactly one expression, else BadInput naming ``option`` (``--fill``)."""
    shown = one_line(text)
    if not shown:
        raise BadInput(f"{option} is empty: give a SQL expression{example}")
    try:
        statements = parse_sql(f"SELECT {text}")
    except ParseError as exc:
        raise BadInput(f"{option} {shown!r} is not a single SQL expression: {exc}") from None
    value = as_expression(statements)
    if value is None:
        raise BadInput(f"{option} {shown!r} is not a single SQL expression")
    return value


def as_expression(statements: Any) -> ast.Node | None:
    """The expression of a parsed ``SELECT expr``, or None when anything else rode along."""
    statement = statements[0].stmt if len(statements) == 1 else None
    targets: tuple[Any, ...] = getattr(statement, "targetList", None) or ()
    value = targets[0].val if len(targets) == 1 and targets[0].name is None else None
    if isinstance(statement, ast.SelectStmt) and isinstance(value, ast.Node):
        expected: Any = parse_sql("SELECT NULL")[0].stmt
        expected.targetList[0].val = value
        if statement == expected:
            return value
    return None


def is_null(node: ast.Node) -> bool:
    """``NULL``, casts of it included (``NULL::text``)."""
    while isinstance(node, ast.TypeCast) and node.arg is not None:
        node = node.arg
    return isinstance(node, ast.A_Const) and bool(node.isnull)
