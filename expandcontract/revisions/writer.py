"""Plan -> Alembic revision files, one per phase, readable and editable.

Each file freezes what it needs (steps as SQL, the table facts, the backfill spec):
it imports only ``expandcontract.revisions.runtime``, never the application's models,
so it still runs years later.
"""

from __future__ import annotations

import datetime as dt
import pprint
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..plan.model import Phase, Plan, Step

TEMPLATE_MAKO = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''

RUN_COMMAND = {
    "expand": "ecm upgrade --phase expand   (or plain `alembic upgrade head`)",
    "backfill": "ecm upgrade --phase backfill   (or `ecm backfill {plan_id}`; inline under `alembic upgrade head`"
    " unless ECM_BACKFILL=defer)",
    "contract": "ecm upgrade --phase contract   (or `alembic -n ecm_contracts upgrade heads`)",
}


@dataclass(frozen=True)
class RevisionFile:
    phase: str
    revision: str
    down_revision: str | None
    path: Path
    content: str
    branch_labels: tuple[str, ...] | None = None


def _py_str(text: str) -> str:
    if "\\" in text or '"""' in text or text.endswith('"') or "\r" in text:
        return repr(text)
    return '"""' + text + '"""'


def _step_code(step: Step, indent: str = "    ") -> str:
    args = [f"name={step.name!r}", f"kind={step.kind!r}"]
    if step.sql:
        args.append(f"sql={_py_str(step.sql)}")
    if step.lock:
        args.append(f"lock={step.lock!r}")
    if step.skip_if:
        args.append(f"skip_if={_py_str(step.skip_if)}")
    if step.index:
        args.append(f"index={step.index!r}")
    if step.squawk_ignore:
        args.append(f"squawk_ignore={step.squawk_ignore!r}")
    inner = (",\n" + indent + "    ").join(args)
    return f"{indent}Step(\n{indent}    {inner},\n{indent})"


def _steps_code(steps: tuple[Step, ...]) -> str:
    if not steps:
        return "[]"
    return "[\n" + ",\n".join(_step_code(s) for s in steps) + ",\n]"


def frozen_plan(plan: Plan, revisions: dict[str, str]) -> dict[str, Any]:
    return {
        **plan.header(),
        "backfill": plan.backfill,
        "reverse_backfill": plan.reverse_backfill,
        "revisions": revisions,
        "spec": plan.spec,
    }


def _docstring(plan: Plan, phase: Phase, revision: str, down: str | None, message: str | None) -> str:
    steps = "\n".join(
        f"  {i}. {s.name} — {s.lock or s.kind}" for i, s in enumerate(plan.shown_steps(phase), 1)
    )
    undo = "\n".join(f"  {i}. {s.name}" for i, s in enumerate(phase.downgrade, 1)) or "  (nothing to undo)"
    title = message or plan.title
    return (
        f"ecm {phase.name}: {title}\n\n"
        f"Plan: {plan.plan_id}   (the ecm plan id; `ecm status` shows its phase)\n"
        f"Phase: {phase.name} — {phase.summary}\n\n"
        f"Deploy before: {phase.before}\n"
        f"Deploy after: {phase.after}\n"
        f"Roll back: {phase.rollback}\n"
        f"Run: {RUN_COMMAND[phase.name].format(plan_id=plan.plan_id)}\n\n"
        f"Upgrade steps (each its own short transaction; DDL with lock_timeout + bounded retries, CONCURRENTLY/VALIDATE without timeouts):\n{steps}\n\n"
        f"Downgrade steps:\n{undo}\n\n"
        f"Revision ID: {revision}\n"
        f"Revises: {down or ''}\n"
        f"Create Date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\n"
    )


def render(
    plan: Plan,
    phase: Phase,
    *,
    revision: str,
    down_revision: str | None,
    revisions: dict[str, str],
    branch_labels: tuple[str, ...] | None = None,
    message: str | None = None,
) -> str:
    # Names may hold quotes and backslashes: escape them so the docstring stays one literal.
    doc = _docstring(plan, phase, revision, down_revision, message).replace("\\", "\\\\").replace('"', '\\"')
    frozen = pprint.pformat(frozen_plan(plan, revisions), width=100, sort_dicts=False)
    return (
        f'"""{doc}"""\n\n'
        "from expandcontract.revisions.runtime import Step, run_phase\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        f"branch_labels = {branch_labels!r}\n"
        "depends_on = None\n\n"
        f"PLAN_ID = {plan.plan_id!r}\n"
        f"PHASE = {phase.name!r}\n\n"
        "# Frozen when the plan was made, so this file needs no application models.\n"
        f"PLAN = {frozen}\n\n"
        f"UPGRADE = {_steps_code(phase.upgrade)}\n\n"
        f"DOWNGRADE = {_steps_code(phase.downgrade)}\n\n\n"
        "def upgrade() -> None:\n"
        '    run_phase(PLAN, PHASE, "upgrade", UPGRADE, revision=revision)\n\n\n'
        "def downgrade() -> None:\n"
        '    run_phase(PLAN, PHASE, "downgrade", DOWNGRADE, revision=revision)\n'
    )


def new_revision_id() -> str:
    from alembic.util import rev_id

    return str(rev_id())


def prepare(
    plan: Plan,
    *,
    app_versions: Path,
    app_head: str | None,
    contract_versions: Path,
    message: str | None = None,
) -> list[RevisionFile]:
    """Revision files for the phases a plan has: expand and backfill on the app line (in that
    order, after ``app_head``), the contract as its own branch of the contract lineage."""
    ids: dict[str, str] = {phase.name: new_revision_id() for phase in plan.phases}
    files: list[RevisionFile] = []
    downs: dict[str, str | None] = {"contract": None}
    previous = app_head
    for name in ("expand", "backfill"):
        if name in ids:
            downs[name], previous = previous, ids[name]
    for phase in plan.phases:
        directory = contract_versions if phase.name == "contract" else app_versions
        labels = (plan.plan_id,) if phase.name == "contract" else None
        rev = ids[phase.name]
        content = render(
            plan,
            phase,
            revision=rev,
            down_revision=downs[phase.name],
            revisions=ids,
            branch_labels=labels,
            message=message,
        )
        path = directory / f"{rev}_ecm_{phase.name}_{plan.plan_id}.py"
        files.append(RevisionFile(phase.name, rev, downs[phase.name], path, content, labels))
    return files
