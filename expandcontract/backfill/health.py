"""Health signals the backfill checks between batches, and the seam to plug in more.

A probe answers one question: "should the backfill pause right now, and why?" It
returns a short reason for the log, or ``None``. The database probe looks at what
GitLab's batched migrations look at (replication lag, autovacuum on the table, lock
queues); anything else (an external metrics API, a maintenance window, a test that
wants to see a pause) is a callable with the same signature, passed as ``probe=`` or
``--probe module:attribute``, so tests trip the throttle without mocking PostgreSQL.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BadInput
from .spec import BackfillSpec

if TYPE_CHECKING:
    import psycopg


@dataclass
class ProbeContext:
    """What a probe may look at: the worker's own connection (idle, outside a transaction)."""

    conn: psycopg.Connection[Any]
    spec: BackfillSpec
    table_oid: int
    worker: str
    extra: dict[str, Any] = field(default_factory=dict)


class HealthProbe(Protocol):
    """Returns why the backfill should pause now, or None to go on."""

    def __call__(self, ctx: ProbeContext) -> str | None: ...


@dataclass
class DatabaseProbe:
    """The default probe: one catalog query, at most every ``interval_s`` per worker.

    * replication lag: the largest ``replay_lag`` in ``pg_stat_replication`` above
      ``max_replication_lag_s`` (None disables). Needs ``pg_monitor`` to see lag columns.
    * autovacuum on the table: ``"wraparound"`` pauses only for an anti-wraparound
      vacuum (which must not be starved), ``"any"`` for every autovacuum, ``"off"``
      never. Reading the autovacuum's query text needs ``pg_read_all_stats``.
    * lock queue: another session waiting for a table-level lock on the table (for
      example a DDL statement queued behind a batch); pausing lets it through.
    """

    max_replication_lag_s: float | None = 30.0
    autovacuum: str = "wraparound"
    lock_waiters: bool = True
    interval_s: float = 1.0
    _last: float = field(default=-1e9, repr=False)
    _last_reason: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.autovacuum not in ("wraparound", "any", "off"):
            raise BadInput(f"autovacuum throttle must be wraparound, any or off, not {self.autovacuum!r}")

    def __call__(self, ctx: ProbeContext) -> str | None:
        now = time.monotonic()
        # While paused, a fresh answer every call; while healthy, rate-limited.
        if self._last_reason is None and now - self._last < self.interval_s:
            return None
        self._last = now
        self._last_reason = self.check(ctx)
        return self._last_reason

    def check(self, ctx: ProbeContext) -> str | None:
        row = ctx.conn.execute(
            """
            SELECT
              (SELECT max(extract(epoch FROM replay_lag))::float8 FROM pg_stat_replication),
              (SELECT string_agg(a.query, '; ') FROM pg_stat_progress_vacuum v
                 JOIN pg_stat_activity a ON a.pid = v.pid
                WHERE v.relid = %(oid)s AND a.backend_type = 'autovacuum worker'
                  AND (%(any)s OR a.query LIKE '%%to prevent wraparound%%')),
              (SELECT count(*) FROM pg_locks l
                WHERE l.locktype = 'relation' AND l.relation = %(oid)s AND NOT l.granted)::int
            """,
            {"oid": ctx.table_oid, "any": self.autovacuum == "any"},
        ).fetchone()
        assert row is not None
        lag, vacuum, waiters = row
        if self.max_replication_lag_s is not None and lag is not None and lag > self.max_replication_lag_s:
            return f"replication lag {lag:.1f} s exceeds {self.max_replication_lag_s:g} s"
        if self.autovacuum != "off" and vacuum:
            return f"autovacuum running on the table ({vacuum})"
        if self.lock_waiters and waiters:
            return f"{waiters} session(s) waiting for a lock on the table"
        return None


@dataclass
class AllProbes:
    """Asks each probe in turn; the first reason wins."""

    probes: Sequence[HealthProbe]

    def __call__(self, ctx: ProbeContext) -> str | None:
        for probe in self.probes:
            reason = probe(ctx)
            if reason:
                return reason
        return None


def load_probe(ref: str) -> HealthProbe:
    """Import ``package.module:attribute``; a class is instantiated without arguments."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise BadInput(f"--probe must look like package.module:callable, not {ref!r}")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"cannot load health probe {ref!r}: {exc}") from exc
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise BadInput(f"health probe {ref!r} is not callable")
    probe: HealthProbe = obj
    return probe
