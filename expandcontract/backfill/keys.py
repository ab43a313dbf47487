"""SQL for walking a table in key ranges: the statements each batch runs.

Pure rendering, no I/O. Keys travel as their text form and are cast back with the
column's own type (``CAST(%(l0)s AS uuid)``), so any orderable type works, composite
keys included, and checkpoints store them as plain JSON strings that resume in any
process. Spec fragments are escaped for psycopg's ``%`` placeholders, which lets a
``set_sql`` contain ``LIKE '%x'`` or ``'HH24:MI'`` without being mistaken for a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sql.quoting import q, qualified
from .spec import BackfillSpec

#: A key as stored in checkpoints: the text form of each key column, in order; for
#: ctid tables a one-element tuple holding a page number.
Key = tuple[str, ...]


def escape_percent(fragment: str) -> str:
    """Make a spec fragment safe inside a psycopg query that has %(name)s placeholders."""
    return fragment.replace("%", "%%")


@dataclass(frozen=True)
class KeyRanges:
    """Renders range predicates and bound queries for a pk/unique key.

    Ranges are half-open on the left: ``key > lo AND key <= hi``. Each batch first finds
    its upper bound with an index-only scan (``ORDER BY key OFFSET n-1 LIMIT 1``) that
    starts at the last key done, never at the start of the table, so a batch costs the
    same at row 10 million as at row 1; then one UPDATE covers exactly that range.
    """

    table: str  # qualified, quoted
    columns: tuple[str, ...]  # quoted
    types: tuple[str, ...]  # format_type() of each column

    @classmethod
    def for_spec(cls, spec: BackfillSpec, types: tuple[str, ...]) -> KeyRanges:
        return cls(qualified(spec.schema, spec.table), tuple(q(c) for c in spec.key), types)

    @property
    def row(self) -> str:
        cols = ", ".join(self.columns)
        return f"({cols})" if len(self.columns) > 1 else cols

    def _value(self, prefix: str) -> str:
        vals = [f"CAST(%({prefix}{i})s AS {t})" for i, t in enumerate(self.types)]
        return f"({', '.join(vals)})" if len(vals) > 1 else vals[0]

    def predicate(self, lo: bool, hi: bool) -> str:
        parts = []
        if lo:
            parts.append(f"{self.row} > {self._value('l')}")
        if hi:
            parts.append(f"{self.row} <= {self._value('h')}")
        return " AND ".join(parts) if parts else "true"

    @property
    def order(self) -> str:
        return ", ".join(self.columns)

    @property
    def as_text(self) -> str:
        # Aliased: an output column named like the key would make ORDER BY sort the text.
        return ", ".join(f"{c}::text AS _ecm_k{i}" for i, c in enumerate(self.columns))

    def bound_sql(self, lo: bool, hi: bool) -> str:
        """The last key of the next batch of %(off)s + 1 rows, or no row when fewer remain."""
        # The cast to text happens after LIMIT, not for every key the OFFSET skips.
        inner = ", ".join(f"{c} AS _ecm_k{i}" for i, c in enumerate(self.columns))
        outer = ", ".join(f"_ecm_k{i}::text" for i in range(len(self.columns)))
        return (
            f"SELECT {outer} FROM (SELECT {inner} FROM {self.table} WHERE {self.predicate(lo, hi)} "
            f"ORDER BY {self.order} OFFSET %(off)s LIMIT 1) _ecm_b"
        )

    def count_sql(self, lo: bool, hi: bool) -> str:
        return f"SELECT count(*) FROM {self.table} WHERE {self.predicate(lo, hi)}"

    def update_sql(self, spec: BackfillSpec, lo: bool, hi: bool) -> str:
        return (
            f"UPDATE {self.table} SET {escape_percent(spec.set_sql)} "
            f"WHERE {self.predicate(lo, hi)} AND ({escape_percent(spec.pending_sql)})"
        )

    def mismatch_count_sql(self, spec: BackfillSpec, lo: bool, hi: bool) -> str:
        return (
            f"SELECT count(*) FROM {self.table} "
            f"WHERE {self.predicate(lo, hi)} AND ({escape_percent(spec.mismatch_sql)})"
        )

    def mismatch_keys_sql(self, spec: BackfillSpec, lo: bool, hi: bool) -> str:
        return (
            f"SELECT {self.as_text} FROM {self.table} "
            f"WHERE {self.predicate(lo, hi)} AND ({escape_percent(spec.mismatch_sql)}) "
            f"ORDER BY {self.order} LIMIT %(lim)s"
        )

    def last_sql(self) -> str:
        """The greatest key now: the end of the walk (rows inserted later are the trigger's)."""
        desc = ", ".join(f"{c} DESC NULLS LAST" for c in self.columns)
        return f"SELECT {self.as_text} FROM {self.table} ORDER BY {desc} LIMIT 1"

    def sample_sql(self) -> str:
        """Keys from a page sample, ordered, for splitting the key space into chunks."""
        return f"SELECT {self.as_text} FROM {self.table} TABLESAMPLE SYSTEM (%(pct)s) ORDER BY {self.order}"

    def params(self, lo: Key | None, hi: Key | None) -> dict[str, object]:
        out: dict[str, object] = {}
        if lo is not None:
            out.update({f"l{i}": v for i, v in enumerate(lo)})
        if hi is not None:
            out.update({f"h{i}": v for i, v in enumerate(hi)})
        return out


@dataclass(frozen=True)
class PageRanges:
    """Renders ctid page-range predicates for tables with neither a primary nor a unique key.

    ``ctid >= '(p,0)' AND ctid < '(p+n,0)'`` is a TID range scan (PostgreSQL 14+): it
    reads exactly those pages. Rows our own updates move to later pages are already in
    step, and the pending predicate skips them when the walk gets there.
    """

    table: str

    @classmethod
    def for_spec(cls, spec: BackfillSpec) -> PageRanges:
        return cls(qualified(spec.schema, spec.table))

    predicate = "ctid >= CAST(%(lo)s AS tid) AND ctid < CAST(%(hi)s AS tid)"

    def update_sql(self, spec: BackfillSpec) -> str:
        return (
            f"UPDATE {self.table} SET {escape_percent(spec.set_sql)} "
            f"WHERE {self.predicate} AND ({escape_percent(spec.pending_sql)})"
        )

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM {self.table} WHERE {self.predicate}"

    def mismatch_count_sql(self, spec: BackfillSpec) -> str:
        return f"SELECT count(*) FROM {self.table} WHERE {self.predicate} AND ({escape_percent(spec.mismatch_sql)})"

    def mismatch_keys_sql(self, spec: BackfillSpec) -> str:
        return (
            f"SELECT ctid::text FROM {self.table} WHERE {self.predicate} "
            f"AND ({escape_percent(spec.mismatch_sql)}) ORDER BY ctid LIMIT %(lim)s"
        )

    @staticmethod
    def params(lo_page: int, hi_page: int) -> dict[str, object]:
        return {"lo": f"({lo_page},0)", "hi": f"({hi_page},0)"}
