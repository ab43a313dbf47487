"""Swaps announced to live instances: the database side of prepared-statement safety.

A column that changes type under its own name changes the result type of statements the
running code prepared before (psycopg 3 prepares after five executions). PostgreSQL then
fails each of them with ``cached plan must not change result type``: on an autocommit
connection at every later execution. So before such a step the contract announces it
(:func:`announce`), each live instance that maps the table confirms that its connections
stopped preparing and will not use what they prepared (:func:`ack`, from the reporter's
heartbeat), the step runs, and :func:`finish` lets reporters prepare again.

An instance that cannot confirm (a reporter given only a URL, an ``ecm`` older than the
swap table, a process that hangs) holds the swap until it answers or its registration
expires; past :func:`deadline` the contract is refused (exit 3) with the instance named,
unless forced. Every age is the database clock's, as in the registry.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import Refused
from ..guard import TTL_INTERVALS
from ..log import get_logger
from ..settings import control_schema
from ..sql.quoting import q
from . import registry

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = get_logger("expandcontract.swaps")

#: A reporter checks for swaps at every heartbeat; an instance gets two of its intervals and
#: this much on top to answer before the contract gives up on it.
GRACE_SECONDS = 5.0
#: An announcement older than this is a leftover of a killed contract, not a pending swap.
STALE_SECONDS = 3600.0
POLL_SECONDS = 0.2


def _t(name: str) -> str:
    return f"{q(control_schema())}.{q(name)}"


def available(conn: Connection) -> bool:
    """Whether the control schema has the swap tables (revision 0004)."""
    from sqlalchemy import text

    return conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": _t("swap_acks")}).scalar() is True


# -- the contract's side -----------------------------------------------------------------


def announce(conn: Connection, swap_id: str, table: str) -> None:
    """Record (again) that ``table`` is about to swap; earlier confirmations no longer count."""
    from sqlalchemy import text

    conn.execute(
        text(
            f"INSERT INTO {_t('swaps')} (swap_id, table_name) VALUES (:id, :table) "
            "ON CONFLICT (swap_id) DO UPDATE SET table_name = EXCLUDED.table_name, "
            "announced_at = now(), finished_at = NULL"
        ),
        {"id": swap_id, "table": table},
    )
    conn.execute(text(f"DELETE FROM {_t('swap_acks')} WHERE swap_id = :id"), {"id": swap_id})


def finish(conn: Connection, swap_id: str) -> None:
    from sqlalchemy import text

    conn.execute(text(f"UPDATE {_t('swaps')} SET finished_at = now() WHERE swap_id = :id"), {"id": swap_id})


@dataclass(frozen=True)
class Waiting:
    """A live instance that maps the table and has not confirmed (or confirmed unprotected)."""

    instance_id: str
    app: str
    version: str
    host: str
    pid: int
    interval_s: float
    detail: str | None  # why it could not protect itself, when it said so

    def describe(self) -> str:
        who = f"{self.app} {self.version} on {self.host} (pid {self.pid}, instance {self.instance_id[:8]})"
        if self.detail:
            return f"{who} cannot stop its prepared statements: {self.detail}"
        return f"{who} has not confirmed that it stopped preparing statements"


def waiting(conn: Connection, swap_id: str, table: str) -> list[Waiting]:
    """Live instances that map ``table`` and have not confirmed the swap as protected."""
    from sqlalchemy import text

    rows = conn.execute(
        text(
            f"""
            SELECT i.id::text AS id, i.app, i.version, i.host, i.pid, i.interval_s, a.detail
            FROM {registry.table()} i
            LEFT JOIN {_t("swap_acks")} a ON a.swap_id = :id AND a.instance_id = i.id
            WHERE i.deregistered_at IS NULL
              AND i.last_heartbeat >= clock_timestamp() - make_interval(secs => :k * i.interval_s)
              AND i.uses ? :table
              AND (a.instance_id IS NULL OR NOT a.protected)
              AND NOT (i.host = :host AND i.pid = :pid)  -- a reporter env.py started in this process
            ORDER BY i.app, i.version, i.host, i.pid
            """
        ),
        {"id": swap_id, "table": table, "k": TTL_INTERVALS, "host": socket.gethostname(), "pid": os.getpid()},
    ).mappings()
    return [
        Waiting(
            r["id"], r["app"], r["version"], r["host"], int(r["pid"]), float(r["interval_s"]), r["detail"]
        )
        for r in rows
    ]


def deadline(instances: list[Waiting]) -> float:
    """Seconds from the announcement after which a silent instance refuses the swap."""
    return max((2 * w.interval_s for w in instances), default=0.0) + GRACE_SECONDS


def wait_for_acks(conn: Connection, swap_id: str, table: str, *, force: bool = False) -> dict[str, Any]:
    """Block until every live instance that maps ``table`` confirmed; Refused past the deadline.

    An instance that confirmed *unprotected* will not change its answer: refused at once.
    """
    started = time.monotonic()
    while True:
        left = waiting(conn, swap_id, table)
        if not left:
            return {"waited_s": round(time.monotonic() - started, 3)}
        unprotected = [w for w in left if w.detail]
        elapsed = time.monotonic() - started
        if unprotected or elapsed > deadline(left):
            reasons = [w.describe() for w in left]
            if force:
                log.warning("swap_forced", swap=swap_id, table=table, reasons=reasons)
                return {"waited_s": round(elapsed, 3), "forced": reasons}
            raise Refused(
                f"{table} keeps its name through a type change, and statements prepared by running code "
                "would fail after it: not every live instance confirmed it stopped preparing",
                [
                    *reasons,
                    "an instance confirms from its LiveReporter's heartbeat when the reporter was given the "
                    "application's Engine (psycopg 3, psycopg2 or asyncpg); restart it with ecm >= 0.4, or "
                    "pass --force-contract PLAN --reason TEXT to accept errors from its prepared statements",
                ],
            )
        time.sleep(POLL_SECONDS)


# -- the reporter's side -----------------------------------------------------------------


def pending(conn: Connection) -> list[tuple[str, str]]:
    """(swap_id, table) of swaps announced and not finished (recent ones only)."""
    from sqlalchemy import text

    rows = conn.execute(
        text(
            f"SELECT swap_id, table_name FROM {_t('swaps')} WHERE finished_at IS NULL "
            "AND announced_at >= clock_timestamp() - make_interval(secs => :stale) ORDER BY swap_id"
        ),
        {"stale": STALE_SECONDS},
    )
    return [(str(a), str(b)) for a, b in rows]


def ack(conn: Connection, swap_id: str, instance_id: str, *, protected: bool, detail: str | None) -> None:
    from sqlalchemy import text

    conn.execute(
        text(
            f"INSERT INTO {_t('swap_acks')} (swap_id, instance_id, protected, detail) "
            "VALUES (:id, CAST(:instance AS uuid), :protected, :detail) "
            "ON CONFLICT (swap_id, instance_id) DO UPDATE SET protected = EXCLUDED.protected, "
            "detail = EXCLUDED.detail, acked_at = now()"
        ),
        {"id": swap_id, "instance": instance_id, "protected": protected, "detail": detail},
    )
