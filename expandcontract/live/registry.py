"""The instances registry in the control schema: writes for reporters, reads for the guard.

Every age is measured by the database clock (``clock_timestamp() - last_heartbeat``, and
heartbeats write ``now()``), so hosts with skewed clocks cannot make a dead instance look
live or a live one look dead. Reads use ``clock_timestamp()`` rather than ``now()``:
``now()`` is frozen at transaction start, and a contract may check from inside a
transaction that began a while ago.

The ``role`` column came with control-schema revision 0002, ``types`` with 0003. Both
writes and reads check for them, so an application whose library is newer than the
database's control schema (and whose role may not ALTER it) still reports, and a newer
``ecm`` still reads an older registry: rows without a role are servers, as every reporter
was before roles existed; rows without types are from reporters that registered none, and
the guard cannot tell how they map a retyped column (it still knows what they map).

``types`` is ``{"schema.table": {column: {"type": "INTEGER", "nullable": false}}}``. A
malformed value makes that one instance's types unknown ("cannot tell" where a contract
retypes a column it maps) rather than the whole registry unreadable: names, which every
contract needs, are still read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..guard import TTL_INTERVALS, Instance, MappedColumn
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


def optional_columns(conn: Connection) -> set[str]:
    """Which of the columns later control-schema revisions added the registry has:
    ``role`` (0002), ``types`` (0003)."""
    from sqlalchemy import text

    return {
        str(name)
        for name in conn.execute(
            text(
                "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass(:t) "
                "AND attname IN ('role', 'types') AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": table()},
        ).scalars()
    }


def has_role_column(conn: Connection) -> bool:
    """Whether the registry has revision 0002's ``role`` column."""
    return "role" in optional_columns(conn)


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
    types: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> Any:
    """Insert (or revive, after the row was pruned) one instance; returns its started_at.

    Without the ``role`` or ``types`` column (a control schema older than this library)
    the row is written without it rather than not at all: reporting matters more.
    ``types`` None is written as NULL: "registered no types".
    """
    from sqlalchemy import text

    present = optional_columns(conn)
    extra = [c for c in ("role", "types") if c in present]
    names = "".join(f", {c}" for c in extra)
    values = "".join(", :role" if c == "role" else ", CAST(:types AS jsonb)" for c in extra)
    updates = "".join(f", {c} = EXCLUDED.{c}" for c in extra)
    return conn.execute(
        text(
            f"""
            INSERT INTO {table()} AS i
                (id, app, version, host, pid, started_at, last_heartbeat, interval_s, uses{names})
            VALUES (CAST(:id AS uuid), :app, :version, :host, :pid, now(), now(), :interval_s,
                    CAST(:uses AS jsonb){values})
            ON CONFLICT (id) DO UPDATE
               SET last_heartbeat = now(), deregistered_at = NULL, interval_s = EXCLUDED.interval_s,
                   uses = EXCLUDED.uses{updates}
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
            "types": None if types is None else json.dumps(types),
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

    present = optional_columns(conn)
    role = "role" if "role" in present else "'server'::text"
    types = "types" if "types" in present else "NULL::jsonb"
    result = conn.execute(
        text(
            f"""
            SELECT id::text AS id, app, version, host, pid, {role} AS role, started_at,
                   last_heartbeat, deregistered_at, interval_s, uses, {types} AS types,
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
        columns=parse_types(row.get("types")),
    )


def parse_types(value: Any) -> dict[str, dict[str, MappedColumn]] | None:
    """The registered ``types``; None when absent or malformed (the guard cannot tell)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    out: dict[str, dict[str, MappedColumn]] = {}
    for table_name, columns in value.items():
        if not isinstance(columns, dict):
            return None
        for column, spec in columns.items():
            if not isinstance(spec, dict):
                return None
            type_ = spec.get("type")
            nullable = spec.get("nullable")
            out.setdefault(str(table_name), {})[str(column)] = MappedColumn(
                type=type_ if isinstance(type_, str) and type_.strip() else None,
                nullable=nullable if isinstance(nullable, bool) else None,
                unique=_unique_keys(spec.get("unique")),
            )
    return out


def _unique_keys(value: Any) -> tuple[tuple[str, ...], ...] | None:
    """A column's registered unique keys; None (cannot tell) when absent (older reporters) or malformed."""
    if not isinstance(value, list):
        return None
    keys = []
    for key in value:
        if not (isinstance(key, list) and key and all(isinstance(c, str) for c in key)):
            return None
        keys.append(tuple(key))
    return tuple(keys)
