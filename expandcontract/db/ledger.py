"""The control schema's plans and ledger: what ran, when, by whom, with what outcome.

Writes happen on an autocommit connection, one statement each, so the record of a
step survives the step failing.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import TYPE_CHECKING, Any

from ..settings import control_schema
from ..sql.quoting import q

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _s() -> str:
    return q(control_schema())


def upsert_plan(
    conn: Connection, *, plan_id: str, operation: str, schema: str, table: str, spec: dict[str, Any]
) -> None:
    from sqlalchemy import text

    conn.execute(
        text(
            f"""
            INSERT INTO {_s()}.plans (plan_id, operation, table_schema, table_name, spec, backfill_rows_estimate)
            VALUES (:plan_id, :operation, :schema, :table, CAST(:spec AS jsonb), :estimate)
            ON CONFLICT (plan_id) DO UPDATE SET spec = EXCLUDED.spec, updated_at = now()
            """
        ),
        {
            "plan_id": plan_id,
            "operation": operation,
            "schema": schema,
            "table": table,
            "spec": json.dumps(spec),
            "estimate": (spec.get("backfill") or {}).get("rows_estimate"),
        },
    )


def set_phase(conn: Connection, plan_id: str, phase: str, **columns: Any) -> None:
    from sqlalchemy import text

    assignments = "".join(f", {q(k)} = :{k}" for k in columns)
    conn.execute(
        text(
            f"UPDATE {_s()}.plans SET phase = :phase, updated_at = now(){assignments} WHERE plan_id = :plan_id"
        ),
        {"plan_id": plan_id, "phase": phase, **columns},
    )


def set_backfill_status(conn: Connection, plan_id: str, status: str) -> None:
    from sqlalchemy import text

    conn.execute(
        text(
            f"UPDATE {_s()}.plans SET backfill_status = :status, updated_at = now() WHERE plan_id = :plan_id"
        ),
        {"plan_id": plan_id, "status": status},
    )


def get_plan(conn: Connection, plan_id: str) -> dict[str, Any] | None:
    from sqlalchemy import text

    row = (
        conn.execute(text(f"SELECT * FROM {_s()}.plans WHERE plan_id = :p"), {"p": plan_id})
        .mappings()
        .first()
    )
    return dict(row) if row else None


def plans(conn: Connection) -> list[dict[str, Any]]:
    from sqlalchemy import text

    exists = conn.exec_driver_sql(f"SELECT to_regclass('{control_schema()}.plans')").scalar()
    if exists is None:
        return []
    return [dict(r) for r in conn.execute(text(f"SELECT * FROM {_s()}.plans ORDER BY created_at")).mappings()]


def start(
    conn: Connection, *, plan_id: str | None, revision: str | None, phase: str, step: str | None
) -> int:
    from sqlalchemy import text

    return int(
        conn.execute(
            text(
                f"INSERT INTO {_s()}.ledger (plan_id, revision, phase, step, actor) "
                "VALUES (:plan_id, :revision, :phase, :step, :actor) RETURNING id"
            ),
            {"plan_id": plan_id, "revision": revision, "phase": phase, "step": step, "actor": actor()},
        ).scalar_one()
    )


def finish(conn: Connection, entry: int, outcome: str, detail: dict[str, Any] | None = None) -> None:
    from sqlalchemy import text

    conn.execute(
        text(
            f"UPDATE {_s()}.ledger SET finished_at = clock_timestamp(), outcome = :outcome, "
            "detail = detail || CAST(:detail AS jsonb) WHERE id = :id"
        ),
        {"id": entry, "outcome": outcome, "detail": json.dumps(detail or {}, default=str)},
    )


def record(
    conn: Connection,
    *,
    plan_id: str | None,
    revision: str | None,
    phase: str,
    step: str | None,
    outcome: str,
    detail: dict[str, Any] | None = None,
) -> None:
    entry = start(conn, plan_id=plan_id, revision=revision, phase=phase, step=step)
    finish(conn, entry, outcome, detail)
