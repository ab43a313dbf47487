"""Finding plans already in flight: in the control schema and in revision files not yet applied.

Two plans conflict when they touch the same column of the same table (or one of them
the whole table): each plan says what it touches (``touches``; plans frozen before that
existed are read as touching what they remove and add), whatever its operation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..plan.model import touched

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_PLAN_ID = re.compile(r"^PLAN_ID = '([^']*)'$", re.MULTILINE)
WHOLE_TABLE = "*"


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


def aborted_in_file(path: Path) -> bool:
    """Whether `ecm abort` marked the file (its last PLAN assignment adds 'aborted')."""
    try:
        return "'aborted': {" in path.read_text()
    except OSError:
        return False


def touches_of(plan: Mapping[str, Any]) -> dict[str, list[str]]:
    """What a frozen plan or a ledger spec touches."""
    given = plan.get("touches")
    if isinstance(given, dict) and given:
        return {str(k): [str(c) for c in v] for k, v in given.items()}
    return touched(plan.get("removes") or {}, plan.get("adds") or {})


def overlap(a: Mapping[str, Iterable[str]], b: Mapping[str, Iterable[str]]) -> bool:
    for table, columns in a.items():
        other = b.get(table)
        if other is None:
            continue
        mine, theirs = set(columns), set(other)
        if WHOLE_TABLE in mine or WHOLE_TABLE in theirs or mine & theirs:
            return True
    return False


def conflicts_in_files(
    directories: list[Path], touches: Mapping[str, Iterable[str]], finished: set[str]
) -> list[str]:
    out = []
    for directory in directories:
        for plan_id, paths in plan_files(directory).items():
            if plan_id in finished or any(aborted_in_file(p) for p in paths):
                continue
            plan = frozen_plan(paths[0])
            if plan and overlap(touches_of(plan), touches):
                out.append(f"{plan_id} (revision file {paths[0].name})")
    return out


def active_in_db(conn: Connection) -> tuple[list[dict[str, Any]], set[str]]:
    """Plans in flight (rows with what they touch) and the ids of finished plans (contracted or aborted)."""
    from ..db import ledger

    active: list[dict[str, Any]] = []
    finished: set[str] = set()
    for row in ledger.plans(conn) or []:
        if row["phase"] in ("contracted", "aborted"):
            finished.add(row["plan_id"])
            continue
        active.append(
            {"plan_id": row["plan_id"], "phase": row["phase"], "touches": touches_of(row.get("spec") or {})}
        )
    return active, finished


def conflicts(active: list[dict[str, Any]], touches: Mapping[str, Iterable[str]]) -> list[str]:
    return [f"{row['plan_id']} (phase {row['phase']})" for row in active if overlap(row["touches"], touches)]


def conflicts_in_db(
    conn: Connection, schema: str, table: str, columns: set[str]
) -> tuple[list[str], set[str]]:
    """In-flight plans touching ``columns`` of one table, and the ids of finished plans."""
    active, finished = active_in_db(conn)
    return conflicts(active, {f"{schema}.{table}": sorted(columns)}), finished
