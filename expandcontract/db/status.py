"""Read-only view of the control schema for ``ecm status``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..settings import control_schema
from ..sql.quoting import literal, q
from . import control
from .engine import server_version

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def _table_exists(conn: Connection, schema: str, table: str) -> bool:
    name = literal(f"{q(schema)}.{q(table)}")
    return conn.exec_driver_sql(f"SELECT to_regclass({name})").scalar() is not None


def _rows(conn: Connection, sql: str) -> list[dict[str, Any]]:
    result = conn.exec_driver_sql(sql)
    out = []
    for row in result.mappings():
        out.append({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()})
    return out


def collect(conn: Connection) -> dict[str, Any]:
    schema = control_schema()
    version = control.current_revision(conn, schema)
    head = control.head_revision()
    s = q(schema)
    plans: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    if version is not None and _table_exists(conn, schema, "plans"):
        plans = _rows(
            conn,
            f"""
            SELECT p.plan_id, p.operation, p.table_schema, p.table_name, p.phase,
                   p.backfill_status, p.backfill_rows_estimate,
                   COALESCE((SELECT sum(c.rows_done) FROM {s}.backfill_checkpoints c
                             WHERE c.plan_id = p.plan_id), 0)::bigint AS backfill_rows_done,
                   p.created_at, p.updated_at
            FROM {s}.plans p ORDER BY p.created_at, p.plan_id
            """,
        )
        instances = _instances(conn)
    return {
        "server_version": server_version(conn),
        "control_schema": {
            "name": schema,
            "version": version,
            "head": head,
            "initialized": version is not None,
            "up_to_date": version == head,
        },
        "plans": plans,
        "instances": instances,
    }


def _instances(conn: Connection) -> list[dict[str, Any]]:
    """Live and recently gone instances, each with its state as the guard would judge it."""
    from ..guard import parse_ttl, state
    from ..live import registry
    from ..settings import get

    try:
        ttl = parse_ttl(get("ECM_LIVE_TTL"))
    except ValueError:
        ttl = None
    out = []
    for row in registry.read(conn, ttl=ttl):
        instance = registry.to_instance(row)
        doc = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        doc["state"] = state(instance, ttl)
        out.append(doc)
    return out
