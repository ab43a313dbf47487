"""Facts about one table and one of its columns, read from pg_catalog for the planner.

Names are resolved to an OID and an attnum once, up front, and every later query is
keyed by those numbers: odd names (mixed case, spaces, quotes, unicode, reserved
words) then only ever travel as bound parameters, never through SQL text.

Reading a table costs two statements, whatever the operation: the first resolves the name
and reads the columns, the second reads everything keyed by the OID and attnum, each part
a sub-select aggregated into JSON text, decoded here into the same values the separate
queries returned (strings, booleans, integers, arrays as lists). Only a table that was
never analyzed adds its ``count(*)``, and :mod:`.dependents` its own reads.

Only SELECTs are issued. The connection's transaction (SQLAlchemy autobegins one) is
left to the caller: end it promptly, because an idle transaction holds back
``CREATE INDEX CONCURRENTLY`` and, after the small-table ``count(*)``, an
ACCESS SHARE lock on the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..plan.facts import CheckFact, ColumnFacts, ForeignKeyFact, GrantFact, IndexFact, TableFacts
from ..sql.quoting import q, qualified
from .dependents import read_dependents

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["read_table_facts"]

_KIND_NAMES = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "a partitioned index",
    "c": "a composite type",
    "t": "a TOAST table",
}

FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

# Counting is exact and cheap up to here (8 MB with 8 kB blocks); beyond it we estimate.
COUNT_MAX_PAGES = 1024

# A Var of the indexed table inside an index expression or predicate. Index expressions
# cannot contain sub-queries, so ``varno 1`` always means the table itself there.
_VAR = re.compile(r"\{VAR :varno (\d+) :varattno (-?\d+) ")

_COLUMNS_LIMIT = 30

Row = Mapping[Any, Any]


def show(schema: str | None, name: str) -> str:
    """A name for an error message: quoted like PostgreSQL's own messages, yet unambiguous.

    Plain names are wrapped in double quotes (``"public.accounts"``); names that need
    quoting are shown exactly as SQL would spell them (``public."My Table"``).
    """
    text_ = qualified(schema, name)
    return text_ if '"' in text_ else f'"{text_}"'


def _rows(conn: Connection, sql: str, params: Row) -> Sequence[Row]:
    from sqlalchemy import text

    return conn.execute(text(sql), dict(params)).mappings().all()


def _scalar(conn: Connection, sql: str, params: Row | None = None) -> Any:
    from sqlalchemy import text

    return conn.execute(text(sql), dict(params or {})).scalar_one()


def _one(conn: Connection, sql: str, params: Row) -> Row | None:
    rows = _rows(conn, sql, params)
    return rows[0] if rows else None


def _json_rows(sql: str, order: str | None = None) -> str:
    """A scalar sub-select: the rows of ``sql`` as a JSON array of objects, in ``order`` (an
    ORDER BY over ``sql``'s output columns; None when ``sql`` orders and limits itself).

    As text, decoded by :func:`_decode`: the client encoding applies as to any text, and
    every driver returns it alike.
    """
    aggregate = f"json_agg(q ORDER BY {order})" if order else "json_agg(q)"
    return f"(SELECT COALESCE({aggregate}, '[]'::json)::text FROM ({sql}) q)"


def _decode(value: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(value) if isinstance(value, str | bytes) else value
    return rows


def _read(conn: Connection, parts: Mapping[str, str], params: Row) -> dict[str, list[dict[str, Any]]]:
    """Several reads in one statement (one round trip): ``{name: rows}`` for ``{name: sql}``,
    each ``sql`` one :func:`_json_rows` sub-select; they share ``params``."""
    if not parts:
        return {}
    select = ",\n".join(f"{sql} AS {name}" for name, sql in parts.items())
    row = _one(conn, f"SELECT {select}", params)
    assert row is not None
    return {name: _decode(row[name]) for name in parts}


_RELATION_COLUMNS = """
    c.oid::bigint AS oid, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind,
    c.relispartition AS is_partition, c.reltuples::float8 AS reltuples, c.relowner::bigint AS owner
"""

#: Every column of a table (``{oid}``: the table's OID, a bind or a correlated reference).
_COLUMNS = """
    SELECT a.attnum::int AS attnum, a.attname::text AS name,
           format_type(a.atttypid, a.atttypmod) AS type_sql, a.attnotnull AS not_null,
           format_type(a.atttypid, NULL) AS base_type,
           pg_get_expr(d.adbin, d.adrelid) AS default_sql,
           a.attcollation <> 0 AND a.attcollation <> t.typcollation AS own_collation,
           co.collname::text AS collation, cn.nspname::text AS collation_schema,
           a.attidentity::text AS identity, a.attgenerated::text AS generated,
           col_description(a.attrelid, a.attnum) AS comment,
           tn.nspname = 'pg_catalog' AS type_is_builtin,
           a.attlen::int AS attlen
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    JOIN pg_namespace tn ON tn.oid = t.typnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
    WHERE a.attrelid = {oid} AND a.attnum > 0 AND NOT a.attisdropped
"""

#: The table's columns, with the relation row that names it.
_RELATION_WITH_COLUMNS = (
    f"{_RELATION_COLUMNS}, {_json_rows(_COLUMNS.format(oid='c.oid'), 'q.attnum')} AS columns"
)


def _resolve(conn: Connection, schema: str | None, table: str) -> tuple[Row, list[dict[str, Any]]]:
    """The table's pg_class row and its columns (in attnum order), in one statement."""
    if schema is not None:
        found = _one(
            conn,
            f"""
            SELECT {_RELATION_WITH_COLUMNS}
            FROM pg_namespace n
            LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = :table
            WHERE n.nspname = :schema
            """,
            {"schema": schema, "table": table},
        )
        if found is None:
            raise BadInput(f"schema {show(None, schema)} does not exist")
        if found["oid"] is None:
            raise BadInput(f"table {show(schema, table)} does not exist{_table_hint(conn, table)}")
    else:
        found = _one(
            conn,
            f"""
            SELECT {_RELATION_WITH_COLUMNS}
            FROM unnest(current_schemas(false)) WITH ORDINALITY AS s(nspname, position)
            JOIN pg_namespace n ON n.nspname = s.nspname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = :table
            ORDER BY s.position
            LIMIT 1
            """,
            {"table": table},
        )
        if found is None:
            path = _scalar(conn, "SELECT current_schemas(false)::text[]")
            searched = ", ".join(q(s) for s in path) or "no schemas"
            raise BadInput(
                f"table {show(None, table)} does not exist in the search_path ({searched})"
                f"{_table_hint(conn, table)}"
            )
    if found["kind"] not in ("r", "p"):
        what = _KIND_NAMES.get(found["kind"], f"a relation of kind {found['kind']!r}")
        raise BadInput(f"{show(found['schema'], found['name'])} is {what}, not a table")
    return found, _decode(found["columns"])


def _table_hint(conn: Connection, table: str) -> str:
    """Suggest tables whose name differs only by case, or that live in another schema."""
    similar = _rows(
        conn,
        """
        SELECT n.nspname::text AS schema, c.relname::text AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND lower(c.relname) = lower(:table)
          AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
        ORDER BY n.nspname, c.relname
        LIMIT 4
        """,
        {"table": table},
    )
    if not similar:
        return ""
    return " (did you mean " + " or ".join(qualified(r["schema"], r["name"]) for r in similar) + "?)"


# The reads keyed by OID (``:oid``) and attnum (``:attnum``; WHOLE_TABLE stands for every column,
# with ``:whole`` true), each a :func:`_json_rows` sub-select. Where a query sorted by a ``name``
# column, the JSON text of it sorts with COLLATE "C", which is how ``name`` sorts.

#: The sequence behind a serial ('a' dependency) or identity ('i') column, if any.
_OWNED_SEQUENCE = _json_rows(
    """
    SELECT n.nspname::text AS schema, s.relname::text AS name
    FROM pg_depend d
    JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
    JOIN pg_namespace n ON n.oid = s.relnamespace
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = CAST(:oid AS oid) AND d.refobjsubid = CAST(:attnum AS int4)
      AND d.deptype IN ('a', 'i')
    ORDER BY d.deptype, s.relname
    LIMIT 1
    """
)

#: The sequence of every column that has one (same choice per column as _OWNED_SEQUENCE).
_OWNED_SEQUENCES = _json_rows(
    """
    SELECT DISTINCT ON (d.refobjsubid) d.refobjsubid::int AS attnum,
           n.nspname::text AS schema, s.relname::text AS name
    FROM pg_depend d
    JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
    JOIN pg_namespace n ON n.oid = s.relnamespace
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = CAST(:oid AS oid) AND d.refobjsubid > 0
      AND d.deptype IN ('a', 'i')
    ORDER BY d.refobjsubid, d.deptype, s.relname
    """,
    "q.attnum",
)

#: Column-level privileges only. ``attacl`` holds exactly the column grants, so privileges
#: that exist because of a table-level GRANT (which information_schema.column_privileges
#: also lists) are not here; the owner is skipped because it holds every privilege regardless.
_GRANTS = _json_rows(
    """
    SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE r.rolname::text END AS grantee,
           x.privilege_type AS privilege, bool_or(x.is_grantable) AS grantable
    FROM pg_attribute a
    CROSS JOIN LATERAL aclexplode(a.attacl) AS x
    LEFT JOIN pg_roles r ON r.oid = x.grantee
    WHERE a.attrelid = CAST(:oid AS oid) AND a.attnum = CAST(:attnum AS int2)
      AND x.grantee <> CAST(:owner AS oid)
    GROUP BY 1, 2
    """,
    "q.grantee, q.privilege",
)

#: The column's domain type and the domains it is built on, nearest first.
_DOMAIN = _json_rows(
    """
    WITH RECURSIVE chain AS (
        SELECT t.oid, t.typbasetype, 1 AS depth
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = CAST(:oid AS oid) AND a.attnum = CAST(:attnum AS int2) AND t.typtype = 'd'
        UNION ALL
        SELECT t.oid, t.typbasetype, c.depth + 1
        FROM chain c JOIN pg_type t ON t.oid = c.typbasetype
        WHERE t.typtype = 'd'
    )
    SELECT c.depth AS depth, n.nspname::text AS schema, t.typname::text AS name, t.typnotnull AS not_null,
           t.typdefault AS default_sql,
           EXISTS (SELECT 1 FROM pg_constraint con WHERE con.contypid = t.oid) AS has_constraints
    FROM chain c JOIN pg_type t ON t.oid = c.oid JOIN pg_namespace n ON n.oid = t.typnamespace
    """,
    "q.depth",
)

#: Every index of the table; ``depends``: pg_depend ties it to the column.
_INDEXES = _json_rows(
    """
    SELECT ic.relname::text AS name, pg_get_indexdef(i.indexrelid) AS definition,
           i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS is_valid,
           i.indisreplident AS is_replident,
           i.indnkeyatts::int AS nkeys, i.indkey::text AS indkey,
           i.indexprs::text AS exprs, i.indpred::text AS pred,
           con.conname::text AS constraint_name,
           EXISTS (
               SELECT 1 FROM pg_depend d
               WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                 AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid
                 AND d.refobjsubid = CAST(:attnum AS int4)
           ) AS depends
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    LEFT JOIN pg_constraint con
           ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
    WHERE i.indrelid = CAST(:oid AS oid)
    """,
    'q.name COLLATE "C"',
)

#: Foreign keys from or to the column, without partition clones. PostgreSQL clones a foreign
#: key onto every partition of a partitioned referencing table, and once per partition of a
#: partitioned referenced table; the clones cannot be altered on their own, so only the
#: constraint a user would act on is returned.
_FOREIGN_KEYS = _json_rows(
    """
    SELECT con.conname::text AS name,
           cn.nspname::text AS schema, c.relname::text AS table_name,
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, position)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                 ORDER BY k.position) AS columns,
           rn.nspname::text AS ref_schema, rc.relname::text AS ref_table,
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, position)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
                 ORDER BY k.position) AS ref_columns,
           con.confupdtype::text AS on_update, con.confdeltype::text AS on_delete,
           con.confmatchtype::text AS match_type, con.condeferrable AS deferrable,
           con.condeferred AS deferred, con.convalidated AS valid,
           (con.conrelid = CAST(:oid AS oid)
            AND (CAST(:whole AS bool) OR CAST(:attnum AS int2) = ANY (con.conkey))
            AND (p.oid IS NULL OR p.conrelid <> con.conrelid)) AS outgoing,
           (con.confrelid = CAST(:oid AS oid)
            AND (CAST(:whole AS bool) OR CAST(:attnum AS int2) = ANY (con.confkey))
            AND (p.oid IS NULL OR p.confrelid <> con.confrelid)) AS incoming
    FROM pg_constraint con
    JOIN pg_class c ON c.oid = con.conrelid
    JOIN pg_namespace cn ON cn.oid = c.relnamespace
    JOIN pg_class rc ON rc.oid = con.confrelid
    JOIN pg_namespace rn ON rn.oid = rc.relnamespace
    LEFT JOIN pg_constraint p ON p.oid = con.conparentid
    WHERE con.contype = 'f'
      AND ((con.conrelid = CAST(:oid AS oid)
            AND (CAST(:whole AS bool) OR CAST(:attnum AS int2) = ANY (con.conkey)))
           OR (con.confrelid = CAST(:oid AS oid)
               AND (CAST(:whole AS bool) OR CAST(:attnum AS int2) = ANY (con.confkey))))
    """,
    'q.name COLLATE "C", q.schema COLLATE "C", q.table_name COLLATE "C"',
)

_CHECKS = _json_rows(
    """
    SELECT con.conname::text AS name, pg_get_constraintdef(con.oid) AS definition,
           pg_get_expr(con.conbin, con.conrelid) AS expression,
           con.convalidated AS valid, con.connoinherit AS no_inherit
    FROM pg_constraint con
    WHERE con.contype = 'c' AND con.conrelid = CAST(:oid AS oid)
      AND (CAST(:whole AS bool) OR CAST(:attnum AS int2) = ANY (con.conkey))
    """,
    'q.name COLLATE "C"',
)

_DEPENDENT_VIEWS = _json_rows(
    """
    SELECT DISTINCT vn.nspname::text AS schema, v.relname::text AS name
    FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN pg_class v ON v.oid = r.ev_class
    JOIN pg_namespace vn ON vn.oid = v.relnamespace
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = CAST(:oid AS oid)
      AND (CAST(:whole AS bool) OR d.refobjsubid = CAST(:attnum AS int4))
      AND v.oid <> CAST(:oid AS oid)
    """,
    "q.schema, q.name",
)

#: Policies whose USING or WITH CHECK reads the column. pg_depend is used rather than the
#: expression trees because a policy may contain sub-queries, whose Vars point at other tables
#: with the same varno.
_POLICIES = _json_rows(
    """
    SELECT DISTINCT pol.polname::text AS name
    FROM pg_policy pol
    JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid
    WHERE pol.polrelid = CAST(:oid AS oid)
      AND d.refclassid = 'pg_class'::regclass AND d.refobjid = CAST(:oid AS oid)
      AND (CAST(:whole AS bool) OR d.refobjsubid = CAST(:attnum AS int4))
    """,
    "q.name",
)

#: What DROP COLUMN would refuse to drop: normal dependencies on the column that no automatic
#: one on the same column overrides (views, policies and foreign keys have their own facts).
_DEPENDENTS = _json_rows(
    """
    SELECT DISTINCT
           CASE WHEN r.oid IS NOT NULL THEN 'rule'
                WHEN tg.oid IS NOT NULL THEN 'trigger'
                WHEN ga.attgenerated <> '' THEN 'generated column'
                WHEN pub.oid IS NOT NULL THEN 'publication'
                ELSE 'object' END AS kind,
           COALESCE(r.rulename::text, tg.tgname::text,
                    CASE WHEN ga.attgenerated <> '' THEN ga.attname::text END, pub.pubname::text,
                    pg_describe_object(d.classid, d.objid, d.objsubid)) AS name
    FROM pg_depend d
    LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
    LEFT JOIN pg_trigger tg ON d.classid = 'pg_trigger'::regclass AND tg.oid = d.objid
    LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
    LEFT JOIN pg_attribute ga ON ga.attrelid = ad.adrelid AND ga.attnum = ad.adnum
    LEFT JOIN pg_publication_rel pr ON d.classid = 'pg_publication_rel'::regclass AND pr.oid = d.objid
    LEFT JOIN pg_publication pub ON pub.oid = pr.prpubid
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = CAST(:oid AS oid)
      AND d.refobjsubid = CAST(:attnum AS int4) AND d.deptype = 'n'
      AND d.classid NOT IN ('pg_constraint'::regclass, 'pg_policy'::regclass)
      AND (r.oid IS NULL OR r.ev_class = CAST(:oid AS oid))
      AND NOT EXISTS (
          SELECT 1 FROM pg_depend a
          WHERE a.classid = d.classid AND a.objid = d.objid AND a.refclassid = d.refclassid
            AND a.refobjid = d.refobjid AND a.refobjsubid = d.refobjsubid AND a.deptype IN ('a', 'i')
      )
    """,
    "q.kind, q.name",
)

#: The functions of the table's own triggers, with their source (see :func:`_reads_column`).
_TRIGGER_FUNCTIONS = _json_rows(
    """
    SELECT tg.tgname::text AS trigger, p.oid::regprocedure::text AS function, p.prosrc AS source
    FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
    WHERE tg.tgrelid = CAST(:oid AS oid) AND NOT tg.tgisinternal
    """,
    "q.trigger",
)

_TRIGGERS = _json_rows(
    """
    SELECT tgname::text AS name FROM pg_trigger
    WHERE tgrelid = CAST(:oid AS oid) AND NOT tgisinternal
    """,
    "q.name",
)

_SERVER_VERSION = _json_rows("SELECT current_setting('server_version_num')::int AS version")

#: The leaf partitions' row counts, for a partitioned table.
_PARTITION_ROWS = _json_rows(
    """
    SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::float8 AS total
    FROM pg_partition_tree(CAST(CAST(:oid AS oid) AS regclass)) t
    JOIN pg_class c ON c.oid = t.relid
    WHERE t.isleaf
    """
)

#: Size and live-tuple counter, for a table never analyzed.
_SIZE = _json_rows(
    """
    SELECT (pg_relation_size(CAST(:oid AS oid)) / current_setting('block_size')::int)::bigint AS pages,
           current_setting('block_size')::int AS block_size,
           COALESCE((SELECT n_live_tup FROM pg_stat_all_tables WHERE relid = CAST(:oid AS oid)), 0)::bigint
               AS live
    """
)

#: Table-level grants (to mirror on a view that stands in for the table), its owner and whether
#: row-level security is on (a view must then be ``security_invoker``).
_TABLE_PRIVILEGES = _json_rows(
    """
    SELECT pg_get_userbyid(c.relowner)::text AS owner, c.relrowsecurity AS rls,
           c.relforcerowsecurity AS force_rls,
           (SELECT COALESCE(json_agg(json_build_object(
                       'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                       ELSE pg_get_userbyid(a.grantee)::text END,
                       'privilege', a.privilege_type, 'grantable', a.is_grantable)
                       ORDER BY a.grantee, a.privilege_type), '[]'::json)
            FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) AS grants
    FROM pg_class c WHERE c.oid = CAST(:oid AS oid)
    """
)

#: What depends on the table itself beyond its own parts (columns' defaults, indexes,
#: constraints, triggers, policies, its row type, its owned sequences) and foreign keys:
#: [kind, name] pairs that ``DROP TABLE`` would refuse to drop without CASCADE, or that would
#: silently lose the table (publications): views, materialized views, rules of other relations,
#: SQL-body functions, inheritance children and partitions, publications.
_TABLE_DEPENDENTS = _json_rows(
    """
    SELECT DISTINCT
           CASE WHEN v.relkind = 'v' THEN 'view'
                WHEN v.relkind = 'm' THEN 'materialized view'
                WHEN r.oid IS NOT NULL THEN 'rule'
                WHEN p.oid IS NOT NULL THEN 'function'
                WHEN pub.oid IS NOT NULL THEN 'publication'
                ELSE 'object' END AS kind,
           COALESCE(CASE WHEN v.oid IS NOT NULL THEN format('%I.%I', vn.nspname, v.relname) END,
                    CASE WHEN r.oid IS NOT NULL THEN format('%I on %s', r.rulename, r.ev_class::regclass) END,
                    p.oid::regprocedure::text, quote_ident(pub.pubname),
                    pg_describe_object(d.classid, d.objid, d.objsubid)) AS name
    FROM pg_depend d
    LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
    LEFT JOIN pg_class v ON r.oid IS NOT NULL AND v.oid = r.ev_class AND r.rulename = '_RETURN'
    LEFT JOIN pg_namespace vn ON vn.oid = v.relnamespace
    LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
    LEFT JOIN pg_publication_rel pr ON d.classid = 'pg_publication_rel'::regclass AND pr.oid = d.objid
    LEFT JOIN pg_publication pub ON pub.oid = pr.prpubid
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = CAST(:oid AS oid)
      AND d.deptype = 'n'
      AND d.classid NOT IN ('pg_constraint'::regclass, 'pg_attrdef'::regclass, 'pg_policy'::regclass,
                            'pg_trigger'::regclass, 'pg_class'::regclass)
      AND (r.oid IS NULL OR r.ev_class <> CAST(:oid AS oid))
    UNION
    SELECT 'inheritance child or partition', format('%I.%I', cn.nspname, c.relname)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
    WHERE i.inhparent = CAST(:oid AS oid)
    UNION
    SELECT 'publication', quote_ident(pub.pubname)
    FROM pg_publication_rel pr JOIN pg_publication pub ON pub.oid = pr.prpubid
    WHERE pr.prrelid = CAST(:oid AS oid)
    """,
    "q.kind, q.name",
)


def _qualified_first(rows: Sequence[Row]) -> str | None:
    return qualified(rows[0]["schema"], rows[0]["name"]) if rows else None


def _grant_facts(rows: Sequence[Row]) -> tuple[GrantFact, ...]:
    return tuple(GrantFact(r["grantee"], r["privilege"], bool(r["grantable"])) for r in rows)


def _collation(row: Row) -> str | None:
    if not row["own_collation"] or row["collation"] is None:
        return None
    if row["collation_schema"] == "pg_catalog":
        return q(row["collation"])
    return qualified(row["collation_schema"], row["collation"])


def _var_attnos(node_tree: str | None) -> set[int]:
    if not node_tree:
        return set()
    return {int(attno) for varno, attno in _VAR.findall(node_tree) if varno == "1"}


def _fk(row: Row) -> ForeignKeyFact:
    return ForeignKeyFact(
        name=row["name"],
        schema=row["schema"],
        table=row["table_name"],
        columns=tuple(row["columns"]),
        ref_schema=row["ref_schema"],
        ref_table=row["ref_table"],
        ref_columns=tuple(row["ref_columns"]),
        on_update=FK_ACTIONS.get(row["on_update"], "NO ACTION"),
        on_delete=FK_ACTIONS.get(row["on_delete"], "NO ACTION"),
        match_full=row["match_type"] == "f",
        deferrable=bool(row["deferrable"]),
        initially_deferred=bool(row["deferred"]),
        valid=bool(row["valid"]),
    )


def _check_facts(rows: Sequence[Row]) -> tuple[CheckFact, ...]:
    return tuple(
        CheckFact(
            name=r["name"],
            expression=check_expression(r["definition"]) or r["expression"],
            valid=bool(r["valid"]),
            no_inherit=bool(r["no_inherit"]),
        )
        for r in rows
    )


_CHECK_SUFFIXES = (" NOT VALID", " NO INHERIT", " NOT ENFORCED", " ENFORCED")


def check_expression(definition: str) -> str | None:
    """The boolean expression inside ``CHECK (...)`` of a pg_get_constraintdef() text.

    The flags PostgreSQL appends after the closing parenthesis are dropped: they are
    kept as separate facts, and a revision must be able to re-add them independently.
    """
    text_ = definition.strip()
    stripped = True
    while stripped:
        stripped = False
        for suffix in _CHECK_SUFFIXES:
            if text_.endswith(suffix):
                text_ = text_[: -len(suffix)].rstrip()
                stripped = True
    if not (text_.startswith("CHECK (") and text_.endswith(")")):
        return None
    return text_[len("CHECK (") : -1]


def _qualified_names(rows: Sequence[Row]) -> tuple[str, ...]:
    return tuple(qualified(r["schema"], r["name"]) for r in rows)


def _domain(rows: Sequence[Row]) -> dict[str, Any]:
    """What a domain type does to an insert that leaves the column out, and to ADD COLUMN.

    Domains may be built on domains: the nearest NOT NULL one is named, a default is the
    nearest one (CREATE DOMAIN copies its base domain's), and any constraint in the chain
    makes PostgreSQL check every row when a column of the type is added (a rewrite).
    """
    not_null = next((r for r in rows if r["not_null"]), None)
    return {
        "not_null_domain": qualified(not_null["schema"], not_null["name"]) if not_null else None,
        "domain_constrained": any(r["not_null"] or r["has_constraints"] for r in rows),
        "domain_default": next((r["default_sql"] for r in rows if r["default_sql"] is not None), None),
    }


def _reads_column(source: str, column: str) -> bool:
    """Whether a trigger function's source reads ``NEW.column`` or ``OLD.column``.

    Function bodies are not tracked in pg_depend: once the column is gone such a
    function fails on every write, so a plain reading of the source is better than none.
    """
    spellings = [re.escape('"' + column.replace('"', '""') + '"')]  # quoted: exactly as written
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", column):  # unquoted names fold to lower case
        spellings.append("(?i:" + re.escape(column) + r")(?![\w$])")
    pattern = r"(?<![\w$])(?i:new|old)\s*\.\s*(?:" + "|".join(spellings) + ")"
    return re.search(pattern, source) is not None


def _dependents(rows: Sequence[Row], functions: Sequence[Row], column: str) -> tuple[tuple[str, str], ...]:
    """What DROP COLUMN would refuse to drop (:data:`_DEPENDENTS`), and trigger functions
    that read the column (:data:`_TRIGGER_FUNCTIONS`)."""
    found = [(str(r["kind"]), str(r["name"])) for r in rows]
    for f in functions:
        if f["source"] and _reads_column(f["source"], column):
            found.append(("trigger function", f"{f['function']} of trigger {f['trigger']}"))
    return tuple(found)


def _estimate_parts(relation: Row) -> dict[str, str]:
    """The reads :func:`_row_estimate` needs for this table (none once it was analyzed)."""
    if relation["kind"] == "p":
        return {"partition_rows": _PARTITION_ROWS}
    if relation["reltuples"] < 0:
        return {"size": _SIZE}
    return {}


def _row_estimate(
    conn: Connection, relation: Row, columns: Sequence[Row], read: Mapping[str, Sequence[Row]]
) -> int:
    """The planner's row count, or a cheap stand-in when the table was never analyzed.

    ``reltuples`` is -1 until the first VACUUM/ANALYZE, which is common right after a
    bulk load. Small tables are then counted exactly; big ones are estimated from
    their size and an average row width, the way the planner does, with the
    statistics collector's live-tuple counter as a floor. ``read`` holds the reads of
    :func:`_estimate_parts`.
    """
    if relation["kind"] == "p":
        return int(read["partition_rows"][0]["total"])
    if relation["reltuples"] >= 0:
        return int(relation["reltuples"])
    size = read["size"][0]
    if size["pages"] <= COUNT_MAX_PAGES:
        counted = _scalar(conn, f"SELECT count(*) FROM {qualified(relation['schema'], relation['name'])}")
        return int(counted)
    # Heap tuple header (23 bytes, aligned to 24) + line pointer (4); varlena columns ~32 bytes.
    width = 28 + sum(c["attlen"] if c["attlen"] > 0 else 32 for c in columns)
    per_page = max(1, (int(size["block_size"]) - 24) // width)
    return max(int(size["pages"]) * per_page, int(size["live"]))


#: attnum of "no column": matches no column, no system column and no whole-row reference.
_NO_COLUMN = -32768
#: attnum that stands for every column of the table (whole-table facts).
WHOLE_TABLE = -32767


def read_table_facts(
    conn: Connection, schema: str | None, table: str, column: str | None, *, whole: bool = False
) -> TableFacts:
    """Everything the planner must know about ``column`` and its table, read-only.

    ``schema=None`` resolves the table like an unqualified name in SQL would (first
    match along ``current_schemas(false)``); the facts always carry the real schema.
    ``column=None`` reads the table alone (an operation that adds a column); with
    ``whole`` it reads every index, foreign key (both ways), check, dependent view and
    policy of the table, and its table-level grants (table and index operations).
    """
    relation, columns = _resolve(conn, schema, table)
    oid, schema_name, table_name = int(relation["oid"]), relation["schema"], relation["name"]
    names = {int(c["attnum"]): str(c["name"]) for c in columns}
    if column is None:
        return _table_only(conn, relation, columns, names, whole)
    target = next((c for c in columns if c["name"] == column), None)
    if target is None:
        listed = ", ".join(q(c["name"]) for c in columns[:_COLUMNS_LIMIT])
        if len(columns) > _COLUMNS_LIMIT:
            listed += f", ... ({len(columns)} in all)"
        near = [c["name"] for c in columns if c["name"].lower() == column.lower()]
        hint = f" (did you mean {q(near[0])}?)" if near else f" (columns: {listed or 'none'})"
        raise BadInput(
            f"column {show(None, column)} does not exist in table {show(schema_name, table_name)}{hint}"
        )
    attnum = int(target["attnum"])
    read = _read(
        conn,
        {
            "owned_sequence": _OWNED_SEQUENCE,
            "grants": _GRANTS,
            "domain": _DOMAIN,
            "indexes": _INDEXES,
            "foreign_keys": _FOREIGN_KEYS,
            "checks": _CHECKS,
            "dependent_views": _DEPENDENT_VIEWS,
            "policies": _POLICIES,
            "dependents": _DEPENDENTS,
            "trigger_functions": _TRIGGER_FUNCTIONS,
            "triggers": _TRIGGERS,
            "server_version": _SERVER_VERSION,
            **_estimate_parts(relation),
        },
        {"oid": oid, "attnum": attnum, "whole": False, "owner": int(relation["owner"])},
    )

    column_facts = ColumnFacts(
        name=target["name"],
        type_sql=target["type_sql"],
        nullable=not target["not_null"],
        default=target["default_sql"],
        collation=_collation(target),
        identity=target["identity"] or "",
        generated=target["generated"] or "",
        comment=target["comment"],
        owned_sequence=_qualified_first(read["owned_sequence"]),
        grants=_grant_facts(read["grants"]),
        type_is_builtin=bool(target["type_is_builtin"]),
        **_domain(read["domain"]),
    )

    not_null = {int(c["attnum"]) for c in columns if c["not_null"]}
    primary_key: tuple[str, ...] = ()
    unique_keys: list[tuple[str, ...]] = []
    indexes: list[IndexFact] = []
    replica_identity: str | None = None
    for ix in read["indexes"]:
        attnums = [int(n) for n in ix["indkey"].split()]
        keys = attnums[: ix["nkeys"]]
        expression = ix["exprs"] is not None or 0 in keys
        plain = () if expression else tuple(names[n] for n in keys)
        if ix["is_primary"]:
            primary_key = plain
        elif (
            ix["is_unique"]
            and ix["is_valid"]
            and not expression
            and ix["pred"] is None
            and all(n in not_null for n in keys)
            and plain not in unique_keys
        ):
            unique_keys.append(plain)
        in_nodes = _var_attnos(ix["exprs"]) | _var_attnos(ix["pred"])
        # attnum 0 in indkey is an expression slot; varattno 0 is a whole-row reference.
        if ix["depends"] or attnum in attnums or attnum in in_nodes or 0 in in_nodes:
            indexes.append(_index_fact(ix, names))
            if ix["is_replident"]:
                replica_identity = str(ix["name"])

    fks = read["foreign_keys"]
    return TableFacts(
        schema=schema_name,
        name=table_name,
        column=column_facts,
        columns=tuple(c["name"] for c in columns),
        kind=relation["kind"],
        is_partition=bool(relation["is_partition"]),
        primary_key=primary_key,
        unique_keys=tuple(sorted(unique_keys)),
        row_estimate=max(0, _row_estimate(conn, relation, columns, read)),
        indexes=tuple(indexes),
        foreign_keys=tuple(_fk(r) for r in fks if r["outgoing"]),
        referenced_by=tuple(_fk(r) for r in fks if r["incoming"]),
        checks=_check_facts(read["checks"]),
        dependent_views=_qualified_names(read["dependent_views"]),
        policies=tuple(r["name"] for r in read["policies"]),
        dependents=_dependents(read["dependents"], read["trigger_functions"], column),
        replica_identity_index=replica_identity,
        other_triggers=tuple(r["name"] for r in read["triggers"]),
        server_version_num=int(read["server_version"][0]["version"]),
        extra={"source": "catalog", **read_dependents(conn, oid, attnum)},
    )


def _index_fact(ix: Row, names: dict[int, str]) -> IndexFact:
    """One row of :data:`_INDEXES` as a fact (expression keys leave ``columns`` empty)."""
    keys = [int(n) for n in ix["indkey"].split()][: ix["nkeys"]]
    expression = ix["exprs"] is not None or 0 in keys
    return IndexFact(
        name=ix["name"],
        definition=ix["definition"],
        unique=bool(ix["is_unique"]),
        primary=bool(ix["is_primary"]),
        partial=ix["pred"] is not None,
        expression=expression,
        valid=bool(ix["is_valid"]),
        constraint=ix["constraint_name"],
        columns=() if expression else tuple(names[n] for n in keys),
    )


def _table_only(
    conn: Connection, relation: Row, columns: Sequence[Row], names: dict[int, str], whole: bool
) -> TableFacts:
    """The table's keys and shape, for operations whose column does not exist yet; with
    ``whole``, also the table-wide facts table and index operations plan from (see
    :func:`read_table_facts`). One statement reads all of it."""
    parts = {
        "indexes": _INDEXES,
        "triggers": _TRIGGERS,
        "server_version": _SERVER_VERSION,
        **_estimate_parts(relation),
    }
    if whole:
        parts.update(
            {
                "foreign_keys": _FOREIGN_KEYS,
                "table_privileges": _TABLE_PRIVILEGES,
                "owned_sequences": _OWNED_SEQUENCES,
                "table_dependents": _TABLE_DEPENDENTS,
                "checks": _CHECKS,
                "dependent_views": _DEPENDENT_VIEWS,
                "policies": _POLICIES,
            }
        )
    attnum = WHOLE_TABLE if whole else _NO_COLUMN
    read = _read(conn, parts, {"oid": int(relation["oid"]), "attnum": attnum, "whole": whole})
    not_null = {int(c["attnum"]) for c in columns if c["not_null"]}
    primary_key: tuple[str, ...] = ()
    unique_keys: list[tuple[str, ...]] = []
    for ix in read["indexes"]:
        keys = [int(n) for n in ix["indkey"].split()][: ix["nkeys"]]
        if ix["exprs"] is not None or 0 in keys:
            continue
        plain = tuple(names[n] for n in keys)
        if ix["is_primary"]:
            primary_key = plain
        elif (
            ix["is_unique"]
            and ix["is_valid"]
            and ix["pred"] is None
            and all(n in not_null for n in keys)
            and plain not in unique_keys
        ):
            unique_keys.append(plain)
    facts = TableFacts(
        schema=relation["schema"],
        name=relation["name"],
        column=None,
        columns=tuple(c["name"] for c in columns),
        kind=relation["kind"],
        is_partition=bool(relation["is_partition"]),
        primary_key=primary_key,
        unique_keys=tuple(sorted(unique_keys)),
        row_estimate=max(0, _row_estimate(conn, relation, columns, read)),
        other_triggers=tuple(r["name"] for r in read["triggers"]),
        server_version_num=int(read["server_version"][0]["version"]),
        # Every column's type (as written, and without its modifier) and NOT NULL: constraint
        # operations compare referencing and referenced columns.
        extra={
            "source": "catalog",
            "column_types": {
                c["name"]: [c["type_sql"], c["base_type"], bool(c["not_null"])] for c in columns
            },
        },
    )
    return _whole_table(facts, columns, names, read) if whole else facts


def _whole_table(
    facts: TableFacts, columns: Sequence[Row], names: dict[int, str], read: Mapping[str, Sequence[Row]]
) -> TableFacts:
    """The table-wide facts table and index operations plan from (see read_table_facts), from
    the reads :func:`_table_only` made (every index of the table: the ones its keys came from)."""
    import dataclasses

    indexes = []
    replica_identity: str | None = None
    for ix in read["indexes"]:
        indexes.append(_index_fact(ix, names))
        if ix["is_replident"]:
            replica_identity = str(ix["name"])
    fks = read["foreign_keys"]
    extra = dict(facts.extra)
    extra.update(_table_privileges(read["table_privileges"]))
    extra["table_columns"] = _table_columns(columns, read["owned_sequences"])
    extra["table_dependents"] = [[str(r["kind"]), str(r["name"])] for r in read["table_dependents"]]
    return dataclasses.replace(
        facts,
        indexes=tuple(indexes),
        foreign_keys=tuple(_fk(r) for r in fks if r["outgoing"]),
        referenced_by=tuple(_fk(r) for r in fks if r["incoming"]),
        checks=_check_facts(read["checks"]),
        dependent_views=_qualified_names(read["dependent_views"]),
        policies=tuple(r["name"] for r in read["policies"]),
        replica_identity_index=replica_identity,
        extra=extra,
    )


def _table_privileges(rows: Sequence[Row]) -> dict[str, Any]:
    """:data:`_TABLE_PRIVILEGES` as facts."""
    row = rows[0]
    grants = [dict(g) for g in row["grants"]]
    return {
        "owner": row["owner"],
        "row_security": bool(row["rls"]),
        "force_row_security": bool(row["force_rls"]),
        "table_grants": grants,
    }


def table_of_index(conn: Connection, schema: str | None, index: str) -> tuple[str, str]:
    """(schema, table) of an index named like SQL would resolve it (search_path when no schema)."""
    row = _one(
        conn,
        """
        SELECT n.nspname::text AS schema, t.relname::text AS table_name
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        LEFT JOIN unnest(current_schemas(false)) WITH ORDINALITY AS s(nspname, position) ON s.nspname = n.nspname
        WHERE ic.relname = :index
          AND (CAST(:schema AS text) IS NULL AND s.position IS NOT NULL OR n.nspname = CAST(:schema AS text))
        ORDER BY s.position
        LIMIT 1
        """,
        {"index": index, "schema": schema},
    )
    if row is None:
        where = f" in schema {show(None, schema)}" if schema else " in the search_path"
        raise BadInput(f"index {show(None, index)} does not exist{where}")
    return str(row["schema"]), str(row["table_name"])


def server_facts(conn: Connection, schema: str | None) -> TableFacts:
    """Facts for an operation without a table: the schema it defaults to and the server."""
    row = _one(
        conn,
        """
        SELECT COALESCE(CAST(:schema AS text), current_schema()::text) AS schema,
               CAST(:schema AS text) IS NULL
                   OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = CAST(:schema AS text)) AS found,
               current_setting('server_version_num')::int AS version
        """,
        {"schema": schema},
    )
    assert row is not None
    if not row["found"]:
        raise BadInput(f"schema {show(None, str(schema))} does not exist")
    return TableFacts(
        schema=str(row["schema"]),
        name="",
        server_version_num=int(row["version"]),
        extra={"source": "catalog"},
    )


def relation_kinds(conn: Connection, schema: str, names: Sequence[str]) -> dict[str, str | None]:
    """pg_class.relkind of each name in ``schema`` (None: the name is free): tables, views,
    indexes and sequences share one namespace, so a new table name must be free of all of them."""
    found = {
        str(r["name"]): str(r["kind"])
        for r in _rows(
            conn,
            """
            SELECT c.relname::text AS name, c.relkind::text AS kind
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = :schema AND c.relname = ANY (CAST(:names AS text[]))
            """,
            {"schema": schema, "names": list(names)},
        )
    }
    return {name: found.get(name) for name in names}


def _table_columns(columns: Sequence[Row], sequences: Sequence[Row]) -> list[dict[str, Any]]:
    """Every column as CREATE TABLE needs it (drop-table's downgrade re-creates the table), from
    the columns and :data:`_OWNED_SEQUENCES`."""
    owned = {int(s["attnum"]): qualified(s["schema"], s["name"]) for s in sequences}
    return [
        {
            "name": str(c["name"]),
            "type_sql": str(c["type_sql"]),
            "not_null": bool(c["not_null"]),
            "default": c["default_sql"],
            "collation": _collation(c),
            "identity": c["identity"] or "",
            "generated": c["generated"] or "",
            "sequence": None if c["identity"] else owned.get(int(c["attnum"])),
        }
        for c in columns
    ]


def table_columns(conn: Connection, oid: int) -> list[dict[str, Any]]:
    """Every column of the table ``oid`` as CREATE TABLE needs it."""
    columns = _rows(conn, f"{_COLUMNS.format(oid='CAST(:oid AS oid)')} ORDER BY a.attnum", {"oid": oid})
    return _table_columns(columns, _read(conn, {"s": _OWNED_SEQUENCES}, {"oid": oid})["s"])


def table_dependents(conn: Connection, oid: int) -> list[list[str]]:
    """What depends on the table ``oid`` itself (see :data:`_TABLE_DEPENDENTS`)."""
    rows = _read(conn, {"d": _TABLE_DEPENDENTS}, {"oid": oid})["d"]
    return [[str(r["kind"]), str(r["name"])] for r in rows]
