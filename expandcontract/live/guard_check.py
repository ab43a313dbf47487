"""The database side of the guard: the seam contract runners and contract revisions call.

:func:`check_contract` never raises for "cannot tell": a missing control schema, an
unreadable registry or a failing clock query each become a refusal that says why,
because a guard that errors out is too easily retried with the guard switched off, and
one that allows on error lets a contract break running code.

Type names (a retyping plan's old and new types, and the types instances registered for
the columns it retypes) are resolved by this same server, in the same read: the pure
decision compares what PostgreSQL says they are, never their spelling. A name the server
cannot resolve makes the instances that map it "cannot tell", which holds the contract.

The checking process itself (this host, this pid) is never live code for its own check:
``ecm upgrade`` loads the project's ``env.py``, which may import the application and
start its reporter, and that instance would otherwise hold the contract ecm is running.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BadInput, first_line
from ..guard import (
    Break,
    Decision,
    GuardInput,
    Instance,
    SqlType,
    decide,
    parse_ttl,
    refuse_unknown,
    type_names,
)
from ..log import get_logger
from ..settings import control_schema, get
from ..sql.quoting import q
from . import registry
from .types import resolve as resolve_types

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = get_logger("expandcontract.guard")

OverrideKind = Literal["force-contract", "allow-no-reporters"]
_OUTCOMES: dict[str, str] = {"force-contract": "forced", "allow-no-reporters": "allowed-no-reporters"}
#: How long after their TTL gone instances are still read (only for the decision's context).
_READ_SLACK_SECONDS = 60.0


def _read(
    conn: Connection, ttl: float | None, breaks: Sequence[Break] = ()
) -> tuple[list[Instance], dict[str, SqlType | None]] | str:
    """The registry as Instances and the type names in play resolved, or why it could not be read."""
    from sqlalchemy import text

    schema = control_schema()
    try:
        conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    except Exception as exc:
        return f"cannot read the database clock: {first_line(exc)}"
    try:
        has_schema = conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :s)"), {"s": schema}
        ).scalar_one()
        if not has_schema:
            return (
                f"control schema {schema} is missing (no application has registered and `ecm init` "
                "never ran here), so nothing shows which code is live"
            )
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": registry.table(schema)}).scalar() is None:
            return f"live-instance registry {schema}.{registry.TABLE} is missing; run `ecm init`"
        rows = registry.read(conn, ttl=ttl, recent_s=_READ_SLACK_SECONDS)
        instances = [registry.to_instance(row) for row in rows]
    except Exception as exc:
        return f"cannot read the live-instance registry {schema}.{registry.TABLE}: {first_line(exc)}"
    names = type_names(GuardInput(breaks=tuple(breaks)), instances)
    return instances, (resolve_types(conn, names) if names else {})


def current_process() -> tuple[str, int]:
    """This process as the registry names it: the host and pid a reporter here registers."""
    return socket.gethostname(), os.getpid()


def _autocommit(conn: Connection) -> bool:
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))


def check_contract(
    conn: Connection,
    *,
    removes: Mapping[str, Sequence[str]],
    plan_id: str | None = None,
    allow_no_reporters: bool = False,
    backfill_problems: Sequence[str] = (),
    breaks: Sequence[Break | Mapping[str, Any]] = (),
) -> Decision:
    """Whether removing ``removes`` (``{"schema.table": [columns]}``) and breaking
    ``breaks`` (retyped columns, columns made NOT NULL; :class:`Break` or a plan's dicts)
    may run now.

    Works inside the caller's transaction (reads under a savepoint, so a failed read
    leaves that transaction usable) or outside one (reads in a transaction it ends).
    Also the check for an expand's downgrade: pass the new shape as ``removes``. Build
    both arguments from a plan with :func:`expandcontract.guard.guard_input`.
    """
    try:
        ttl = parse_ttl(get("ECM_LIVE_TTL"))
    except ValueError as exc:
        return refuse_unknown(str(exc))
    try:
        parsed = tuple(b if isinstance(b, Break) else Break.from_json(b) for b in breaks)
    except BadInput as exc:
        return refuse_unknown(str(exc))

    outer = conn.in_transaction()
    instances: tuple[list[Instance], dict[str, SqlType | None]] | str
    try:
        # In autocommit mode (Alembic's autocommit_block) there is no transaction to protect,
        # and SAVEPOINT would fail; the caller's SQLAlchemy-level transaction is left alone.
        autocommit = _autocommit(conn)
        savepoint = conn.begin_nested() if outer and not autocommit else None
    except Exception as exc:
        return refuse_unknown(f"cannot read the live-instance registry: {first_line(exc)}")
    try:
        instances = _read(conn, ttl, parsed)
    finally:
        try:
            if savepoint is not None:
                savepoint.rollback()
            elif not outer:
                conn.rollback()
        except Exception as exc:  # the read already failed or the connection died: stay closed
            instances = f"cannot read the live-instance registry: {first_line(exc)}"

    if isinstance(instances, str):
        log.warning("guard_fail_closed", plan_id=plan_id, reason=instances)
        return refuse_unknown(instances)
    found, types = instances
    decision = decide(
        removes,
        found,
        ttl=ttl,
        backfill_problems=backfill_problems,
        allow_no_reporters=allow_no_reporters,
        current_process=current_process(),
        breaks=parsed,
        types=types,
    )
    if decision.ignored:
        log.info(
            "guard_ignored_own_process",
            plan_id=plan_id,
            pid=os.getpid(),
            instances=[f"{i.app} {i.version} ({i.role})" for i in decision.ignored],
        )
    log.info(
        "guard_decision",
        plan_id=plan_id,
        allowed=decision.allowed,
        reasons=decision.reasons,
        live=len(decision.live),
        blocking=len(decision.blocking),
        cannot_tell=decision.cannot_tell,
    )
    return decision


def _os_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry and no USER in a container
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def record_override(
    conn: Connection,
    *,
    plan_id: str,
    kind: OverrideKind,
    reason: str | None,
    decision: Decision,
    revision: str | None = None,
    phase: str = "contract",
) -> None:
    """Write who overrode the guard, when and why into the ledger; never silent.

    Runs in the caller's transaction and commits nothing: commit it together with the
    contract it allowed, so the ledger never shows an override for DDL that rolled back.
    ``force-contract`` needs a reason (BadInput otherwise).
    """
    from sqlalchemy import text

    if kind not in _OUTCOMES:
        raise BadInput(f"unknown override kind {kind!r}")
    if kind == "force-contract" and not (reason and reason.strip()):
        raise BadInput("--force-contract needs --reason TEXT: an override is recorded with why")
    os_actor = _os_actor()
    detail = {
        "reason": reason,
        "refused_reasons": list(decision.reasons),
        "blocking": [b.to_json() for b in decision.blocking],
        "no_reporters": decision.no_reporters,
        "os_actor": os_actor,
        "pid": os.getpid(),
    }
    conn.execute(
        text(
            f"""
            INSERT INTO {q(control_schema())}.ledger
                (plan_id, revision, phase, step, started_at, finished_at, outcome, actor, detail)
            VALUES (:plan_id, :revision, :phase, :step, now(), now(), :outcome,
                    current_user || ' (' || :os_actor || ')', CAST(:detail AS jsonb))
            """
        ),
        {
            "plan_id": plan_id,
            "revision": revision,
            "phase": phase,
            "step": kind,
            "outcome": _OUTCOMES[kind],
            "os_actor": os_actor,
            "detail": json.dumps(detail, default=str),
        },
    )
    log.warning("guard_override", plan_id=plan_id, kind=kind, reason=reason, actor=os_actor)
