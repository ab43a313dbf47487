"""What add-index, add-unique and drop-index share: an index's keys read from the command line,
its PostgreSQL-like default name, its CONCURRENTLY statement, and the prechecks before it.

Pure: facts in, SQL out. Keys, ``--where`` and ``--expression`` are read with pglast and
printed back from the tree, and every column they reference must exist, so what the
server builds is what was checked here; the whole statement is parsed once more at the
end, as one ``CREATE INDEX`` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from ..errors import BadInput
from ..sql.expressions import one_line, single, walk
from ..sql.prechecks import violations
from ..sql.quoting import MAX_IDENTIFIER_BYTES, literal, q, qualified
from . import checks
from .facts import IndexFact, TableFacts
from .model import Step

#: Access methods PostgreSQL ships; an extension's is refused (a typo would fail only at build).
METHODS = ("btree", "hash", "gist", "gin", "spgist", "brin")


def _clip(text: str, size: int) -> str:
    """The longest prefix of ``text`` within ``size`` bytes, never cutting a character."""
    return text.encode()[:size].decode("utf-8", errors="ignore")


def default_name(table: str, parts: tuple[str, ...], label: str) -> str:
    """PostgreSQL's ``makeObjectName``: ``table_col1_col2_label``, the longer of the two
    name parts shortened first until it fits in 63 bytes (``expr`` for an expression key)."""
    name1, name2 = table, "_".join(parts)
    avail = MAX_IDENTIFIER_BYTES - (len(label.encode()) + 1) - (1 if name2 else 0)
    n1, n2 = len(name1.encode()), len(name2.encode())
    while n1 + n2 > avail:
        if n1 > n2:
            n1 -= 1
        else:
            n2 -= 1
    head = _clip(name1, n1)
    return f"{head}_{_clip(name2, n2)}_{label}" if name2 else f"{head}_{label}"


def _refs_checked(tree: ast.Node, option: str, shown: str, facts: TableFacts | None) -> list[str]:
    """Bare column references of an expression given on the command line, each a column of the table."""
    found: list[str] = []
    for node in walk(tree):
        if isinstance(node, ast.SubLink):
            raise BadInput(f"{option} {shown!r} contains a subquery; an index reads one row at a time")
        if isinstance(node, ast.ParamRef):
            raise BadInput(f"{option} {shown!r} contains a parameter; write the value itself")
        if isinstance(node, ast.FuncCall) and (
            node.over is not None or node.agg_star or node.agg_distinct or node.agg_order or node.agg_filter
        ):
            raise BadInput(f"{option} {shown!r} uses an aggregate or window function; an index is per row")
        if isinstance(node, ast.ColumnRef):
            fields = node.fields or ()
            if len(fields) != 1 or not isinstance(fields[0], ast.String):
                raise BadInput(
                    f"{option} {shown!r}: refer to columns by their bare names (qty, not t.qty or t.*)"
                )
            name = str(fields[0].sval)
            if facts is not None and name not in facts.columns:
                raise BadInput(
                    f"{option} {shown!r} reads column {q(name)}, which does not exist in table "
                    f"{qualified(facts.schema, facts.name)}"
                )
            if name not in found:
                found.append(name)
    return found


def expression_sql(text: str, option: str, facts: TableFacts | None = None) -> tuple[str, list[str]]:
    """(the expression printed from its tree, the columns it reads); BadInput when malformed."""
    shown = one_line(text)
    tree = single(text, option, example=" e.g. " + option + ' "lower(email)"')
    reads = _refs_checked(tree, option, shown, facts)
    sql = str(RawStream()(tree))
    if single(sql, option) != tree:
        raise BadInput(f"{option} {shown!r} does not survive printing as {sql!r}")
    return sql, reads


@dataclass(frozen=True)
class IndexSpec:
    """One index asked for on the command line, checked against the table's facts."""

    schema: str
    table: str
    name: str
    columns: tuple[str, ...]
    unique: bool = False
    where: str | None = None  # printed from its tree
    using: str = "btree"
    include: tuple[str, ...] = ()
    expression: str | None = None  # printed from its tree
    reads: tuple[str, ...] = ()  # every column the index reads

    @property
    def index_sql(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def table_sql(self) -> str:
        return qualified(self.schema, self.table)

    def keys_sql(self) -> list[str]:
        keys = [q(c) for c in self.columns]
        if self.expression is not None:
            keys.append(f"({self.expression})")
        return keys

    def create_sql(self) -> str:
        """``CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS``, parsed back as exactly one index."""
        parts = ["CREATE UNIQUE INDEX" if self.unique else "CREATE INDEX", "CONCURRENTLY IF NOT EXISTS"]
        parts += [
            q(self.name),
            "ON",
            self.table_sql,
            f"USING {self.using}",
            f"({', '.join(self.keys_sql())})",
        ]
        if self.include:
            parts.append(f"INCLUDE ({', '.join(q(c) for c in self.include)})")
        if self.where is not None:
            parts.append(f"WHERE ({self.where})")
        sql = " ".join(parts)
        try:
            parsed = parse_sql(sql)
        except ParseError as exc:
            raise BadInput(f"the index does not parse as SQL ({exc}): {sql}") from None
        if len(parsed) != 1 or not isinstance(parsed[0].stmt, ast.IndexStmt):
            raise BadInput(f"the index is not one CREATE INDEX statement: {sql}")
        return sql

    def key_not_null(self) -> str:
        """A unique index lets rows whose key holds a NULL repeat: only the others can collide."""
        keys = self.keys_sql()
        return " AND ".join(f"{k} IS NOT NULL" for k in keys)

    def duplicates(self) -> Step:
        """Duplicate keys counted before the unique build (a build that meets one fails after
        scanning the whole table, and leaves an index behind)."""
        keys = self.keys_sql()
        where = self.key_not_null() + (f" AND ({self.where})" if self.where is not None else "")
        sample = " || ', ' || ".join(f"COALESCE(({k})::text, 'NULL')" for k in keys)
        if len(keys) > 1:
            sample = f"'(' || {sample} || ')'"
        sample = f"{sample} || ' x' || count(*)"
        return Step(
            f"count duplicate keys of {self.name} on {self.schema}.{self.table}",
            "precheck",
            violations(
                f"FROM {self.table_sql} WHERE {where} GROUP BY {', '.join(keys)} HAVING count(*) > 1",
                sample,
            ),
            lock="ACCESS SHARE (reads only: one scan of the table)",
        )

    def name_free(self) -> Step:
        """Another relation of the schema holding the name: IF NOT EXISTS would skip the build
        without a word, so it is refused first. The plan's own index on this table is fine
        (a phase run again)."""
        return Step(
            f"check the name {self.name} is free in schema {self.schema}",
            "precheck",
            violations(
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"LEFT JOIN pg_index i ON i.indexrelid = c.oid WHERE n.nspname = {literal(self.schema)} "
                f"AND c.relname = {literal(self.name)} AND i.indrelid IS DISTINCT FROM "
                f"{literal(self.table_sql)}::regclass",
                "c.relname::text || ' (relkind ' || c.relkind::text || ')'",
            ),
            lock="none (catalog read)",
        )

    def build(self) -> Step:
        label = "unique index" if self.unique else "index"
        return Step(
            f"create {label} {self.name} CONCURRENTLY",
            "concurrent",
            self.create_sql(),
            lock="SHARE UPDATE EXCLUSIVE (reads and writes continue; waits for older transactions)",
            index=self.index_sql,
        )

    def drop(self) -> Step:
        return Step(
            f"drop index {self.name} CONCURRENTLY",
            "concurrent",
            f"DROP INDEX CONCURRENTLY IF EXISTS {self.index_sql}",
            lock="SHARE UPDATE EXCLUSIVE (reads and writes continue)",
        )


def refuse_unindexable(facts: TableFacts, what: str) -> None:
    """What PostgreSQL cannot index online, each with its reason (exit 2)."""
    name = qualified(facts.schema, facts.name)
    if facts.kind == "p":
        raise BadInput(
            f"table {name} is partitioned: PostgreSQL supports neither CREATE INDEX CONCURRENTLY nor "
            f"DROP INDEX CONCURRENTLY{' nor ADD CONSTRAINT … USING INDEX' if what == 'unique' else ''} on a "
            "partitioned table; build the index on each partition CONCURRENTLY, then CREATE INDEX … ON ONLY "
            "the parent and ALTER INDEX … ATTACH PARTITION, by hand"
        )
    checks.table_is_plannable(facts)


def read_spec(
    facts: TableFacts | None,
    *,
    schema: str,
    table: str,
    columns: tuple[str, ...],
    name: str | None,
    unique: bool,
    where: str | None = None,
    using: str | None = None,
    include: tuple[str, ...] = (),
    expression: str | None = None,
    label: str = "idx",
) -> IndexSpec:
    """The command line's index, every name and expression checked (against ``facts`` when given)."""
    for c in (*columns, *include):
        checks.identifier(c, "column")
    if name is not None:
        checks.identifier(name, "index")
    if not columns and expression is None:
        raise BadInput("give at least one COLUMN or --expression SQL to index")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise BadInput(f"column {q(repeated[0])} is given twice as a key")
    both = [c for c in include if c in columns]
    if both:
        raise BadInput(f"column {q(both[0])} is both a key and in --include")
    method = (using or "btree").lower()
    if method not in METHODS:
        raise BadInput(f"--using {using!r} is not an index method PostgreSQL ships ({', '.join(METHODS)})")
    if unique and method != "btree":
        raise BadInput(f"a unique index must use btree (PostgreSQL's only unique method), not {method}")
    if include and method not in ("btree", "gist", "spgist"):
        raise BadInput(
            f"--include needs an index method that supports it (btree, gist, spgist), not {method}"
        )
    reads = list(columns) + list(include)
    if facts is not None:
        missing = [c for c in (*columns, *include) if c not in facts.columns]
        if missing:
            raise BadInput(
                f"column {q(missing[0])} does not exist in table {qualified(facts.schema, facts.name)} "
                f"(columns: {', '.join(q(c) for c in facts.columns)})"
            )
    where_sql = expr_sql = None
    if where is not None:
        where_sql, more = expression_sql(where, "--where", facts)
        reads += more
    if expression is not None:
        expr_sql, more = expression_sql(expression, "--expression", facts)
        reads += more
    parts = (*columns, *(("expr",) if expression is not None else ()))
    chosen = name or default_name(table, parts, label)
    return IndexSpec(
        schema=schema,
        table=table,
        name=chosen,
        columns=columns,
        unique=unique,
        where=where_sql,
        using=method,
        include=include,
        expression=expr_sql,
        reads=tuple(dict.fromkeys(reads)),
    )


def name_taken(facts: TableFacts, name: str) -> IndexFact | None:
    return next((ix for ix in facts.indexes if ix.name == name), None)


def refuse_taken(facts: TableFacts, name: str) -> None:
    taken = name_taken(facts, name)
    if taken is not None:
        raise BadInput(
            f"index {qualified(facts.schema, name)} already exists ({one_line(taken.definition)}); "
            "pick another name with --name"
        )
