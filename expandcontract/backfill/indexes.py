"""The copied column's indexes, built CONCURRENTLY once the backfill has copied every row.

Built before the copy (in the expand), every batch would update each index row by row and
no batch update could stay HOT; built after it, each is one sort of the finished column.
Until the build, nothing needs them: the new column only ever equals the old one (whose own
indexes enforce uniqueness) and no code reads it yet (``schema_ready`` reports them missing).

Each index is one executor step: an INVALID leftover of an interrupted build is dropped and
built again, a failed unique build is dropped at once. Two runners finishing the same plan
at once take turns on a session advisory lock, so neither drops the other's build in progress
(an index being built concurrently looks INVALID until it is done). A server restart during a
build is ridden through like the batches: reconnect within ``ECM_RECONNECT_TIMEOUT`` and build
again.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from ..log import get_logger
from .reconnect import connection_lost, reconnect_timeout

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..plan.model import Step
    from .spec import BackfillSpec

log = get_logger("expandcontract.backfill")


class _Lost(Exception):
    """The build's connection went away; the build is tried again on a new one."""


def build_after_copy(engine: Engine, spec: BackfillSpec) -> float:
    """Build ``spec.indexes`` (each skipped when already valid); returns the seconds taken."""
    if not spec.indexes:
        return 0.0
    started = time.monotonic()
    timeout = reconnect_timeout()
    for step in spec.index_steps():
        lost_at: float | None = None
        while True:
            try:
                _build_one(engine, spec.plan_id, step)
                break
            except Exception as exc:
                if not (isinstance(exc, _Lost) or connection_lost(exc)):
                    raise
                lost_at = lost_at if lost_at is not None else time.monotonic()
                if time.monotonic() - lost_at > timeout:
                    raise
                log.warning(
                    "backfill_index_connection_lost",
                    plan_id=spec.plan_id,
                    index=step.index,
                    error=str(exc)[:200],
                )
                time.sleep(min(2.0, 0.2 + (time.monotonic() - lost_at) / 4))
    return round(time.monotonic() - started, 3)


def _build_one(engine: Engine, plan_id: str, step: Step) -> None:
    from ..db import executor
    from ..db.control import lock_key
    from ..db.engine import connect

    started = time.monotonic()
    with connect(engine) as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        key = lock_key("index:" + plan_id)
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
        try:
            outcome = executor.execute(conn, step)
        except Exception as exc:
            # Once SQLAlchemy has invalidated the connection (the server went away), what the
            # executor's own retries raise on it no longer looks like a lost connection.
            if conn.invalidated or connection_lost(exc):
                raise _Lost(str(exc)) from exc
            raise
        finally:
            if not conn.invalidated and not conn.closed:
                # A session that is going away takes its locks with it.
                with contextlib.suppress(Exception):
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
    log.info(
        "index_built" if outcome == "ran" else "index_present",
        plan_id=plan_id,
        index=step.index,
        seconds=round(time.monotonic() - started, 3),
    )
