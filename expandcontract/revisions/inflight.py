"""Finding plans already in flight: in the control schema and in revision files not yet applied."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_PLAN_ID = re.compile(r"^PLAN_ID = '([^']*)'$", re.MULTILINE)


def plan_files(directory: Path) -> dict[str, list[Path]]:
    """plan_id -> revision files that carry it (read as text: never executes user code)."""
    found: dict[str, list[Path]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.py")):
        try:
            text = path.read_text()
        except OSError:
            continue
        match = _PLAN_ID.search(text)
        if match:
            found.setdefault(match.group(1), []).append(path)
    return found


def frozen_plan(path: Path) -> dict[str, Any] | None:
    """The PLAN literal of a generated revision, evaluated safely (ast.literal_eval)."""
    import ast

    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "PLAN" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def conflicts_in_files(
    directories: list[Path], schema: str, table: str, columns: set[str], finished: set[str]
) -> list[str]:
    out = []
    for directory in directories:
        for plan_id, paths in plan_files(directory).items():
            if plan_id in finished:
                continue
            plan = frozen_plan(paths[0])
            if not plan:
                continue
            spec = plan.get("spec", {})
            touched = {spec.get("old"), spec.get("new")}
            if plan.get("schema") == schema and plan.get("table") == table and touched & columns:
                out.append(f"{plan_id} (revision file {paths[0].name})")
    return out


def conflicts_in_db(
    conn: Connection, schema: str, table: str, columns: set[str]
) -> tuple[list[str], set[str]]:
    """In-flight plans touching the columns, and the ids of finished plans (contracted or aborted)."""
    from ..db import ledger

    active, finished = [], set()
    for row in ledger.plans(conn):
        if row["phase"] in ("contracted", "aborted"):
            finished.add(row["plan_id"])
            continue
        spec = row.get("spec") or {}
        touched = {spec.get("old"), spec.get("new")}
        if row["table_schema"] == schema and row["table_name"] == table and touched & columns:
            active.append(f"{row['plan_id']} (phase {row['phase']})")
    return active, finished
