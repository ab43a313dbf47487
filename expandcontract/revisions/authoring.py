"""One operation from input checks to revision files: the flow ``ecm plan OPERATION``,
``ecm plan auto`` and the autogenerate hook share.

Everything here is I/O around the pure operation: facts from the catalog (or a MetaData),
plan-id suffixing, prechecks, in-flight conflicts (in the database and in files not yet
applied), and writing only the revisions the plan has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BadInput

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection

    from ..plan.facts import TableFacts
    from ..plan.model import Plan
    from ..plan.ops.base import Operation
    from .project import Project


class InFlightConflict(BadInput):
    """Another plan, in the database or in files not yet applied, touches the same columns."""


#: ``app_head`` value meaning: the application line's single head, read from the files.
FROM_FILES = "<heads>"


@dataclass
class Authored:
    """A plan and the revision files written for it (or that would be, on a dry run)."""

    plan: Plan
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_app_revision(self) -> str | None:
        """The last revision this plan puts on the application line (its backfill, else its expand)."""
        app = [f["revision"] for f in self.files if f["phase"] in ("expand", "backfill")]
        return app[-1] if app else None


def author(
    op: Operation,
    *,
    connect: Callable[[], Any] | None,
    project: Project | None,
    message: str | None,
    dry_run: bool,
    metadata: MetaData | None = None,
    app_head: str | None = FROM_FILES,
    taken: set[str] | None = None,
    planned: Mapping[str, Mapping[str, Iterable[str]]] | None = None,
) -> Authored:
    """Plan ``op`` and write its revisions into ``project`` (nothing when ``dry_run``).

    ``connect`` opens a connection (a context manager) for the catalog; ``metadata`` plans
    from a MetaData instead. ``app_head`` chains the expand after that revision instead of
    the line's head (a revision not written yet: the autogenerate hook's, or an earlier
    plan of the same dry run); ``taken`` adds plan ids already used by such plans, and
    ``planned`` (plan id -> touches) their columns, which conflict as files on disk do.
    """
    op.check_input()
    facts, finished, active_rows = _facts(connect, op, metadata)
    used = set(finished) | (taken or set())
    if project is not None:
        from .inflight import plan_files

        for directory in (project.versions_dir(), project.contracts_dir / "versions"):
            used |= set(plan_files(directory))
    base_id = op.base_plan_id(facts.name)
    if base_id in used:
        n = 2
        while f"{base_id}_{n}" in used:
            n += 1
        op = dataclasses.replace(op, plan_id=f"{base_id}_{n}")
    plan = op.build(facts)
    if (
        metadata is None
        and connect is not None
        and any(s.kind == "precheck" for p in plan.phases for s in p.upgrade)
    ):
        from ..db import prechecks

        with connect() as conn:
            prechecks.run_all(conn, plan)
            conn.rollback()
    from .inflight import conflicts

    active = conflicts(active_rows, plan.touches)
    if active:
        raise InFlightConflict(
            f"a plan is already in flight on {what(plan)}: {', '.join(active)}; finish or abort it first"
        )
    from .inflight import overlap

    same_run = [plan_id for plan_id, touches in (planned or {}).items() if overlap(touches, plan.touches)]
    if same_run:
        raise InFlightConflict(
            f"{what(plan)} is also changed by plan {', '.join(same_run)}, planned in this run"
        )
    files: list[dict[str, Any]] = []
    if project is not None:
        from .inflight import conflicts_in_files

        dirs = [project.versions_dir(), project.contracts_dir / "versions"]
        pending = conflicts_in_files(dirs, plan.touches, finished)
        if pending:
            raise InFlightConflict(
                f"a plan is already in flight on {what(plan)}: {', '.join(pending)}; apply, abort or delete it first"
            )
        files = _write(project, plan, message, dry_run, app_head)
    return Authored(plan, files)


def what(plan: Plan) -> str:
    """The columns a plan touches, for a message: ``users.name/full_name, orders``."""
    parts = []
    for table, columns in plan.touches.items():
        name = plan.table if plan.table and table == f"{plan.schema}.{plan.table}" else table
        cols = [c for c in columns if c != "*"]
        parts.append(f"{name}.{'/'.join(cols)}" if cols else name)
    return ", ".join(parts)


def _facts(
    connect: Callable[[], Any] | None, op: Operation, metadata: MetaData | None
) -> tuple[TableFacts, set[str], list[dict[str, Any]]]:
    if metadata is not None:
        from ..plan.from_metadata import facts_from_metadata

        return facts_from_metadata(metadata, op.schema, op.table, op.column()), set(), []
    if connect is None:  # pragma: no cover - callers pass one or the other
        raise BadInput("no database to read the table's facts from")
    from .inflight import active_in_db

    with connect() as conn:
        facts = read_facts(conn, op)
        active, finished = active_in_db(conn)
        conn.rollback()
    return facts, finished, active


def read_facts(conn: Connection, op: Operation) -> TableFacts:
    """The facts an operation plans from: its table's (found from its index when it names
    one), or the server's alone for an operation without a table; plus related tables'."""
    from ..db.catalog import read_table_facts, server_facts, table_of_index

    index = op.index_name()
    if index is not None:
        schema, table = table_of_index(conn, op.schema, index)
        op = dataclasses.replace(op, schema=schema, table=table)
    if not op.table and not op.needs_table:
        facts = server_facts(conn, op.schema)
    else:
        facts = read_table_facts(conn, op.schema, op.table, op.column(), whole=op.whole_table)
    related = {}
    for schema, table in op.related(facts):
        other = read_table_facts(conn, schema, table, None, whole=True)
        related[f"{other.schema}.{other.name}"] = other.to_json()
    if related:
        facts = dataclasses.replace(facts, extra={**facts.extra, "related": related})
    columns = [read_table_facts(conn, s, t, c).to_json() for s, t, c in op.related_columns(facts)]
    if columns:
        facts = dataclasses.replace(facts, extra={**facts.extra, "columns": columns})
    wanted = op.relations(facts)
    if wanted:
        from ..db.catalog import relation_kinds

        facts = dataclasses.replace(
            facts, extra={**facts.extra, "relations": relation_kinds(conn, facts.schema, wanted)}
        )
    return facts


def _write(
    project: Project, plan: Plan, message: str | None, dry_run: bool, app_head: str | None
) -> list[dict[str, Any]]:
    from .project import scaffold_contracts
    from .writer import prepare

    if app_head == FROM_FILES:
        heads = project.script().get_heads()
        if len(heads) > 1:
            raise BadInput(
                f"the Alembic line has {len(heads)} heads ({', '.join(heads)}); merge them first (alembic merge heads)"
            )
        app_head = heads[0] if heads else None
    revs = prepare(
        plan,
        app_versions=project.versions_dir(),
        app_head=app_head,
        contract_versions=project.contracts_dir / "versions",
        message=message,
    )
    if not dry_run:
        if any(r.phase == "contract" for r in revs):
            scaffold_contracts(project)
        project.versions_dir().mkdir(parents=True, exist_ok=True)
        for rev in revs:
            rev.path.write_text(rev.content)
    return [
        {"phase": r.phase, "revision": r.revision, "down_revision": r.down_revision, "path": str(r.path)}
        for r in revs
    ]


def document(plan: Plan, files: list[dict[str, Any]], dry_run: bool) -> dict[str, Any]:
    """The ``--json`` document of one plan."""
    return {
        **plan.header(),
        "dry_run": dry_run,
        "files": files,
        "notes": list(plan.notes),
        "phases": [
            {
                "name": phase.name,
                "summary": phase.summary,
                "before": phase.before,
                "after": phase.after,
                "rollback": phase.rollback,
                "steps": [
                    {"name": s.name, "kind": s.kind, "lock": s.lock, "sql": s.sql}
                    for s in plan.shown_steps(phase)
                ],
                "downgrade": [
                    {"name": s.name, "kind": s.kind, "lock": s.lock, "sql": s.sql} for s in phase.downgrade
                ],
            }
            for phase in plan.phases
        ],
    }
