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
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..db.executor import UniqueBuildFailed
from ..errors import OperationalError, first_line
from ..log import get_logger
from .reconnect import connection_lost, reconnect_timeout

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..plan.model import Step
    from .spec import BackfillSpec

log = get_logger("expandcontract.backfill")


class _Lost(OperationalError):
    """The build's connection went away; the build is tried again on a new one."""


def build_after_copy(engine: Engine, spec: BackfillSpec) -> float:
    """Build ``spec.indexes`` (each skipped when already valid); returns the seconds taken."""
    if not spec.indexes:
        return 0.0
    started = time.monotonic()
    timeout = reconnect_timeout()
    for step in spec.index_steps():
        # When the current outage began: reset once a new connection holds the build's lock, so
        # a second failover hours into a long build gets the whole timeout again.
        lost_at: list[float] = []
        while True:
            try:
                _build_one(engine, spec.plan_id, step, connected=lost_at.clear)
                break
            except UniqueBuildFailed as exc:
                raise OperationalError(
                    f"backfill of {spec.plan_id}: every row is copied, but the unique index {step.index} "
                    f"cannot be built: {exc.cause}. The new column holds two equal values that the old "
                    "column's unique index did not see as equal (a conversion that is not one-to-one, or "
                    "rows written with the trigger bypassed): find them with `ecm verify "
                    f"{spec.plan_id}` and a GROUP BY on the new column, fix them, and run the backfill "
                    "again (it copies nothing more and builds the index), or roll the expand back"
                ) from exc
            except Exception as exc:
                if not (isinstance(exc, _Lost) or connection_lost(exc)):
                    raise
                if not lost_at:
                    lost_at.append(time.monotonic())
                if time.monotonic() - lost_at[0] > timeout:
                    raise
                log.warning(
                    "backfill_index_connection_lost",
                    plan_id=spec.plan_id,
                    index=step.index,
                    error=str(exc)[:200],
                )
                time.sleep(min(2.0, 0.2 + (time.monotonic() - lost_at[0]) / 4))
    return round(time.monotonic() - started, 3)


def _build_one(engine: Engine, plan_id: str, step: Step, *, connected: Callable[[], None]) -> None:
    from ..db import executor
    from ..db.control import lock_key
    from ..db.engine import connect

    started = time.monotonic()
    with connect(engine) as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        key = lock_key("index:" + plan_id)
        try:
            # Another runner may be building this very index for minutes: wait for it whatever
            # lock_timeout or statement_timeout the role carries (the build sets both to 0 too).
            conn.exec_driver_sql(
                "SELECT set_config('lock_timeout', '0', false), set_config('statement_timeout', '0', false)"
            )
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
            connected()
            outcome = executor.execute(conn, step)
        except UniqueBuildFailed:
            raise
        except Exception as exc:
            # Once SQLAlchemy has invalidated the connection (the server went away), what the
            # executor's own retries raise on it no longer looks like a lost connection.
            if conn.invalidated or connection_lost(exc):
                raise _Lost(f"connection lost while building {step.index}: {first_line(exc)}") from exc
            raise
        finally:
            if not conn.invalidated and not conn.closed:
                # A session that is going away takes its locks with it; a pooled one is left
                # without our timeouts.
                with contextlib.suppress(Exception):
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
                    executor.reset(conn)
    log.info(
        "index_built" if outcome == "ran" else "index_present",
        plan_id=plan_id,
        index=step.index,
        seconds=round(time.monotonic() - started, 3),
    )
