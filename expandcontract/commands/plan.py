"""``ecm plan <operation>``: write a plan's phases as Alembic revision files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import BadInput
from .common import Common, command

if TYPE_CHECKING:
    from ..plan.facts import TableFacts
    from ..plan.model import Plan

plan_app = typer.Typer(
    name="plan",
    help="Plan a zero-downtime change as expand / backfill / contract Alembic revisions.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app)


@command(plan_app, "rename-column")
def rename_column(
    common: Common,
    table: Annotated[str, typer.Argument(help="Table to change (exact name; no quoting needed).")],
    old: Annotated[str, typer.Argument(help="Current column name.")],
    new: Annotated[str, typer.Argument(help="New column name.")],
    schema: Annotated[
        str | None, typer.Option("--schema", help="Schema of the table (default: search_path).")
    ] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Title for the revisions.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    from_metadata: Annotated[
        str | None,
        typer.Option(
            "--from-metadata", help="module:attribute of a SQLAlchemy MetaData (no database needed)."
        ),
    ] = None,
    rename_to_old_names: Annotated[
        bool,
        typer.Option(
            "--rename-to-old-names",
            help="At contract, rename the new indexes to the old names (takes ACCESS EXCLUSIVE; off by default).",
        ),
    ] = False,
) -> None:
    """Rename a column with zero downtime: NEW beside OLD, a sync trigger, backfill, then drop OLD."""
    from ..plan.rename_column import RenameColumn, build, plan_id_for

    op = RenameColumn(table=table, old=old, new=new, schema=schema, rename_to_old_names=rename_to_old_names)
    from ..plan import checks

    checks.identifier(table, "table")
    checks.identifier(old, "column")
    checks.identifier(new, "new column")
    if schema is not None:
        checks.identifier(schema, "schema")
    project = None
    if not dry_run or common.alembic_config_path() is not None:
        project = common.project()
    facts, finished, active = _facts(common, op.schema, table, old, from_metadata, new)
    taken = set(finished)
    if project is not None:
        from ..revisions.inflight import plan_files

        for directory in (project.versions_dir(), project.contracts_dir / "versions"):
            taken |= set(plan_files(directory))
    base_id = plan_id_for(facts.name, old, new)
    if base_id in taken:
        n = 2
        while f"{base_id}_{n}" in taken:
            n += 1
        op = RenameColumn(**{**op.__dict__, "plan_id": f"{base_id}_{n}"})
    plan = build(op, facts)
    if active:
        raise BadInput(
            f"a plan is already in flight on {table}.{old}: {', '.join(active)}; finish or abort it first"
        )
    files: list[dict[str, Any]] = []
    if project is not None:
        from ..revisions.inflight import conflicts_in_files

        dirs = [project.versions_dir(), project.contracts_dir / "versions"]
        pending = conflicts_in_files(dirs, facts.schema, facts.name, {old, new}, finished)
        if pending:
            raise BadInput(
                f"a plan is already in flight on {table}.{old}: {', '.join(pending)}; apply, abort or delete it first"
            )
        files = _write(project, plan, message, dry_run)
    doc = _document(plan, files, dry_run)
    common.emit(doc)
    if not common.json_output:
        _render(common, plan, files, dry_run)


def _facts(
    common: Common, schema: str | None, table: str, column: str, from_metadata: str | None, new: str
) -> tuple[TableFacts, set[str], list[str]]:
    if from_metadata:
        from ..plan.from_metadata import facts_from_metadata, load_metadata

        metadata = load_metadata(from_metadata)
        return facts_from_metadata(metadata, schema, table, column), set(), []
    from ..db.catalog import read_table_facts
    from ..db.engine import connect
    from ..revisions.inflight import conflicts_in_db

    with connect(common.engine()) as conn:
        facts = read_table_facts(conn, schema, table, column)
        active, finished = conflicts_in_db(conn, facts.schema, facts.name, {column, new})
        conn.rollback()
    return facts, finished, active


def _write(project: Any, plan: Plan, message: str | None, dry_run: bool) -> list[dict[str, Any]]:
    from ..revisions.project import scaffold_contracts
    from ..revisions.writer import prepare

    script = project.script()
    heads = script.get_heads()
    if len(heads) > 1:
        raise BadInput(
            f"the Alembic line has {len(heads)} heads ({', '.join(heads)}); merge them first (alembic merge heads)"
        )
    contract_versions = project.contracts_dir / "versions"
    revs = prepare(
        plan,
        app_versions=project.versions_dir(),
        app_head=heads[0] if heads else None,
        contract_versions=contract_versions,
        message=message,
    )
    if not dry_run:
        scaffold_contracts(project)
        project.versions_dir().mkdir(parents=True, exist_ok=True)
        for rev in revs:
            rev.path.write_text(rev.content)
    return [
        {"phase": r.phase, "revision": r.revision, "down_revision": r.down_revision, "path": str(r.path)}
        for r in revs
    ]


def _document(plan: Plan, files: list[dict[str, Any]], dry_run: bool) -> dict[str, Any]:
    return {
        **plan.header(),
        "dry_run": dry_run,
        "files": files,
        "phases": [
            {
                "name": phase.name,
                "summary": phase.summary,
                "before": phase.before,
                "after": phase.after,
                "rollback": phase.rollback,
                "steps": [
                    {"name": s.name, "kind": s.kind, "lock": s.lock, "sql": s.sql} for s in phase.upgrade
                ],
                "downgrade": [
                    {"name": s.name, "kind": s.kind, "lock": s.lock, "sql": s.sql} for s in phase.downgrade
                ],
            }
            for phase in plan.phases
        ],
    }


def _render(common: Common, plan: Plan, files: list[dict[str, Any]], dry_run: bool) -> None:
    common.say(f"plan [bold]{plan.plan_id}[/]: {plan.title}")
    if dry_run:
        from rich.syntax import Syntax

        for phase in plan.phases:
            common.say(f"\n[bold]{phase.name}[/] — {phase.summary}")
            for i, step in enumerate(phase.upgrade, 1):
                common.say(f"  {i}. {step.name} [dim]({step.lock or step.kind})[/]")
                if step.sql:
                    common.say(Syntax(step.sql, "sql", theme="ansi_dark", background_color="default"))
        common.say("\n(dry run: nothing written)")
        return
    for f in files:
        common.say(f"  {f['phase']:<9} {Path(f['path'])}")
    common.say(
        "next: `ecm upgrade --phase expand` (pre-deploy), then `--phase backfill`, then `--phase contract`"
    )
