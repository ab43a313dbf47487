"""Lock-safe execution of plan steps on an autocommit connection.

Every short DDL step runs with a session ``lock_timeout`` and is retried with
exponential backoff and jitter (tenacity): an ACCESS EXCLUSIVE request queued behind
a long transaction would otherwise block every reader behind it. No lock is held
across a sleep, because each attempt is its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import OperationalError, first_line
from ..log import get_logger
from ..plan.model import Step
from ..settings import get
from ..sql.quoting import literal

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = get_logger("expandcontract.executor")

#: SQLSTATEs worth another attempt: lock_not_available, deadlock_detected, serialization_failure.
RETRYABLE = {"55P03", "40P01", "40001"}


@dataclass(frozen=True)
class Timeouts:
    lock_timeout: str
    statement_timeout: str
    attempts: int

    @classmethod
    def from_env(cls) -> Timeouts:
        try:
            attempts = max(1, int(get("ECM_DDL_RETRIES")))
        except ValueError:
            attempts = 10
        return cls(get("ECM_LOCK_TIMEOUT"), get("ECM_STATEMENT_TIMEOUT"), attempts)


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)


def _run(conn: Connection, sql: str) -> Any:
    """Step SQL goes to the server as written: with no parameters, so the driver never reads a
    ``%`` in it (a default, a fill, a hostile name) as a placeholder."""
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


def _set(conn: Connection, name: str, value: str) -> None:
    _run(conn, f"SELECT set_config({literal(name)}, {literal(value)}, false)")


def _below_deadlock_timeout(conn: Connection) -> None:
    """Keep a DDL step's lock wait under half the server's ``deadlock_timeout``.

    A statement that locks two tables (a foreign key: the referencing table, then the
    referenced one) can hold the first while it queues for the second behind an application
    transaction that, in turn, queues for the first (an ``ON UPDATE CASCADE`` write). The
    deadlock check runs in whichever backend has waited ``deadlock_timeout`` first, and that
    one is cancelled: without this cap it can be the application's. Measured in the
    conformance suite (``deadlock detected`` on new code's update during rename-column's
    contract). Giving up earlier costs one retry with backoff; ``deadlock_timeout`` itself
    needs a superuser to change, so the cap follows it instead.
    """
    _run(
        conn,
        "SELECT set_config('lock_timeout', (d.setting::int / 2)::text, false) "
        "FROM pg_catalog.pg_settings d, pg_catalog.pg_settings l "
        "WHERE d.name = 'deadlock_timeout' AND l.name = 'lock_timeout' "
        "AND (l.setting::int = 0 OR l.setting::int > d.setting::int / 2)",
    )


def reset(conn: Connection) -> None:
    """Leave the session as we found it: later migrations in the same run must not inherit our timeouts."""
    _run(conn, "RESET lock_timeout")
    _run(conn, "RESET statement_timeout")


def already_done(conn: Connection, step: Step) -> bool:
    if not step.skip_if:
        return False
    return bool(_run(conn, step.skip_if).scalar())


def _index_state(conn: Connection, index: str) -> bool | None:
    """True valid, False INVALID (a leftover of a failed CONCURRENTLY build), None absent."""
    row = _run(
        conn, f"SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass({literal(index)})"
    ).first()
    return None if row is None else bool(row[0])


class UniqueBuildFailed(OperationalError):
    """A concurrent unique build met a duplicate key (one written while it was built): exit 1."""

    def __init__(self, step: Step, error: str, dropped: bool) -> None:
        self.cause = error
        left = (
            f"the half-built index {step.index} was dropped at once"
            if dropped
            else f"no leftover of {step.index} remained"
        )
        super().__init__(
            f"step {step.name!r} failed: {error}; a duplicate key was written while the index was being "
            f"built, so it cannot be unique yet; {left}. Remove the duplicates (or stop the code writing "
            "them), then run the phase again: its precheck counts them first"
        )


def _drop_leftover(conn: Connection, step: Step) -> bool:
    """Drop what a failed CONCURRENTLY build left, at once.

    A failed build leaves its index in the catalog: INVALID, and, when the failure came
    before the index was marked ready, not even that far. A unique one keeps enforcing
    uniqueness on every insert and update until it is dropped, so waiting for the next
    attempt (or a human) would turn the duplicate that failed the build into failing
    writes of that key. Returns whether something was dropped; a failure to drop is
    logged and left to the next attempt's INVALID-index repair.
    """
    from sqlalchemy import exc as sa_exc

    assert step.index is not None
    try:
        if _index_state(conn, step.index) is not False:
            return False
        _run(conn, f"DROP INDEX CONCURRENTLY IF EXISTS {step.index}")
    except sa_exc.DBAPIError as exc:
        log.warning("invalid_index_not_dropped", index=step.index, step=step.name, error=first_line(exc))
        return False
    log.warning("failed_build_dropped", index=step.index, step=step.name)
    return True


def execute(conn: Connection, step: Step, timeouts: Timeouts | None = None) -> str:
    """Run one step; returns "ran" or "skipped". Raises OperationalError after the last attempt."""
    from sqlalchemy import exc as sa_exc
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential_jitter,
    )

    timeouts = timeouts or Timeouts.from_env()
    concurrent = step.kind == "concurrent"
    attempts = 3 if concurrent else timeouts.attempts

    def retryable(exc: BaseException) -> bool:
        if not isinstance(exc, sa_exc.DBAPIError):
            return False
        if concurrent:  # a failed CONCURRENTLY build is cleaned up and retried, whatever the cause
            # ... except what another attempt cannot change: a missing object, bad SQL, a
            # duplicate, or rows that violate the constraint being validated.
            return _sqlstate(exc) not in {"42P01", "42703", "42601", "42883", "23505", "23514", "23503"}
        return _sqlstate(exc) in RETRYABLE

    def attempt() -> str:
        if concurrent:
            # CREATE INDEX CONCURRENTLY waits for old snapshots through lock waits: a short
            # lock_timeout would fail it after the whole build. It blocks no reads or writes.
            _set(conn, "lock_timeout", "0")
            _set(conn, "statement_timeout", "0")
        else:
            _set(conn, "lock_timeout", timeouts.lock_timeout)
            _below_deadlock_timeout(conn)
            _set(conn, "statement_timeout", timeouts.statement_timeout)
        if already_done(conn, step):
            return "skipped"
        if step.index:
            state = _index_state(conn, step.index)
            if state is True:
                return "skipped"
            if state is False:
                log.warning("invalid_index_dropped", index=step.index, step=step.name)
                _run(conn, f"DROP INDEX CONCURRENTLY IF EXISTS {step.index}")
        try:
            _run(conn, step.sql)
        except sa_exc.DBAPIError as exc:
            if step.index:
                dropped = _drop_leftover(conn, step)
                if _sqlstate(exc) == "23505":
                    raise UniqueBuildFailed(step, first_line(exc), dropped) from exc
            raise
        return "ran"

    def before_sleep(state: object) -> None:
        outcome = getattr(state, "outcome", None)
        exc = outcome.exception() if outcome is not None else None
        log.warning(
            "step_retry",
            step=step.name,
            attempt=getattr(state, "attempt_number", None),
            error=first_line(exc) if exc else None,
        )

    try:
        for try_ in Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.2),
            retry=retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with try_:
                return attempt()
    except UniqueBuildFailed:
        raise
    except RetryError as exc:  # pragma: no cover - reraise=True makes this unreachable
        raise OperationalError(f"step {step.name!r} failed: {exc}") from exc
    except sa_exc.DBAPIError as exc:
        hint = ""
        if _sqlstate(exc) in RETRYABLE:
            hint = (
                f" after {attempts} attempts (lock_timeout {timeouts.lock_timeout}); a long-running "
                "transaction probably holds a lock on the table: let it finish, then run the phase again"
            )
        raise OperationalError(f"step {step.name!r} failed: {first_line(exc)}{hint}") from exc
    raise AssertionError("unreachable")
