"""What add-foreign-key and add-check share: reading ``RTABLE(a, b)`` and a CHECK expression
with PostgreSQL's own parser, the names a table's constraints already use, and the sample
key a precheck shows for an offending row.

Both operations add a constraint ``NOT VALID`` (enforced on every row written from then on,
no scan) and validate it later (a scan under a lock that lets reads and writes go on). What
each precheck counts is exactly what the validation would trip over, so a refusal comes at
plan time, with keys, instead of half-way through a phase.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.enums.parsenodes import ConstrType
from pglast.parser import ParseError
from pglast.stream import RawStream

from ..errors import BadInput
from ..sql.expressions import one_line, single, walk
from ..sql.quoting import literal, q, qualified
from . import checks
from .facts import TableFacts

#: The statement a ``--references`` value is read inside: a column constraint's REFERENCES clause.
_HOLDER = "CREATE TABLE ecm_holder (ecm_column int REFERENCES {})"


@dataclass(frozen=True)
class Reference:
    """``--references`` as the parser read it: unquoted names fold to lower case, as in SQL."""

    schema: str | None
    table: str
    columns: tuple[str, ...] = ()

    def sql(self) -> str:
        cols = f" ({', '.join(q(c) for c in self.columns)})" if self.columns else ""
        return qualified(self.schema, self.table) + cols


def _constraint(text: str) -> ast.Constraint | None:
    """The REFERENCES constraint of the holder statement, or None when anything else rode along."""
    try:
        statements = parse_sql(_HOLDER.format(text))
    except ParseError:
        return None
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.CreateStmt):
        return None
    elements = statements[0].stmt.tableElts or ()
    if len(elements) != 1 or not isinstance(elements[0], ast.ColumnDef):
        return None
    found = elements[0].constraints or ()
    if len(found) != 1 or not isinstance(found[0], ast.Constraint):
        return None
    return found[0] if found[0].contype == ConstrType.CONSTR_FOREIGN else None


def parse_reference(text: str) -> Reference:
    """``RTABLE``, ``schema.RTABLE`` or either with ``(col, …)``; quote names as in SQL.

    The value is read as the REFERENCES clause of a statement PostgreSQL's parser understands,
    then printed back from what was found and parsed again: the two trees must be equal, so a
    MATCH, an ON DELETE or a second statement cannot ride along."""
    shown = one_line(text)
    usage = "give RTABLE, SCHEMA.RTABLE or RTABLE(COLUMN, ...), quoting names as in SQL"
    if not shown:
        raise BadInput(f"--references is empty: {usage}")
    found = _constraint(text)
    table = found.pktable if found is not None else None
    if found is None or table is None or table.relname is None:
        raise BadInput(f"--references {shown!r} is not a table with an optional column list: {usage}")
    if table.catalogname:
        raise BadInput(f"--references {shown!r} names a database; give SCHEMA.RTABLE at most")
    columns = tuple(str(a.sval) for a in found.pk_attrs or () if isinstance(a, ast.String))
    ref = Reference(table.schemaname, str(table.relname), columns)
    again = _constraint(ref.sql())
    if again != found:
        raise BadInput(f"--references {shown!r}: {usage} (nothing else)")
    for name in (ref.schema, ref.table, *columns):
        if name is not None:
            checks.identifier(name, "referenced")
    if len(set(columns)) != len(columns):
        raise BadInput(f"--references {shown!r} names a column twice")
    return ref


# -- CHECK expressions --------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A checked boolean expression: as the user wrote it and as the parser printed it."""

    text: str
    sql: str
    reads: tuple[str, ...]


def parse_check(text: str, facts: TableFacts | None = None) -> Expression:
    """One expression over the row's own columns, by bare name.

    Refused, each with its reason: sub-queries (a check sees one row; PostgreSQL refuses them
    anyway), parameters, aggregates and window functions, qualified or whole-row references,
    and (with facts) columns the table does not have. The printed form is parsed back and
    compared, so what runs is what was checked."""
    shown = one_line(text)
    tree = single(text, "the check", example=' e.g. "qty >= 0"')
    reads: list[str] = []
    for node in walk(tree):
        if isinstance(node, ast.SubLink):
            raise BadInput(f"the check {shown!r} contains a sub-query; a check reads one row only")
        if isinstance(node, ast.ParamRef):
            raise BadInput(f"the check {shown!r} contains a parameter; write the value itself")
        if isinstance(node, ast.FuncCall) and (
            node.over is not None or node.agg_star or node.agg_distinct or node.agg_order or node.agg_filter
        ):
            raise BadInput(f"the check {shown!r} uses an aggregate or window function; a check is per row")
        if isinstance(node, ast.ColumnRef):
            fields = node.fields or ()
            if len(fields) != 1 or not isinstance(fields[0], ast.String):
                raise BadInput(
                    f"the check {shown!r}: refer to columns of the table by their bare names (qty, not t.qty or t.*)"
                )
            name = str(fields[0].sval)
            if facts is not None and name not in facts.columns:
                raise BadInput(
                    f"the check {shown!r} reads column {q(name)}, which does not exist in table "
                    f"{qualified(facts.schema, facts.name)} (columns: {', '.join(q(c) for c in facts.columns)})"
                )
            if name not in reads:
                reads.append(name)
    if not reads:
        raise BadInput(
            f"the check {shown!r} reads no column of the table: it would hold or fail for every row"
        )
    sql = str(RawStream()(tree))
    try:
        again = single(sql, "the check")
    except BadInput:
        again = None
    if again != tree:
        raise BadInput(f"the check {shown!r} does not survive printing as {sql!r}")
    return Expression(text, sql, tuple(reads))


# -- the table's constraints and keys ---------------------------------------------------------


def constraint_names(facts: TableFacts) -> set[str]:
    """Names of the constraints the table already has (whole-table facts)."""
    names = {c.name for c in facts.checks} | {fk.name for fk in facts.foreign_keys}
    names |= {ix.constraint for ix in facts.indexes if ix.constraint}
    return names


def require_free_name(facts: TableFacts, name: str) -> None:
    if name in constraint_names(facts):
        raise BadInput(
            f"constraint {q(name)} already exists on table {qualified(facts.schema, facts.name)}; "
            "pick another name or drop it first"
        )


def row_key(facts: TableFacts, alias: str) -> tuple[str, str]:
    """(SQL naming a row of ``alias`` as readable text, ORDER BY): the primary key, else a
    unique NOT NULL key, else ctid; what a refused precheck shows as its sample keys."""
    key = facts.primary_key or (facts.unique_keys[0] if facts.unique_keys else ())
    if not key:
        return f"'ctid=' || {alias}.ctid::text", f"{alias}.ctid"
    parts = [f"{literal(k + '=')} || {alias}.{q(k)}::text" for k in key]
    text = parts[0] if len(parts) == 1 else "'(' || " + " || ', ' || ".join(parts) + " || ')'"
    return text, ", ".join(f"{alias}.{q(k)}" for k in key)


def values_text(alias: str, columns: tuple[str, ...]) -> str:
    """``a=1, b=2`` of one row, for a sample that says which value has no referenced row."""
    return " || ', ' || ".join(f"{literal(c + '=')} || {alias}.{q(c)}::text" for c in columns)
