"""`ecm abort PLAN`: roll a plan back from whatever phase it reached, as far as is safe.

Contract first (re-create OLD, filled from NEW), then expand (drop NEW), each behind
the same guard as a manual downgrade: dropping NEW while live code maps it is refused,
and the plan is left at the last safe phase.
"""

from __future__ import annotations

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


def abort_plan(project: Project, engine: Any, plan_id: str) -> dict[str, Any]:
    from alembic import command

    from ..db import ledger
    from .project import CONTRACT_VERSION_TABLE
    from .runner import _app_config, current_heads
    from .runtime import run_live

    scripts = _find(project, plan_id)
    with engine.connect() as conn:
        row = ledger.get_plan(conn, plan_id) if ledger.plans(conn) is not None else None
        conn.rollback()
    if not scripts and row is None:
        raise BadInput(f"unknown plan {plan_id!r}: no revision files and no record of it (see `ecm status`)")
    if row is None:
        paths = ", ".join(str(s.path) for s in scripts.values())
        return {"plan_id": plan_id, "state": "not applied", "steps": [f"nothing applied; delete {paths}"]}
    steps: list[str] = []
    state = row["phase"]
    from ..settings import control_schema

    with engine.connect() as conn:
        applied_contracts = set(
            current_heads(conn, version_table=CONTRACT_VERSION_TABLE, schema=control_schema())
        )
        app_heads = current_heads(conn)
        conn.rollback()
    contract = scripts.get("contract")
    if contract is not None and contract.revision in applied_contracts:
        ccfg = project.contract_config()
        with engine.connect() as conn:
            ccfg.attributes["connection"] = conn
            command.downgrade(
                ccfg, f"{contract.revision}@-1" if contract.down_revision else f"{plan_id}@base"
            )
            conn.commit()
        steps.append(f"contract {contract.revision} rolled back: old column re-created and filled")
        state = "backfilled"
    expand, backfill = scripts.get("expand"), scripts.get("backfill")
    if expand is None:
        raise BadInput(
            f"plan {plan_id}: its expand revision file is missing; restore it from version control"
        )
    try:
        if backfill is not None and app_heads == (backfill.revision,):
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
        steps.append(f"expand not rolled back: {exc.message}")
        steps.extend(f"  - {r}" for r in exc.reasons)
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
    return {"plan_id": plan_id, "state": state, "steps": steps}
