"""`ecm upgrade`: apply the application line, the backfills and the guarded contracts in order.

The runner never holds a lock across phases: the application line runs with backfills
deferred, backfills run through the engine (resumable, throttled), and each pending
contract is decided by the guard first and applied alone, so one held contract never
blocks another plan's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, Refused
from ..log import get_logger
from ..settings import control_schema
from .project import CONTRACT_VERSION_TABLE, Project

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

log = get_logger("expandcontract.runner")
PHASE_ORDER = ("expand", "backfill", "contract")


@dataclass
class Report:
    phase: str
    dry_run: bool = False
    applied: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    backfills: list[dict[str, Any]] = field(default_factory=list)
    contracts_applied: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "dry_run": self.dry_run,
            "applied": self.applied,
            "pending": self.pending,
            "backfills": self.backfills,
            "contracts": {"applied": self.contracts_applied, "held": self.held, "skipped": self.skipped},
        }


@contextmanager
def env(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def describe(script: Script) -> dict[str, Any]:
    module = script.module
    return {
        "revision": script.revision,
        "plan_id": getattr(module, "PLAN_ID", None),
        "phase": getattr(module, "PHASE", None),
        "doc": (script.doc or "").strip().splitlines()[0] if script.doc else "",
    }


def current_heads(
    conn: Connection, *, version_table: str = "alembic_version", schema: str | None = None
) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    opts: dict[str, Any] = {"version_table": version_table}
    if schema:
        opts["version_table_schema"] = schema
    ctx = MigrationContext.configure(conn, opts=opts)
    return tuple(ctx.get_current_heads())


def app_heads(project: Project, conn: Connection) -> tuple[str, ...]:
    """The application line's heads, in the version table its env.py configures."""
    return current_heads(conn, version_table=project.version_table, schema=project.version_table_schema)


def pending_revisions(script: ScriptDirectory, current: tuple[str, ...]) -> list[Script]:
    """Revisions between the database's heads and the script's heads, oldest first."""
    upper = script.get_heads()
    if not upper:
        return []
    revs = list(script.iterate_revisions(tuple(upper), current or "base"))
    revs = [r for r in revs if r.revision not in current]
    revs.reverse()
    return revs


def pending_contracts(project: Project, conn: Connection) -> list[Script]:
    script = project.contract_script()
    if script is None:
        return []
    applied = set(current_heads(conn, version_table=CONTRACT_VERSION_TABLE, schema=control_schema()))
    # Each contract is its own branch (usually one revision): pending = not applied, oldest first.
    done: set[str] = set()
    for rev in applied:
        done |= {r.revision for r in script.iterate_revisions(rev, "base")}
    pending = [r for r in reversed(list(script.walk_revisions())) if r.revision not in done]
    # Plan order, not Alembic's walk order (branches come out in hash order): a later plan
    # may build on an earlier plan's contracted shape.
    order = plan_order(project)
    return sorted(pending, key=lambda r: order.get(getattr(r.module, "PLAN_ID", None) or "", len(order)))


def plan_order(project: Project) -> dict[str, int]:
    """plan_id -> position of its expand revision on the application line (oldest first)."""
    order: dict[str, int] = {}
    for script in reversed(list(project.script().walk_revisions())):
        plan_id = getattr(script.module, "PLAN_ID", None)
        if plan_id and getattr(script.module, "PHASE", None) == "expand":
            order.setdefault(plan_id, len(order))
    return order


def _app_config(project: Project) -> Any:
    """The application line's Config (sqlalchemy.url already set by target.resolve when needed)."""
    return project.config


def _plan_of(script: Script) -> dict[str, Any] | None:
    plan = getattr(script.module, "PLAN", None)
    return plan if isinstance(plan, dict) else None


def decide_contract(
    conn: Connection, plan: dict[str, Any], *, allow_no_reporters: bool, verified: bool = False
) -> Any:
    """The guard's verdict before running a contract revision (which runs the guard again itself).

    ``verified``: this run's backfill phase just verified the plan's rows, so the table is not
    scanned a second time here.
    """
    from ..guard import guard_input
    from ..live.guard_check import check_contract
    from .runtime import backfill_problems, shape_problems

    try:
        problems = shape_problems(conn, plan) or backfill_problems(conn, plan, already_verified=verified)
    except Exception as exc:  # fail closed: we could not prove the data is in step
        problems = [f"could not verify the backfill of {plan['plan_id']}: {str(exc).splitlines()[0]}"]
    protects = guard_input(plan, contract=True)
    return check_contract(
        conn,
        removes=protects.removes,
        breaks=protects.breaks,
        plan_id=plan["plan_id"],
        allow_no_reporters=allow_no_reporters,
        backfill_problems=problems,
    )


def upgrade(
    project: Project,
    engine: Engine,
    phase: str,
    *,
    dry_run: bool = False,
    force: dict[str, str] | None = None,
    allow_no_reporters: bool = False,
    progress: bool | None = None,
    final: bool = False,
) -> Report:
    """Run the application line, then backfills, then contracts, through ``phase``.

    ``final``: bring a database no deployed code uses (CI, a new developer's, a new
    region's) to the schema the revision files end in. Every plan is expanded,
    backfilled and contracted in plan order: before each plan's expand, the contracts of
    the plans before it run, as they did where the plans were made. An empty registry is
    accepted; a live instance that maps what a contract removes still holds it.
    """
    from alembic import command

    from ..db import control

    if phase not in PHASE_ORDER:
        raise BadInput(f"--phase must be one of {', '.join(PHASE_ORDER)}, not {phase!r}")
    force = force or {}
    report = Report(phase=phase, dry_run=dry_run)
    cfg = _app_config(project)
    script = project.script()
    with engine.connect() as conn:
        if not dry_run:
            control.ensure(conn)
            conn.commit()
        before = pending_revisions(script, app_heads(project, conn))
        conn.rollback()
    if final:
        phase, allow_no_reporters = "contract", True
        report.phase = phase
    if dry_run:
        report.pending = [describe(s) for s in before]
    elif before:
        log.info("app_upgrade", revisions=len(before))
        for target, segment in _segments(before, final):
            with env(ECM_BACKFILL="defer"):
                command.upgrade(cfg, target)
            _check_moved(project, engine, segment, target)
            report.applied.extend(describe(s) for s in segment)
            if final and target != "heads":
                # The next revision expands a plan: first contract the plans made before it.
                _backfills(engine, report, dry_run=False, progress=progress)
                _contracts(
                    project,
                    engine,
                    report,
                    dry_run=False,
                    force=force,
                    allow_no_reporters=True,
                    only_started=True,
                )

    if PHASE_ORDER.index(phase) >= 1:
        _backfills(engine, report, dry_run=dry_run, progress=progress)
    if PHASE_ORDER.index(phase) >= 2:
        _contracts(
            project, engine, report, dry_run=dry_run, force=force, allow_no_reporters=allow_no_reporters
        )
    if not dry_run and force:
        unknown = set(force) - {c["plan_id"] for c in report.contracts_applied + report.held}
        if unknown:
            log.warning("force_contract_unused", plans=sorted(unknown))
    return report


def _segments(revisions: list[Script], final: bool) -> list[tuple[str, list[Script]]]:
    """Upgrade targets: all heads at once, or (``final``) up to just before each later plan's expand."""
    if not final:
        return [("heads", revisions)]
    out: list[tuple[str, list[Script]]] = []
    current: list[Script] = []
    for rev in revisions:
        if (
            current
            and getattr(rev.module, "PHASE", None) == "expand"
            and getattr(rev.module, "PLAN_ID", None)
        ):
            out.append((current[-1].revision, current))
            current = []
        current.append(rev)
    out.append(("heads", current))
    return out


def _check_moved(project: Project, engine: Engine, applied: list[Script], target: str = "heads") -> None:
    """Read the version table back: Alembic succeeding proves nothing about *this* database.

    An env.py that connects somewhere else than ecm does would have applied the revisions
    there; reporting them as applied here would be a false success.
    """
    from ..errors import OperationalError

    with engine.connect() as conn:
        now = set(app_heads(project, conn))
        conn.rollback()
    wanted = set(project.script().get_heads()) if target == "heads" else {target}
    if now != wanted:
        from ..urls import redact

        raise OperationalError(
            f"alembic upgrade ran {len(applied)} revision(s), but {redact(engine.url.render_as_string())} "
            f"is at {', '.join(sorted(now)) or 'base'}, not {', '.join(sorted(wanted))}: the project's env.py "
            "connected to another database than ecm's"
        )


def _waiting_without_lineage(project: Project, engine: Engine) -> None:
    """Plans that reached their backfill need their contracts; a deploy that lacks the folder must say so."""
    from ..db import ledger
    from ..errors import OperationalError

    with engine.connect() as conn:
        rows = ledger.plans(conn) or []
        conn.rollback()
    waiting = [
        r["plan_id"] for r in rows if r["phase"] in ("expanded", "backfilling", "backfilled", "contracting")
    ]
    if waiting:
        raise OperationalError(
            f"{len(waiting)} plan(s) wait for their contract ({', '.join(waiting)}) but the contract lineage "
            f"{project.contracts_dir} is missing: ship it with the application's migrations (it lives in "
            "[ecm_contracts] script_location) and run the contract phase again"
        )


def _ledger_plan(row: dict[str, Any]) -> dict[str, Any]:
    spec = row.get("spec") or {}
    return {
        "plan_id": row["plan_id"],
        "schema": row["table_schema"],
        "table": row["table_name"],
        "removes": spec.get("removes") or {},
        "adds": spec.get("adds") or {},
    }


def _backfills(engine: Engine, report: Report, *, dry_run: bool, progress: bool | None) -> None:
    from ..backfill.engine import run_backfill, verify
    from ..backfill.spec import BackfillSpec
    from ..db import ledger
    from .runtime import shape_problems

    with engine.connect() as conn:
        rows = [r for r in ledger.plans(conn) if r["phase"] not in ("contracted", "aborted")]
        conn.rollback()
    for row in rows:
        spec_json = (row.get("spec") or {}).get("backfill")
        if not spec_json or (
            row["backfill_status"] in ("none",) and row["phase"] in ("planned", "expanding")
        ):
            continue
        spec = BackfillSpec.from_json(spec_json)
        entry: dict[str, Any] = {"plan_id": row["plan_id"], "status_before": row["backfill_status"]}
        if dry_run:
            if row["backfill_status"] != "complete":
                report.backfills.append({**entry, "action": "would run"})
            continue
        shape = _ledger_plan(row)
        with engine.connect() as conn:
            problems = shape_problems(conn, shape)
            conn.rollback()
        if problems:  # copying into a column that is not there fails; the contract's guard explains
            report.backfills.append({**entry, "verified": False, "problems": problems})
            continue
        # The plan's other tables first (bigint-key's children; each resumes from its own
        # checkpoints and returns at once when done), so its own "complete" means all of them.
        extras = [BackfillSpec.from_json(x) for x in (row.get("spec") or {}).get("backfills") or ()]
        for extra in extras:
            run_backfill(engine, extra, progress=progress)
        if row["backfill_status"] != "complete":
            result = run_backfill(engine, spec, progress=progress)
            entry["rows"] = getattr(result, "rows_done", None)
        checked = verify(engine, spec)
        entry["verified"] = bool(checked.ok)
        for extra in extras:
            if not checked.ok:
                break
            checked = verify(engine, extra)
            spec = extra
        if not checked.ok:
            entry["mismatches"] = [str(k) for k in list(checked.mismatches)[:10]]
            entry["problems"] = [spec.describe_mismatches(checked.mismatch_count, checked.mismatches[:5])]
            entry["verified"] = False
        elif row["phase"] in ("expanded", "backfilling"):
            with engine.connect() as conn:
                ledger.set_phase(conn, row["plan_id"], "backfilled")
                conn.commit()
        report.backfills.append(entry)


def _contracts(
    project: Project,
    engine: Engine,
    report: Report,
    *,
    dry_run: bool,
    force: dict[str, str],
    allow_no_reporters: bool,
    only_started: bool = False,
) -> None:
    """Each pending contract, in plan order, decided by the guard and applied alone.

    ``only_started``: leave out plans this database has not expanded yet (``final`` mode,
    between two plans), and plans already held in this run.
    """
    from alembic import command

    from ..db import ledger
    from ..guard import Decision

    if project.contract_script() is None:
        _waiting_without_lineage(project, engine)
        return
    with engine.connect() as conn:
        pending = pending_contracts(project, conn)
        conn.rollback()
    if not pending:
        return
    ccfg = project.contract_config()
    for script in pending:
        plan = _plan_of(script)
        info = describe(script)
        if plan is None:
            report.held.append(
                {**info, "reasons": ["not an ecm contract revision (no PLAN): apply it by hand"]}
            )
            continue
        plan_id = plan["plan_id"]
        with engine.connect() as conn:
            row = ledger.get_plan(conn, plan_id) if ledger.plans(conn) else None
            if plan.get("aborted") or (row is not None and row["phase"] == "aborted"):
                conn.rollback()
                if not any(c["plan_id"] == plan_id for c in report.skipped):
                    report.skipped.append({**info, "reason": f"plan {plan_id} was aborted (`ecm abort`)"})
                continue
            if any(c["plan_id"] == plan_id for c in report.held) or (
                only_started and (row is None or row["phase"] in ("planned", "expanding"))
            ):
                conn.rollback()
                continue
            if row is not None and row["phase"] == "contracted":
                # Done here already (its version row was lost or stamped back): the revision
                # records that and changes nothing, so there is nothing to decide.
                conn.rollback()
                decision = Decision(allowed=True)
            else:
                verified = any(b["plan_id"] == plan_id and b.get("verified") for b in report.backfills)
                decision = decide_contract(
                    conn, plan, allow_no_reporters=allow_no_reporters, verified=verified
                )
                conn.rollback()
        forced = plan_id in force
        if dry_run:
            report.pending.append({**info, "allowed": decision.allowed, "reasons": list(decision.reasons)})
            continue
        if not decision.allowed and not forced:
            report.held.append({**info, "reasons": list(decision.reasons)})
            with engine.connect() as conn:
                ledger.record(
                    conn,
                    plan_id=plan_id,
                    revision=script.revision,
                    phase="contract",
                    step="guard",
                    outcome="held",
                    detail={"reasons": list(decision.reasons)},
                )
                conn.commit()
            continue
        values: dict[str, str | None] = {
            "ECM_ALLOW_NO_REPORTERS": "1" if allow_no_reporters else os.environ.get("ECM_ALLOW_NO_REPORTERS"),
            "ECM_FORCE_CONTRACT": plan_id if forced else None,
            "ECM_FORCE_REASON": force.get(plan_id) if forced else None,
        }
        try:
            with env(**values), engine.connect() as conn:
                ccfg.attributes["connection"] = conn
                command.upgrade(ccfg, script.revision)
                conn.commit()
        except Refused as exc:
            report.held.append({**info, "reasons": exc.reasons or [str(exc)]})
            continue
        finally:
            ccfg.attributes.pop("connection", None)
        report.contracts_applied.append({**info, "forced": forced})
