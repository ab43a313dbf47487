"""Riding through a server restart or failover: which errors mean the server went away, and a
connection that comes back within ``ECM_RECONNECT_TIMEOUT`` seconds.

A failover takes seconds to a minute and tends to happen at night, when nobody is there to
rerun a backfill. Everything the backfill writes is already resumable (checkpoints commit
with their batch), so surviving one only needs a new connection and the state that lived
in the old session taken again; the callers do the latter.

Connection loss is recognised by what psycopg raises, never by message text (which is
translated with the server's ``lc_messages``): SQLSTATE class 08 (connection exception),
57P01 admin_shutdown (a fast shutdown, ``pg_terminate_backend``), 57P02 crash_shutdown
(another backend crashed), 57P03 cannot_connect_now (starting up or shutting down), or a
``psycopg.OperationalError`` without a SQLSTATE (libpq's own: refused, reset, closed), which
the server never sends.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BadInput, OperationalError
from ..log import get_logger

if TYPE_CHECKING:
    import psycopg
    from tenacity import RetryCallState

log = get_logger("expandcontract.backfill")

#: The variable, and the default: a managed service's failover usually completes within it.
RECONNECT_TIMEOUT_ENV = "ECM_RECONNECT_TIMEOUT"
DEFAULT_RECONNECT_TIMEOUT_S = 60.0

#: admin_shutdown, crash_shutdown, cannot_connect_now (the whole of class 08 counts too).
LOST_STATES = frozenset({"57P01", "57P02", "57P03"})

#: Backoff between attempts: from 0.2 s, doubling, at most 2 s, plus up to 0.2 s of jitter so
#: that the workers of several processes do not all knock at the same instant.
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 2.0
BACKOFF_JITTER_S = 0.2

_T = TypeVar("_T")


class ServerUnreachable(OperationalError):
    """The server stayed away longer than the reconnect timeout; the checkpoints are intact."""


def reconnect_timeout() -> float:
    """Seconds to keep trying; 0 turns reconnecting off. Read at the start of a run, so that a
    malformed value fails at once rather than in the middle of an outage."""
    raw = os.environ.get(RECONNECT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_RECONNECT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"{RECONNECT_TIMEOUT_ENV} must be a number of seconds (0 or more), not {raw!r}")
    return value


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the session is gone, not that a statement failed.

    SQLAlchemy keeps the driver's exception in ``.orig``; ecm's own errors keep it as their
    ``__cause__``. Only explicit causes are followed: an unrelated error raised while a loss was
    being handled must not pass for one.
    """
    import psycopg

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, psycopg.Error):
            state = _sqlstate(current)
            if state is not None:
                return state.startswith("08") or state in LOST_STATES
            return isinstance(current, psycopg.OperationalError)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def reconnect(
    connect: Callable[[], psycopg.Connection[Any]],
    *,
    plan_id: str,
    who: str,
    cause: BaseException,
    timeout: float,
    stop: threading.Event | None = None,
) -> tuple[psycopg.Connection[Any], float]:
    """A new connection from ``connect`` within ``timeout`` s of losing the old one: (conn, outage s).

    Raises ServerUnreachable when the time is up, the last connection error when ``stop`` is
    set meanwhile (the run is ending anyway), and any other error at once (bad credentials
    after a failover are not an outage).
    """
    from tenacity import (
        Retrying,
        retry_if_exception,
        stop_after_delay,
        stop_when_event_set,
        wait_exponential_jitter,
    )

    started = time.monotonic()
    log.warning(
        "backfill_connection_lost",
        plan_id=plan_id,
        worker=who,
        sqlstate=_sqlstate(cause),
        error=_first_line(cause),
        reconnect_timeout_s=timeout,
    )
    if timeout <= 0:
        raise cause
    backoff = wait_exponential_jitter(initial=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S, jitter=BACKOFF_JITTER_S)

    def wait(state: RetryCallState) -> float:
        # Never sleep past the deadline: the last attempt is made when the time is up.
        return max(0.0, min(backoff(state), started + timeout - time.monotonic()))

    def attempt_failed(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        log.info(
            "backfill_reconnect_attempt",
            plan_id=plan_id,
            worker=who,
            attempt=state.attempt_number,
            error=_first_line(failure) if failure is not None else None,
            next_attempt_in_s=round(state.upcoming_sleep, 2),
        )

    def sleep(seconds: float) -> None:
        if stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    stops = stop_after_delay(timeout)
    retrying = Retrying(
        stop=(stops | stop_when_event_set(stop)) if stop is not None else stops,
        wait=wait,
        retry=retry_if_exception(connection_lost),
        sleep=sleep,
        before_sleep=attempt_failed,
        reraise=True,
    )
    try:
        conn = retrying(connect)
    except Exception as exc:
        if (stop is not None and stop.is_set()) or not connection_lost(exc):
            raise
        outage = time.monotonic() - started
        log.error(
            "backfill_server_unreachable",
            plan_id=plan_id,
            worker=who,
            outage_s=round(outage, 1),
            reconnect_timeout_s=timeout,
            error=_first_line(exc),
        )
        raise ServerUnreachable(
            f"backfill of {plan_id} stopped: the server was unreachable for {outage:.0f} s "
            f"({RECONNECT_TIMEOUT_ENV}={timeout:g}; last error: {_first_line(exc)}); "
            "run it again to resume from its checkpoints"
        ) from exc
    outage = time.monotonic() - started
    log.info("backfill_reconnected", plan_id=plan_id, worker=who, outage_s=round(outage, 2))
    return conn, outage


class Link:
    """One connection of a run that is replaced, within the timeout, when the server goes away.

    Whatever lived in the old session (locks, settings, leases) is the caller's to take again:
    ``connect`` runs on every new connection, so session setup belongs there.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        *,
        plan_id: str,
        who: str,
        timeout: float,
        stop: threading.Event | None = None,
    ) -> None:
        self._connect = connect
        self.plan_id = plan_id
        self.who = who
        self.timeout = timeout
        self.stop = stop
        self.outages: list[float] = []
        self._conn: psycopg.Connection[Any] | None = connect()
        self._lost_logged = False

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise OperationalError(f"backfill of {self.plan_id}: no connection to the server")
        return self._conn

    @property
    def current(self) -> psycopg.Connection[Any] | None:
        """The connection, or None during an outage."""
        return self._conn

    @property
    def usable(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def replace(self, cause: BaseException) -> psycopg.Connection[Any]:
        """Drop the lost connection and wait (bounded) for a new one."""
        self.close()
        self._conn, outage = reconnect(
            self._connect,
            plan_id=self.plan_id,
            who=self.who,
            cause=cause,
            timeout=self.timeout,
            stop=self.stop,
        )
        self.outages.append(outage)
        self._lost_logged = False
        return self._conn

    def call(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``fn(conn)``, run again on a new connection after a loss; ``fn`` must be safe to repeat."""
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self.replace(OperationalError("the connection is closed"))
                return fn(self.conn)
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                self.replace(exc)

    def try_call(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T | None:
        """``fn(conn)``, or None while the server is away (one connection attempt per call, no wait).

        For what can be skipped during an outage (a progress reading) and must not hold up
        the caller, which keeps watching its workers meanwhile.
        """
        try:
            if self._conn is None or self._conn.closed:
                self.close()
                self._conn = self._connect()
                self._lost_logged = False
            return fn(self._conn)
        except Exception as exc:
            if not connection_lost(exc):
                raise
            if not self._lost_logged:
                log.warning(
                    "backfill_connection_lost",
                    plan_id=self.plan_id,
                    worker=self.who,
                    sqlstate=_sqlstate(exc),
                    error=_first_line(exc),
                )
                self._lost_logged = True
            self.close()
            return None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a connection the server already dropped
                self._conn.close()
            self._conn = None
