"""The application's side of a swap: stop using prepared statements while a column changes type.

A statement prepared before a column changes type under its own name fails after it
(``cached plan must not change result type``). When a swap is announced, the reporter
calls :meth:`PreparedStatements.pause`: every connection of the engines it watches stops
using what it prepared and prepares nothing new, at once and from any thread (it only sets
an attribute the driver reads before each execution). When the swap is finished,
:meth:`resume` lets connections prepare again: a connection that prepared statements
before the pause is replaced by a fresh one the next time the pool hands it out (raising
SQLAlchemy's ``DisconnectionError`` at checkout, the pool's own way to retire a connection),
and one opened during the pause simply gets its threshold back.

Drivers: psycopg 3 (sync and async) prepares after ``prepare_threshold`` executions, and
setting it to ``None`` disables its cache; SQLAlchemy's asyncpg dialect keeps its own cache
per connection, switched off the same way and invalidated on resume; psycopg2 never
prepares server-side. Connections are tracked when the pool opens or hands them out, so a
connection checked out before the reporter started and never returned is not seen.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from ..log import get_logger

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

log = get_logger("expandcontract.prepared")

#: Drivers whose connections prepare server-side statements we can switch off.
PREPARING = {"psycopg", "psycopg_async", "asyncpg"}
#: Drivers that never prepare server-side statements: nothing to do.
NOT_PREPARING = {"psycopg2", "psycopg2cffi", "pg8000"}


class _State:
    """What one connection had before the pause."""

    __slots__ = ("paused", "saved", "stale")

    def __init__(self) -> None:
        self.paused = False
        self.saved: Any = None
        self.stale = False  # prepared before the pause: replaced at checkout on resume


class PreparedStatements:
    """Pause and resume prepared statements on the connections of watched engines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id(dbapi connection) -> (connection, state); SQLAlchemy's async adapters cannot be
        # weakly referenced, so entries leave when the pool closes or invalidates them.
        self._conns: dict[int, tuple[Any, _State]] = {}
        self._engines: list[Engine] = []
        self._paused = False
        self._unwatched: list[str] = []  # why some engine cannot be protected

    # -- setup ------------------------------------------------------------------------

    def watch(self, bind: Engine | AsyncEngine) -> None:
        """Track the connections of ``bind`` (idempotent)."""
        from sqlalchemy import event

        # An AsyncEngine's pool is its sync engine's (no import of the asyncio extension here).
        engine = cast("Engine", getattr(bind, "sync_engine", bind))
        driver = engine.dialect.driver
        with self._lock:
            if any(e is engine for e in self._engines):
                return
            self._engines.append(engine)
        if driver in NOT_PREPARING:
            return
        if driver not in PREPARING:
            self._unwatched.append(f"its engine's driver {driver!r} is not one ecm knows how to pause")
            return
        event.listen(engine.pool, "connect", self._on_connect)
        event.listen(engine.pool, "checkout", self._on_checkout)
        for name in ("close", "close_detached", "invalidate"):
            event.listen(engine.pool, name, self._forget)

    def unprotected(self, *, has_url_only: bool) -> str | None:
        """Why this process cannot promise a swap is safe, or None when it can."""
        if self._unwatched:
            return "; ".join(self._unwatched)
        if has_url_only and not self._engines:
            return "its LiveReporter was given a URL, not the application's Engine"
        return None

    # -- the swap ---------------------------------------------------------------------

    def pause(self) -> int:
        """Stop preparing and using prepared statements on every known connection; returns how many."""
        with self._lock:
            self._paused = True
            conns = list(self._conns.values())
        for dbapi_conn, state in conns:
            self._pause_one(dbapi_conn, state, fresh=False)
        return len(conns)

    def resume(self) -> None:
        """Prepare again: connections that prepared before the pause are replaced at checkout."""
        with self._lock:
            self._paused = False
            conns = list(self._conns.values())
        for engine in self._engines:
            if engine.dialect.driver == "asyncpg":
                # Statements SQLAlchemy's asyncpg cache holds from before are prepared again.
                engine.dialect._invalidate_schema_cache()  # type: ignore[attr-defined]
        for dbapi_conn, state in conns:
            if state.paused and not state.stale:
                self._restore(dbapi_conn, state)

    @property
    def paused(self) -> bool:
        return self._paused

    # -- pool events ------------------------------------------------------------------

    def _on_connect(self, dbapi_conn: Any, record: Any) -> None:
        state = self._state(dbapi_conn)
        if self._paused:
            self._pause_one(dbapi_conn, state, fresh=True)

    def _forget(self, dbapi_conn: Any, *args: Any) -> None:
        with self._lock:
            self._conns.pop(id(dbapi_conn), None)

    def _on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        from sqlalchemy.exc import DisconnectionError

        state = self._state(dbapi_conn)
        if self._paused:
            self._pause_one(dbapi_conn, state, fresh=False)
        elif state.paused:
            if state.stale:
                # What it prepared before the swap would fail now: the pool opens a fresh one.
                raise DisconnectionError("ecm: retiring a connection that prepared statements before a swap")
            self._restore(dbapi_conn, state)

    # -- per connection ---------------------------------------------------------------

    def _state(self, dbapi_conn: Any) -> _State:
        with self._lock:
            entry = self._conns.get(id(dbapi_conn))
            if entry is None or entry[0] is not dbapi_conn:
                entry = self._conns[id(dbapi_conn)] = (dbapi_conn, _State())
            return entry[1]

    @staticmethod
    def _pause_one(dbapi_conn: Any, state: _State, *, fresh: bool) -> None:
        if state.paused:
            return
        if hasattr(dbapi_conn, "_prepared_statement_cache"):  # SQLAlchemy's asyncpg adapter
            state.saved = dbapi_conn._prepared_statement_cache
            dbapi_conn._prepared_statement_cache = None
            state.stale = False  # its cache is invalidated on resume instead
        else:
            driver_conn = getattr(dbapi_conn, "driver_connection", dbapi_conn)  # psycopg async adapter
            if not hasattr(driver_conn, "prepare_threshold"):
                return
            state.saved = driver_conn.prepare_threshold
            driver_conn.prepare_threshold = None
            # Only a connection that holds prepared statements must be retired on resume.
            names = getattr(getattr(driver_conn, "_prepared", None), "_names", True)
            state.stale = not fresh and bool(names)
        state.paused = True

    @staticmethod
    def _restore(dbapi_conn: Any, state: _State) -> None:
        if hasattr(dbapi_conn, "_prepared_statement_cache"):
            dbapi_conn._prepared_statement_cache = state.saved
        else:
            getattr(dbapi_conn, "driver_connection", dbapi_conn).prepare_threshold = state.saved
        state.paused = False
        state.saved = None
