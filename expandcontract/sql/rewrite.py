"""Rewrite column references in SQL that PostgreSQL itself printed (index and check definitions).

A regex on the column name would also hit string literals, function names, type
names and the table name; this walks tokens and rewrites only identifiers in a
column-reference position.
"""

from __future__ import annotations

import re

from .quoting import q

_TOKEN = re.compile(
    r"""
    (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>(?:[eEbBxXuU]&?)?'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")+")
  | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
  | (?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<space>\s+)
  | (?P<op>::|.)
    """,
    re.VERBOSE | re.DOTALL,
)

_KEYWORDS_BEFORE_NAME = {"collate"}


def tokens(sql: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "op", m.group()) for m in _TOKEN.finditer(sql) if m.lastgroup != "tag"]


def has_keyword(sql: str, keyword: str) -> bool:
    """Whether ``keyword`` appears as a bare word, not inside a string, a quoted name or a comment.

    The offline script must know whether a step may run inside a transaction block
    (``CONCURRENTLY`` may not); a substring test would be fooled by a column or a
    string literal that happens to contain the word.
    """
    wanted = keyword.lower()
    return any(kind == "word" and text.lower() == wanted for kind, text in tokens(sql))


def identifier_value(kind: str, text: str) -> str | None:
    if kind == "quoted":
        return text[1:-1].replace('""', '"')
    if kind == "word":
        return text
    return None


def rewrite_column(expr: str, old: str, new: str) -> str:
    """Replace references to column ``old`` with ``new`` in an expression."""
    toks = tokens(expr)
    out: list[str] = []
    significant = [i for i, (k, _) in enumerate(toks) if k not in ("space", "comment")]
    position = {idx: n for n, idx in enumerate(significant)}
    for i, (kind, text) in enumerate(toks):
        value = identifier_value(kind, text)
        if value == old and kind in ("word", "quoted"):
            n = position[i]
            prev = toks[significant[n - 1]][1] if n > 0 else ""
            nxt = toks[significant[n + 1]][1] if n + 1 < len(significant) else ""
            is_call = nxt == "("
            after_dot_or_cast = prev in (".", "::")
            after_collate = prev.lower() in _KEYWORDS_BEFORE_NAME
            if not (is_call or after_dot_or_cast or after_collate):
                out.append(q(new))
                continue
        out.append(text)
    return "".join(out)


def references_column(expr: str, column: str) -> bool:
    return rewrite_column(expr, column, column + "\x00") != expr


def rewrite_index_definition(
    definition: str, old: str, new: str, new_name: str, *, concurrently: bool
) -> str:
    """Turn ``pg_get_indexdef`` output for an index on ``old`` into one for ``new``.

    The index name is replaced, ``CONCURRENTLY IF NOT EXISTS`` inserted, and column
    references after ``USING`` rewritten; the ``ON table`` part is left alone so a
    table that happens to share the column's name is untouched.
    """
    toks = tokens(definition)
    out: list[str] = []
    state = "start"
    for kind, text in toks:
        lowered = text.lower() if kind == "word" else ""
        if state == "start" and lowered == "index":
            out.append(text)
            if concurrently:
                out.append(" CONCURRENTLY IF NOT EXISTS")
            else:
                out.append(" IF NOT EXISTS")
            state = "name"
            continue
        if state == "name" and kind in ("word", "quoted"):
            out.append(q(new_name))
            state = "table"
            continue
        if state == "table" and lowered == "using":
            out.append(text)
            state = "body"
            continue
        out.append(text)
    text = "".join(out)
    marker = _using_position(text)
    if marker is None:
        return text
    return text[:marker] + rewrite_column(text[marker:], old, new)


def _using_position(definition: str) -> int | None:
    offset = 0
    seen_on = False
    for kind, text in tokens(definition):
        lowered = text.lower() if kind == "word" else ""
        if lowered == "on":
            seen_on = True
        elif seen_on and lowered == "using":
            return offset + len(text)
        offset += len(text)
    return None
