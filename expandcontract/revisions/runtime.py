"""What generated revision files call: run a phase's steps live, or render them offline.

Live, each step runs in its own short transaction inside Alembic's
``autocommit_block()`` with lock_timeout and bounded retries, under a session advisory
lock per plan. Offline (``alembic upgrade --sql`` / ``ecm upgrade --sql``), the same
steps are written as a psql script.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from ..db.engine import own_engine_for
from ..errors import OperationalError, Refused
from ..log import get_logger
from ..plan.model import Step
from ..settings import get

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["Step", "run_phase"]

log = get_logger("expandcontract.runtime")
Direction = Literal["upgrade", "downgrade"]

#: Plan phase recorded in the control schema after each phase/direction.
PHASE_STATE = {
    ("expand", "upgrade"): "expanded",
    ("expand", "downgrade"): "aborted",
    ("backfill", "upgrade"): "backfilled",
    ("backfill", "downgrade"): "expanded",
    ("contract", "upgrade"): "contracted",
    ("contract", "downgrade"): "backfilled",
}


def has_contract(plan: dict[str, Any]) -> bool:
    """Whether the plan has a contract phase (add-index has only an expand); plans frozen
    without ``revisions`` are taken to have one."""
    revisions = plan.get("revisions")
    return not isinstance(revisions, dict) or "contract" in revisions


def phase_state(plan: dict[str, Any], phase: str, direction: Direction) -> str:
    """The plan's state after a phase. A plan without a contract (add-index, add-unique) is
    finished ("contracted") once its last phase is up: nothing of it is left in flight, so no
    contract is waited for and later plans on its columns are not refused."""
    state = PHASE_STATE[(phase, direction)]
    revisions = plan.get("revisions")
    if (
        direction == "upgrade"
        and phase != "backfill"
        and not has_contract(plan)
        and isinstance(revisions, dict)
        and list(revisions)[-1:] == [phase]
    ):
        return "contracted"
    return state


def run_phase(
    plan: dict[str, Any], phase: str, direction: Direction, steps: Sequence[Step], *, revision: str
) -> None:
    """Entry point of every generated revision's upgrade()/downgrade()."""
    from alembic import op

    ctx = op.get_context()
    if ctx.as_sql:
        if plan.get("aborted") and direction == "upgrade":
            ctx.impl.static_output(
                f"-- {plan['plan_id']} {phase}: skipped, the plan was aborted ({_aborted(plan)})"
            )
            return
        from .offline import emit_phase

        emit_phase(plan, phase, direction, steps, revision=revision)
        return
    with ctx.autocommit_block():
        direct_url = get("ECM_DIRECT_DATABASE_URL")
        if not direct_url:
            run_live(op.get_bind(), plan, phase, direction, steps, revision=revision)
            return
        # Session settings (lock_timeout) and the per-plan session advisory lock do not
        # survive a transaction-pooling PgBouncer: run the whole phase on a direct connection.
        from sqlalchemy import pool

        from ..db.engine import create

        engine = create(direct_url, poolclass=pool.NullPool)
        try:
            with engine.connect() as direct:
                direct = direct.execution_options(isolation_level="AUTOCOMMIT")
                run_live(direct, plan, phase, direction, steps, revision=revision)
        finally:
            engine.dispose()


@contextmanager
def plan_lock(conn: Connection, plan_id: str) -> Iterator[None]:
    """Session advisory lock per plan: two runners never work on the same plan at once.

    Session locks need a direct (not transaction-pooled) connection: behind PgBouncer in
    transaction mode, set ECM_DIRECT_DATABASE_URL and run_phase uses it for the whole phase.
    """
    from ..db.control import lock_key

    key = lock_key("plan:" + plan_id)
    holder = conn
    try:
        if not holder.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})").scalar():
            log.info("plan_lock_wait", plan_id=plan_id, detail="another runner works on this plan; waiting")
            holder.exec_driver_sql("SELECT set_config('lock_timeout', '0', false)")
            holder.exec_driver_sql(f"SELECT pg_advisory_lock({key})")
        yield
    finally:
        holder.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")


def truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def run_live(
    conn: Connection,
    plan: dict[str, Any],
    phase: str,
    direction: Direction,
    steps: Sequence[Step],
    *,
    revision: str | None,
) -> None:
    from ..db import control, executor, ledger

    plan_id = plan["plan_id"]
    control.ensure(conn)
    label = phase if direction == "upgrade" else f"{phase}-downgrade"
    with plan_lock(conn, plan_id):
        existing = ledger.get_plan(conn, plan_id)
        aborted_here = existing is not None and existing["phase"] == "aborted"
        if direction == "upgrade" and (aborted_here or plan.get("aborted")):
            # An abort recorded in this database, or marked in the revision files by an abort
            # elsewhere: a fresh database must not expand (and later contract) it again.
            if existing is None:
                _record_plan(conn, plan)
                ledger.set_phase(conn, plan_id, "aborted")
            log.warning("plan_aborted_skipped", plan_id=plan_id, phase=label, detail=_aborted(plan))
            ledger.record(conn, plan_id=plan_id, revision=revision, phase=label, step=None, outcome="skipped")
            return
        if (
            direction == "upgrade"
            and phase == "contract"
            and existing is not None
            and existing["phase"] == "contracted"
        ):
            # Run again after it completed (a lost or stamped-back version row): OLD is gone,
            # there is nothing left to do and nothing to check.
            log.info("plan_contracted_skipped", plan_id=plan_id, phase=label, detail="already contracted")
            ledger.record(conn, plan_id=plan_id, revision=revision, phase=label, step=None, outcome="skipped")
            return
        if direction == "downgrade" and aborted_here:
            log.info("plan_aborted_skipped", plan_id=plan_id, phase=label, detail="already rolled back")
            ledger.record(conn, plan_id=plan_id, revision=revision, phase=label, step=None, outcome="skipped")
            return
        _record_plan(conn, plan)
        if (
            direction == "downgrade"
            and phase != "contract"
            and existing
            and existing["phase"] == "contracted"
            and has_contract(plan)
        ):
            raise Refused(
                f"rollback of {phase} of {plan_id} refused: its contract is applied, so the new column is the "
                "only copy of the data",
                [
                    f"roll back the contract first: alembic -n ecm_contracts downgrade {plan_id}@base (or ecm abort {plan_id})"
                ],
            )
        marked = direction != "upgrade"
        log.info("phase_start", plan_id=plan_id, phase=label, revision=revision, steps=len(steps))
        timeouts = executor.Timeouts.from_env()
        try:
            for step in steps:
                if not marked and step.kind != "guard":  # a refused guard leaves the phase untouched
                    ledger.set_phase(conn, plan_id, f"{phase}ing" if phase != "backfill" else "backfilling")
                    marked = True
                entry = ledger.start(conn, plan_id=plan_id, revision=revision, phase=label, step=step.name)
                try:
                    if step.kind == "guard":
                        outcome, detail = _guard(conn, plan, phase, direction)
                    elif step.kind == "backfill":
                        outcome, detail = _backfill(conn, plan, reverse=direction == "downgrade", step=step)
                    elif step.kind == "swap":
                        outcome, detail = _swap(conn, plan, label, step, timeouts)
                    elif step.kind == "precheck":
                        from ..db import prechecks

                        prechecks.run(conn, step)
                        outcome, detail = "ran", {}
                    else:
                        outcome, detail = executor.execute(conn, step, timeouts), {}
                except Refused as exc:
                    ledger.finish(conn, entry, "refused", {"reasons": exc.reasons, "error": str(exc)})
                    raise
                except Exception as exc:
                    ledger.finish(
                        conn, entry, "failed", {"error": str(exc).splitlines()[0] if str(exc) else ""}
                    )
                    raise
                ledger.finish(conn, entry, outcome, detail)
                log.info("step", plan_id=plan_id, phase=label, step=step.name, outcome=outcome)
        finally:
            executor.reset(conn)
        state = phase_state(plan, phase, direction)
        if phase == "backfill" and direction == "upgrade":
            status = ledger.get_plan(conn, plan_id) or {}
            state = "backfilled" if status.get("backfill_status") == "complete" else "expanded"
        ledger.set_phase(conn, plan_id, state)
        log.info("phase_done", plan_id=plan_id, phase=label, state=state)


def _swap(
    conn: Connection, plan: dict[str, Any], label: str, step: Step, timeouts: Any
) -> tuple[str, dict[str, Any]]:
    """A type change under the column's own name, once live code stopped using prepared statements."""
    from ..db import executor
    from ..live import swaps

    if executor.already_done(conn, step):
        return "skipped", {}
    swap_id = f"{plan['plan_id']}/{label}"
    table = f"{plan['schema']}.{plan['table']}"
    other = swap_table(plan, step)
    if other != table:  # a plan that swaps columns of several tables (bigint-key)
        swap_id, table = f"{swap_id}/{other}", other
    force = os.environ.get("ECM_FORCE_CONTRACT", "") == plan["plan_id"]
    # Announcements and confirmations must be visible to other sessions at once: a connection
    # of our own, each statement committed.
    with own_engine_for(conn) as engine, engine.connect() as sconn:
        sconn.execution_options(isolation_level="AUTOCOMMIT")
        swaps.announce(sconn, swap_id, table)
        try:
            detail = swaps.wait_for_acks(sconn, swap_id, table, force=force)
            log.info("swap_confirmed", plan_id=plan["plan_id"], table=table, **detail)
            return executor.execute(conn, step, timeouts), detail
        finally:
            swaps.finish(sconn, swap_id)


def _record_plan(conn: Connection, plan: dict[str, Any]) -> None:
    from ..db import ledger

    ledger.upsert_plan(
        conn,
        plan_id=plan["plan_id"],
        operation=plan["operation"],
        schema=plan["schema"],
        table=plan["table"],
        spec=_ledger_spec(plan),
    )


def _aborted(plan: dict[str, Any]) -> str:
    mark = plan.get("aborted")
    if isinstance(mark, dict):
        return f"`ecm abort` by {mark.get('by', '?')} at {mark.get('at', '?')}"
    return "`ecm abort` rolled it back"


def shape_problems(conn: Connection, plan: dict[str, Any]) -> list[str]:
    """Columns the contract needs that the table lacks: a contract run against a shape its plan
    never saw (an earlier plan's contract missing, plans applied out of order) must not start
    dropping things half-way."""
    from sqlalchemy import text

    wanted: dict[str, set[str]] = {}
    for side in ("removes", "adds"):
        for table, columns in (plan.get(side) or {}).items():
            wanted.setdefault(table, set()).update(c for c in columns if c != "*")
    problems: list[str] = []
    for table, columns in wanted.items():
        rows = conn.execute(
            text(
                "SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = to_regclass(:t) "
                "AND a.attnum > 0 AND NOT a.attisdropped"
            ),
            {"t": _regclass(plan, table)},
        ).scalars()
        present = {str(r) for r in rows}
        missing = sorted(columns - present)
        if not present:
            problems.append(f"table {table} does not exist, but the contract of {plan['plan_id']} expects it")
        elif missing:
            problems.append(
                f"{table} has no column {', '.join(missing)}, which the contract of {plan['plan_id']} expects "
                "(its expand did not run here, or another plan changed the table since): contract refused"
            )
    return problems


def _regclass(plan: dict[str, Any], table: str) -> str:
    from ..sql.quoting import qq

    if table == f"{plan['schema']}.{plan['table']}":  # names may contain dots themselves
        schema, name = plan["schema"], plan["table"]
    else:
        schema, _, name = table.rpartition(".")
    return f"{qq(schema)}.{qq(name)}" if schema else qq(name)


def _ledger_spec(plan: dict[str, Any]) -> dict[str, Any]:
    return {
        **plan.get("spec", {}),
        "removes": plan.get("removes", {}),
        "adds": plan.get("adds", {}),
        "touches": plan.get("touches") or {},
        "creates": plan.get("creates") or [],
        "breaks": plan.get("breaks") or [],
        "backfill": plan.get("backfill"),
        "reverse_backfill": plan.get("reverse_backfill"),
        "revisions": plan.get("revisions", {}),
    }


def swap_table(plan: dict[str, Any], step: Step) -> str:
    """The table a swap step waits on: the plan's, unless the plan names another for the step
    (``spec["swap_tables"]``, plans that swap columns of several tables)."""
    default = f"{plan['schema']}.{plan['table']}"
    return str(((plan.get("spec") or {}).get("swap_tables") or {}).get(step.name, default))


def extra_backfill(plan: dict[str, Any], name: str) -> dict[str, Any]:
    """One of the plan's extra backfill specs (``spec["backfills"]`` / ``spec["rollback_backfills"]``),
    by its plan id: a backfill step whose ``sql`` names one runs it instead of the plan's own."""
    spec = plan.get("spec") or {}
    for data in [*(spec.get("backfills") or ()), *(spec.get("rollback_backfills") or ())]:
        if data.get("plan_id") == name:
            return dict(data)
    raise OperationalError(f"plan {plan['plan_id']} has no backfill named {name!r}")


def _backfill(
    conn: Connection, plan: dict[str, Any], *, reverse: bool, step: Step | None = None
) -> tuple[str, dict[str, Any]]:
    from ..backfill.engine import run_backfill
    from ..backfill.spec import BackfillSpec
    from ..db import ledger

    plan_id = plan["plan_id"]
    if step is not None and step.sql:
        # An extra table's backfill (checkpoints under its own id). Deferred like the plan's
        # own: `ecm upgrade` runs it after the application line (runner._backfills).
        if not reverse and get("ECM_BACKFILL").lower() == "defer":
            log.info("backfill_deferred", plan_id=plan_id, spec=step.sql)
            return "deferred", {}
        with own_engine_for(conn) as engine:
            result = run_backfill(engine, BackfillSpec.from_json(extra_backfill(plan, step.sql)))
        return "ran", {"rows": getattr(result, "rows_done", None), "spec": step.sql}
    if not reverse and get("ECM_BACKFILL").lower() == "defer":
        row = ledger.get_plan(conn, plan_id) or {}
        if row.get("backfill_status") != "complete":
            ledger.set_backfill_status(conn, plan_id, "pending")
        log.info("backfill_deferred", plan_id=plan_id, run=f"ecm backfill {plan_id}")
        return "deferred", {}
    spec = BackfillSpec.from_json(
        plan["reverse_backfill" if reverse and plan.get("reverse_backfill") else "backfill"]
    )
    # The engine drives psycopg 3 itself, on connections of its own, whatever the project's driver.
    with own_engine_for(conn) as engine:
        result = run_backfill(engine, spec)
    return "ran", {"rows": getattr(result, "rows_done", None)}


def backfill_problems(conn: Connection, plan: dict[str, Any], *, already_verified: bool = False) -> list[str]:
    """Why the contract may not run yet as far as data is concerned (empty: complete and verified).

    ``already_verified`` skips only the table scan, when the caller verified the rows moments ago.
    """
    from ..backfill.engine import verify
    from ..backfill.spec import BackfillSpec
    from ..db import ledger

    plan_id = plan["plan_id"]
    if not plan.get("backfill"):  # a plan without a backfill has no data to prove
        return []
    row = ledger.get_plan(conn, plan_id)
    status = (row or {}).get("backfill_status", "none")
    if status != "complete":
        return [f"the backfill of {plan_id} is {status}, not complete: run `ecm backfill {plan_id}`"]
    if already_verified:
        return []
    problems: list[str] = []
    specs = [plan["backfill"], *((plan.get("spec") or {}).get("backfills") or ())]
    with own_engine_for(conn) as engine:
        for data in specs:  # the plan's own, then those of its other tables (bigint-key)
            spec = BackfillSpec.from_json(data)
            result = verify(engine, spec)
            if not result.ok:
                problems.append(spec.describe_mismatches(result.mismatch_count, result.mismatches[:5]))
    return problems


def _guard(
    conn: Connection, plan: dict[str, Any], phase: str, direction: Direction
) -> tuple[str, dict[str, Any]]:
    """The contract guard (and the guard on rolling back an expand), inside the revision itself."""
    from ..guard import guard_input
    from ..live.guard_check import check_contract, record_override

    plan_id = plan["plan_id"]
    contract = phase == "contract" and direction == "upgrade"
    protects = guard_input(plan, contract=contract)
    problems = (shape_problems(conn, plan) or backfill_problems(conn, plan)) if contract else []
    allow_no_reporters = truthy("ECM_ALLOW_NO_REPORTERS")
    forced_plan = os.environ.get("ECM_FORCE_CONTRACT", "")
    reason = os.environ.get("ECM_FORCE_REASON", "").strip()
    # The migration's own connection is in autocommit mode here; the guard reads (and the
    # override is recorded) on a connection of its own, in one ordinary transaction.
    with own_engine_for(conn) as engine, engine.connect() as gconn:
        decision = check_contract(
            gconn,
            removes=protects.removes,
            breaks=protects.breaks,
            plan_id=plan_id,
            allow_no_reporters=allow_no_reporters,
            backfill_problems=problems,
        )
        if decision.allowed:
            if decision.no_reporters:  # the flag was actually needed: record that it was used
                record_override(
                    gconn, plan_id=plan_id, kind="allow-no-reporters", reason=None, decision=decision
                )
                gconn.commit()
            return "ok", {"allow_no_reporters": allow_no_reporters}
        if contract and forced_plan == plan_id:
            if problems:
                raise Refused(
                    f"contract {plan_id} refused even with --force-contract: the data is not ready", problems
                )
            if not reason:
                raise OperationalError("--force-contract needs --reason TEXT saying why")
            record_override(gconn, plan_id=plan_id, kind="force-contract", reason=reason, decision=decision)
            gconn.commit()
            log.warning("contract_forced", plan_id=plan_id, reason=reason, refused=decision.reasons)
            return "forced", {"reason": reason, "reasons": decision.reasons}
    what = "contract" if contract else "rollback of expand"
    raise Refused(f"{what} of {plan_id} refused", list(decision.reasons))
