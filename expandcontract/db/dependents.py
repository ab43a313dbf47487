"""Definitions of the views and policies that read a column, for the plan to carry them through.

A column operation that must drop or retype the column cannot leave them in place
(PostgreSQL refuses), so the plan drops and re-creates them in the transaction that
needs it. That needs their whole definition frozen in the revision: the view text as
``pg_get_viewdef`` prints it, its options, owner, grants and comments, every view built
on top of it (they go down with it), and each policy's command, roles and expressions.

Whatever would be lost by a drop and is not carried (a trigger or rule on a view, a
function or policy elsewhere that reads the view, a materialized view) is listed in
``uncarried`` so that the operation refuses with the names, before anything is written.
Only SELECTs; keyed by OID and attnum like the rest of :mod:`expandcontract.db.catalog`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["read_dependents"]

#: Every view on the column, and every view on those, with its depth (longest path from the
#: table): dropping in descending and creating in ascending depth respects every dependency.
_VIEWS = """
WITH RECURSIVE tree(oid, depth, direct) AS (
    SELECT DISTINCT r.ev_class, 1, true
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = CAST(:oid AS oid) AND d.refobjsubid = CAST(:attnum AS int4)
      AND r.ev_class <> CAST(:oid AS oid)
    UNION ALL
    SELECT r.ev_class, t.depth + 1, false
    FROM tree t
    JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                    AND d.classid = 'pg_rewrite'::regclass
    JOIN pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> t.oid AND t.depth < 100
)
SELECT c.oid::int8 AS oid, max(t.depth) AS depth, bool_or(t.direct) AS direct,
       n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind,
       pg_get_viewdef(c.oid) AS definition,
       COALESCE(c.reloptions, '{}')::text[] AS options,
       pg_get_userbyid(c.relowner)::text AS owner,
       obj_description(c.oid, 'pg_class') AS comment,
       (SELECT COALESCE(json_agg(json_build_object(
                   'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END,
                   'privilege', a.privilege_type, 'grantable', a.is_grantable)
                   ORDER BY a.grantee, a.privilege_type), '[]'::json)
        FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) AS grants,
       (SELECT COALESCE(json_agg(json_build_object(
                   'name', at.attname::text, 'comment', col_description(c.oid, at.attnum))
                   ORDER BY at.attnum), '[]'::json)
        FROM pg_attribute at WHERE at.attrelid = c.oid AND at.attnum > 0 AND NOT at.attisdropped) AS columns
FROM tree t
JOIN pg_class c ON c.oid = t.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.reloptions, c.relowner, c.relacl
ORDER BY 2, 4, 5
"""

#: What a DROP VIEW would take along, or refuse over, that re-creating the view does not bring back.
_UNCARRIED = """
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) AS name
FROM pg_depend d
JOIN pg_class v ON v.oid = ANY(CAST(:views AS oid[]))
WHERE ((d.refclassid = 'pg_class'::regclass AND d.refobjid = v.oid)
       OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = v.reltype))
  AND d.deptype IN ('n', 'a')
  AND NOT (d.classid = 'pg_rewrite'::regclass AND EXISTS (
        SELECT 1 FROM pg_rewrite r
        WHERE r.oid = d.objid AND r.rulename = '_RETURN' AND r.ev_class = ANY(CAST(:views AS oid[]))))
  AND NOT (d.classid = 'pg_type'::regclass AND d.objid = v.reltype)
UNION
SELECT DISTINCT format('column privileges on %s', v.oid::regclass)
FROM pg_attribute at JOIN pg_class v ON v.oid = at.attrelid
WHERE v.oid = ANY(CAST(:views AS oid[])) AND at.attacl IS NOT NULL AND at.attnum > 0
UNION
SELECT DISTINCT pg_describe_object('pg_policy'::regclass, pol.oid, 0)
FROM pg_policy pol
JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid
WHERE pol.polrelid <> CAST(:oid AS oid) AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = CAST(:oid AS oid) AND d.refobjsubid = CAST(:attnum AS int4)
ORDER BY 1
"""

_POLICIES = """
SELECT pol.polname::text AS name, pol.polcmd::text AS command, pol.polpermissive AS permissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END
             FROM unnest(pol.polroles) WITH ORDINALITY AS u(r, i) ORDER BY i)::text[] AS roles,
       pg_get_expr(pol.polqual, pol.polrelid) AS using,
       pg_get_expr(pol.polwithcheck, pol.polrelid) AS with_check
FROM pg_policy pol
WHERE pol.polrelid = CAST(:oid AS oid) AND EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_policy'::regclass AND d.objid = pol.oid AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = CAST(:oid AS oid) AND d.refobjsubid = CAST(:attnum AS int4))
ORDER BY 1
"""


def _rows(conn: Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from sqlalchemy import text

    return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]


def read_dependents(conn: Connection, oid: int, attnum: int) -> dict[str, Any]:
    """``{"view_defs": [...], "policy_defs": [...], "uncarried": [...]}`` for ``TableFacts.extra``;
    empty when nothing reads the column, so facts of ordinary columns stay as they were."""
    # An empty search_path while reading: every name in the definitions comes out schema-qualified,
    # so the revision re-creates them alike whatever search_path it later runs with.
    path = _rows(conn, "SELECT current_setting('search_path') AS path", {})[0]["path"]
    _rows(conn, "SELECT set_config('search_path', '', false) AS path", {})
    try:
        views = _rows(conn, _VIEWS, {"oid": oid, "attnum": attnum})
        policies = _rows(conn, _POLICIES, {"oid": oid, "attnum": attnum})
        params = {"oid": oid, "attnum": attnum, "views": [int(v["oid"]) for v in views]}
        uncarried = _rows(conn, _UNCARRIED, params)
    finally:
        _rows(conn, "SELECT set_config('search_path', :path, false) AS path", {"path": path})
    if not (views or policies or uncarried):
        return {}
    view_defs = []
    for v in views:
        v.pop("oid")
        v["depth"] = int(v["depth"])
        v["options"] = list(v["options"])
        view_defs.append(v)
    for p in policies:
        p["roles"] = list(p["roles"])
    return {
        "view_defs": view_defs,
        "policy_defs": policies,
        "uncarried": [str(r["name"]) for r in uncarried],
    }
