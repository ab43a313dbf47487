"""The instances registry in the control schema: writes for reporters, reads for the guard.

Every age is measured by the database clock (``clock_timestamp() - last_heartbeat``, and
heartbeats write ``now()``), so hosts with skewed clocks cannot make a dead instance look
live or a live one look dead. Reads use ``clock_timestamp()`` rather than ``now()``:
``now()`` is frozen at transaction start, and a contract may check from inside a
transaction that began a while ago.

The ``role`` column came with control-schema revision 0002. Both writes and reads check
for it, so an application whose library is newer than the database's control schema (and
whose role may not ALTER it) still reports, and a newer ``ecm`` still reads an older
registry: rows without a role are servers, as every reporter was before roles existed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..guard import TTL_INTERVALS, Instance
from ..settings import control_schema
from ..sql.quoting import q

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

TABLE = "instances"
#: ``ecm instances`` lists gone instances this long after their TTL ran out.
RECENT_SECONDS = 3600.0
#: Rows of instances gone this long are deleted when a reporter registers.
PRUNE_AFTER_SECONDS = 7 * 86400.0


def table(schema: str | None = None) -> str:
    return f"{q(schema or control_schema())}.{q(TABLE)}"


def has_role_column(conn: Connection) -> bool:
    """Whether the registry has revision 0002's ``role`` column."""
    from sqlalchemy import text

    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass(:t) "
                "AND attname = 'role' AND attnum > 0 AND NOT attisdropped)"
            ),
            {"t": table()},
        ).scalar()
    )


def register(
    conn: Connection,
    *,
    instance_id: str,
    app: str,
    version: str,
    host: str,
    pid: int,
    interval_s: float,
    uses: Mapping[str, Sequence[str]],
    role: str = "server",
) -> Any:
    """Insert (or revive, after the row was pruned) one instance; returns its started_at.

    Without the ``role`` column (a control schema older than this library) the row is
    written without it rather than not at all: reporting matters more than the role.
    """
    from sqlalchemy import text

    with_role = has_role_column(conn)
    return conn.execute(
        text(
            f"""
            INSERT INTO {table()} AS i
                (id, app, version, host, pid, started_at, last_heartbeat, interval_s, uses
                 {", role" if with_role else ""})
            VALUES (CAST(:id AS uuid), :app, :version, :host, :pid, now(), now(), :interval_s,
                    CAST(:uses AS jsonb) {", :role" if with_role else ""})
            ON CONFLICT (id) DO UPDATE
               SET last_heartbeat = now(), deregistered_at = NULL, interval_s = EXCLUDED.interval_s,
                   uses = EXCLUDED.uses {", role = EXCLUDED.role" if with_role else ""}
            RETURNING started_at
            """
        ),
        {
            "id": instance_id,
            "app": app,
            "version": version,
            "host": host,
            "pid": pid,
            "interval_s": float(interval_s),
            "uses": json.dumps({t: list(c) for t, c in uses.items()}),
            "role": role,
        },
    ).scalar_one()


def heartbeat(conn: Connection, instance_id: str) -> bool:
    """Refresh the heartbeat; False when the row is gone (the caller then registers again)."""
    from sqlalchemy import text

    result = conn.execute(
        text(
            f"UPDATE {table()} SET last_heartbeat = now() "
            "WHERE id = CAST(:id AS uuid) AND deregistered_at IS NULL"
        ),
        {"id": instance_id},
    )
    return bool(result.rowcount)


def deregister(conn: Connection, instance_id: str) -> None:
    """Mark the instance gone; the row stays so ``ecm instances`` can show it."""
    from sqlalchemy import text

    conn.execute(
        text(
            f"UPDATE {table()} SET deregistered_at = now() "
            "WHERE id = CAST(:id AS uuid) AND deregistered_at IS NULL"
        ),
        {"id": instance_id},
    )


def prune(conn: Connection, older_than_s: float = PRUNE_AFTER_SECONDS) -> int:
    """Forget instances gone for long; the heartbeat index keeps this cheap."""
    from sqlalchemy import text

    result = conn.execute(
        text(
            f"DELETE FROM {table()} WHERE last_heartbeat < now() - make_interval(secs => :age) "
            "AND coalesce(deregistered_at, last_heartbeat) < now() - make_interval(secs => :age)"
        ),
        {"age": float(older_than_s)},
    )
    return int(result.rowcount or 0)


def read(
    conn: Connection, *, ttl: float | None = None, recent_s: float | None = RECENT_SECONDS
) -> list[dict[str, Any]]:
    """Instances that are live or went away at most ``recent_s`` after their TTL (all when None).

    Rows carry the database-clock ages ``seconds_since_heartbeat`` and
    ``seconds_since_deregistered`` (null while registered) next to the stored columns.
    Errors propagate: the guard turns them into a fail-closed refusal.
    """
    from sqlalchemy import text

    role = "role" if has_role_column(conn) else "'server'::text"
    result = conn.execute(
        text(
            f"""
            SELECT id::text AS id, app, version, host, pid, {role} AS role, started_at,
                   last_heartbeat, deregistered_at, interval_s, uses,
                   extract(epoch FROM clock_timestamp() - last_heartbeat)::float8
                       AS seconds_since_heartbeat,
                   extract(epoch FROM clock_timestamp() - deregistered_at)::float8
                       AS seconds_since_deregistered
            FROM {table()}
            WHERE CAST(:recent AS float8) IS NULL
               OR coalesce(deregistered_at, last_heartbeat) >= clock_timestamp()
                  - make_interval(secs => GREATEST(:k * interval_s, coalesce(CAST(:ttl AS float8), 0))
                                          + CAST(:recent AS float8))
            ORDER BY app, version, host, pid, started_at
            """
        ),
        {"ttl": ttl, "recent": recent_s, "k": TTL_INTERVALS},
    )
    return [dict(row) for row in result.mappings()]


def to_instance(row: Mapping[str, Any]) -> Instance:
    uses = row.get("uses") or {}
    if isinstance(uses, str):
        uses = json.loads(uses)
    if not isinstance(uses, dict):
        raise ValueError(f"instance {row['id']}: uses is not a JSON object")
    since_dereg = row.get("seconds_since_deregistered")
    return Instance(
        id=str(row["id"]),
        app=str(row["app"]),
        version=str(row["version"]),
        host=str(row["host"]),
        pid=int(row["pid"]),
        seconds_since_heartbeat=float(row["seconds_since_heartbeat"]),
        interval_s=float(row["interval_s"]),
        uses={str(t): tuple(str(c) for c in cols) for t, cols in uses.items()},
        seconds_since_deregistered=None if since_dereg is None else float(since_dereg),
        role=str(row.get("role") or "server"),
    )
