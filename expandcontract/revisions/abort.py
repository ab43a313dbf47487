"""`ecm abort PLAN`: roll a plan back from whatever phase it reached, as far as is safe.

Contract first (re-create OLD, filled from NEW), then expand (drop NEW), each behind
the same guard as a manual downgrade: dropping NEW while live code maps it is refused,
and the plan is left at the last safe phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadInput, Refused
from ..log import get_logger
from .project import Project

log = get_logger("expandcontract.abort")


def _find(project: Project, plan_id: str) -> dict[str, Any]:
    """The plan's revision scripts by phase."""
    found: dict[str, Any] = {}
    for script in project.script().walk_revisions():
        if getattr(script.module, "PLAN_ID", None) == plan_id:
            found[script.module.PHASE] = script
    contracts = project.contract_script()
    if contracts is not None:
        for script in contracts.walk_revisions():
            if getattr(script.module, "PLAN_ID", None) == plan_id:
                found["contract"] = script
    return found


def _expand_rollback_refusal(engine: Any, plan: dict[str, Any]) -> Refused | None:
    """The guard on dropping NEW, asked before any downgrade (the expand revision asks again)."""
    from ..live.guard_check import check_contract
    from .runtime import truthy

    with engine.connect() as conn:
        decision = check_contract(
            conn,
            removes=plan["adds"],
            plan_id=plan["plan_id"],
            allow_no_reporters=truthy("ECM_ALLOW_NO_REPORTERS"),
        )
        conn.rollback()
    if decision.allowed:
        return None
    return Refused(f"rollback of expand of {plan['plan_id']} refused", list(decision.reasons))


ABORT_MARK = "PLAN = {**PLAN, 'aborted': "


def mark_aborted(scripts: Any, plan_id: str) -> list[str]:
    """Make the abort durable in the plan's revision files, not only in this database's ledger.

    The files stay (a database that applied them must still be able to walk the line), but
    from now on their upgrades change nothing: a fresh database (CI, a new developer) skips
    the plan instead of expanding and contracting it again.
    """
    import datetime

    from ..db.ledger import actor

    marked: list[str] = []
    when = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    for script in scripts:
        path = Path(script.path)
        text = path.read_text()
        if ABORT_MARK in text:
            continue
        path.write_text(
            text.rstrip("\n")
            + "\n\n\n# `ecm abort` rolled this plan back: its upgrades change nothing from now on (fresh databases\n"
            + "# skip it); keep the file, databases that applied it still walk through it.\n"
            + f"{ABORT_MARK}{{'at': {when!r}, 'by': {actor()!r}}}}}\n"
        )
        marked.append(str(path))
    return marked


def _irreversible(scripts: dict[str, Any], contract_applied: bool) -> list[str]:
    """Why abort cannot roll back: the phases it would undo that their plan gave no downgrade
    (``spec["irreversible"]``, {phase: reason}); nothing is changed then."""
    phases = (["contract"] if contract_applied else []) + (["expand"] if "expand" in scripts else [])
    out = []
    for phase in phases:
        reason = scripts[phase].module.PLAN.get("spec", {}).get("irreversible", {}).get(phase)
        if reason:
            out.append(f"not rolled back, nothing changed: {reason}")
    return out


def abort_plan(project: Project, engine: Any, plan_id: str) -> dict[str, Any]:
    from alembic import command

    from ..db import ledger
    from .project import CONTRACT_VERSION_TABLE
    from .runner import _app_config, app_heads, current_heads
    from .runtime import run_live

    scripts = _find(project, plan_id)
    with engine.connect() as conn:
        row = ledger.get_plan(conn, plan_id) if ledger.plans(conn) is not None else None
        conn.rollback()
    if not scripts and row is None:
        raise BadInput(f"unknown plan {plan_id!r}: no revision files and no record of it (see `ecm status`)")
    if row is None:
        paths = ", ".join(str(s.path) for s in scripts.values())
        return {
            "plan_id": plan_id,
            "state": "not applied",
            "refused": False,
            "steps": [
                f"nothing applied in this database; if no other database applied it either, delete {paths}; "
                "otherwise run `ecm abort` against those"
            ],
        }
    steps: list[str] = []
    state = row["phase"]
    from ..settings import control_schema

    with engine.connect() as conn:
        applied_contracts = set(
            current_heads(conn, version_table=CONTRACT_VERSION_TABLE, schema=control_schema())
        )
        heads = app_heads(project, conn)
        conn.rollback()
    if state == "aborted":
        marked = mark_aborted(scripts.values(), plan_id)
        return {
            "plan_id": plan_id,
            "state": "aborted",
            "refused": False,
            "steps": ["already aborted: nothing to do"]
            + [
                f"marked {p} as aborted (keep it: databases that applied it still walk through it)"
                for p in marked
            ],
        }
    expand, backfill = scripts.get("expand"), scripts.get("backfill")
    contract = scripts.get("contract")
    # A plan that is only a contract (change-type in place) has no expand to roll back.
    contract_only = (
        expand is None and contract is not None and "expand" not in contract.module.PLAN.get("revisions", {})
    )
    if expand is None and not contract_only:
        raise BadInput(
            f"plan {plan_id}: its expand revision file is missing; restore it from version control"
        )
    # A phase whose plan has no downgrade (custom without --expand-down / --contract-down):
    # refuse before anything is rolled back, rather than half-way.
    irreversible = _irreversible(scripts, contract is not None and contract.revision in applied_contracts)
    if irreversible:
        return {"plan_id": plan_id, "state": state, "refused": True, "steps": irreversible}
    # Decide the expand's rollback before touching anything: downgrading the backfill revision
    # and then being refused would leave the version table and the plan out of step.
    refusal = None if expand is None else _expand_rollback_refusal(engine, expand.module.PLAN)
    if contract is not None and contract.revision in applied_contracts:
        ccfg = project.contract_config()
        with engine.connect() as conn:
            ccfg.attributes["connection"] = conn
            command.downgrade(
                ccfg, f"{contract.revision}@-1" if contract.down_revision else f"{plan_id}@base"
            )
            conn.commit()
        steps.append(
            f"contract {contract.revision} rolled back"
            + ("" if contract_only else ": old column re-created and filled")
        )
        state = "backfilled"
    elif contract is not None and state == "contracting":
        # The contract stopped half-way (a step ran out of lock retries): some of its steps
        # committed (drop-table's foreign keys, a swap) though its revision is not applied.
        # Its downgrade steps only re-create what is missing, so they give back exactly those.
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            run_live(
                conn,
                contract.module.PLAN,
                "contract",
                "downgrade",
                contract.module.DOWNGRADE,
                revision=contract.revision,
            )
        steps.append(f"contract {contract.revision} stopped half-way: what it had done is undone")
        state = "backfilled"
    refused = False
    try:
        if refusal is not None:
            raise refusal
        if expand is None:
            pass  # nothing before the contract
        elif backfill is not None and heads == (backfill.revision,):
            cfg = _app_config(project)
            command.downgrade(cfg, expand.down_revision or "base")
            steps.append(f"revisions {backfill.revision}, {expand.revision} downgraded")
        else:
            with engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                run_live(
                    conn,
                    expand.module.PLAN,
                    "expand",
                    "downgrade",
                    expand.module.DOWNGRADE,
                    revision=expand.revision,
                )
            steps.append(
                f"expand of {plan_id} undone in place (later revisions exist on the Alembic line, so its "
                "revisions stay applied and are skipped from now on)"
            )
        state = "aborted"
    except Refused as exc:
        refused = True
        steps.append(f"expand not rolled back: {exc.message}")
        steps.extend(f"  - {r}" for r in exc.reasons)
    if state == "aborted":
        steps.extend(
            f"marked {p} as aborted: keep the file (databases that applied it walk through it; fresh ones skip it)"
            for p in mark_aborted(scripts.values(), plan_id)
        )
    with engine.connect() as conn:
        ledger.set_phase(conn, plan_id, state)
        ledger.record(
            conn,
            plan_id=plan_id,
            revision=None,
            phase="abort",
            step=None,
            outcome=state,
            detail={"steps": steps},
        )
        conn.commit()
    return {"plan_id": plan_id, "state": state, "refused": refused, "steps": steps}
