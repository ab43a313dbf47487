"""``ecm plan OPERATION``: one command per registered operation, one flow for all of them.

Each command's arguments and options come from the operation's dataclass fields; the
flow around it (input checks, facts from the catalog or MetaData, plan-id suffixing,
in-flight conflicts, writing only the revisions the plan needs, rendering, ``--json``)
is written once here.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import BadInput
from .common import Common, command

if TYPE_CHECKING:
    from ..plan.facts import TableFacts
    from ..plan.model import Plan
    from ..plan.ops.base import Operation


#: Options every operation takes, after its own.
_SHARED: dict[str, tuple[Any, Any]] = {
    "message": (
        Annotated[str | None, typer.Option("--message", "-m", help="Title for the revisions.")],
        None,
    ),
    "dry_run": (
        Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")],
        False,
    ),
    "from_metadata": (
        Annotated[
            str | None,
            typer.Option(
                "--from-metadata", help="module:attribute of a SQLAlchemy MetaData (no database needed)."
            ),
        ],
        None,
    ),
}


def register(app: typer.Typer, only: str | None = None) -> None:
    """Add ``ecm plan`` with a command per operation; ``only`` (a kind): that one alone, if it
    is one (``ecm plan KIND …`` runs one operation, and building the others costs time)."""
    from ..plan.ops import REGISTRY

    plan_app = typer.Typer(
        name="plan",
        help="Plan a zero-downtime change as expand / backfill / contract Alembic revisions.",
        no_args_is_help=True,
    )
    chosen = [REGISTRY[only]] if only is not None and only in REGISTRY else list(REGISTRY.values())
    for op_cls in chosen:
        _register(plan_app, op_cls)
    app.add_typer(plan_app)


def _cli_parameters(op_cls: type[Operation]) -> list[inspect.Parameter]:
    from ..plan.ops.base import Param

    params: list[inspect.Parameter] = []
    hints = typing.get_type_hints(op_cls)
    for f in dataclasses.fields(op_cls):
        spec = f.metadata.get("cli")
        if not isinstance(spec, Param):
            continue
        kind = hints[f.name]
        if typing.get_origin(kind) is tuple:  # tuple[str, ...]: variadic argument / repeated option
            kind = list[str] | None if f.default is not dataclasses.MISSING else list[str]
        if spec.option is None:
            marker: Any = typer.Argument(help=spec.help, metavar=spec.metavar or f.name.upper())
        else:
            names = [spec.option] + ([spec.short] if spec.short else [])
            marker = typer.Option(*names, help=spec.help, metavar=spec.metavar)
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, marker], default=default
            )
        )
    # Arguments first (in field order), then options.
    return sorted(params, key=lambda p: p.default is not inspect.Parameter.empty)


def _register(plan_app: typer.Typer, op_cls: type[Operation]) -> None:
    own = _cli_parameters(op_cls)
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
        for name, (ann, default) in _SHARED.items()
    ]

    def body(common: Common, **values: Any) -> None:
        options = {name: values.pop(name) for name in _SHARED}
        for name, value in values.items():
            if isinstance(value, list):
                values[name] = tuple(value)
            elif value is None and name in _tuples:
                values[name] = ()
        run_plan(common, op_cls(**values), **options)

    _tuples = {
        f.name
        for f in dataclasses.fields(op_cls)
        if typing.get_origin(typing.get_type_hints(op_cls).get(f.name)) is tuple
    }

    body.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("common", inspect.Parameter.POSITIONAL_OR_KEYWORD), *own, *shared]
    )
    body.__annotations__ = {p.name: p.annotation for p in (*own, *shared)}
    body.__doc__ = f"{op_cls.summary}\n\n{op_cls.phases_help}"
    body.__name__ = op_cls.kind.replace("-", "_")
    command(plan_app, op_cls.kind)(body)


def run_plan(
    common: Common, op: Operation, *, message: str | None, dry_run: bool, from_metadata: str | None
) -> None:
    """The flow every operation shares, from input checks to files and output."""
    op.check_input()
    project = None
    if not dry_run or common.alembic_config_path() is not None:
        project = common.project()
    facts, finished, active_rows = _facts(common, op, from_metadata)
    taken = set(finished)
    if project is not None:
        from ..revisions.inflight import plan_files

        for directory in (project.versions_dir(), project.contracts_dir / "versions"):
            taken |= set(plan_files(directory))
    base_id = op.base_plan_id(facts.name)
    if base_id in taken:
        n = 2
        while f"{base_id}_{n}" in taken:
            n += 1
        op = dataclasses.replace(op, plan_id=f"{base_id}_{n}")
    plan = op.build(facts)
    if not from_metadata and any(s.kind == "precheck" for p in plan.phases for s in p.upgrade):
        from ..db import prechecks
        from ..db.engine import connect

        with connect(common.engine()) as conn:
            prechecks.run_all(conn, plan)
            conn.rollback()
    from ..revisions.inflight import conflicts

    active = conflicts(active_rows, plan.touches)
    if active:
        raise BadInput(
            f"a plan is already in flight on {_what(plan)}: {', '.join(active)}; finish or abort it first"
        )
    files: list[dict[str, Any]] = []
    if project is not None:
        from ..revisions.inflight import conflicts_in_files

        dirs = [project.versions_dir(), project.contracts_dir / "versions"]
        pending = conflicts_in_files(dirs, plan.touches, finished)
        if pending:
            raise BadInput(
                f"a plan is already in flight on {_what(plan)}: {', '.join(pending)}; apply, abort or delete it first"
            )
        files = _write(project, plan, message, dry_run)
    doc = _document(plan, files, dry_run)
    common.emit(doc)
    if not common.json_output:
        _render(common, plan, files, dry_run)


def _what(plan: Plan) -> str:
    parts = []
    for table, columns in plan.touches.items():
        name = table.rpartition(".")[2] if table == f"{plan.schema}.{plan.table}" else table
        if plan.table and table == f"{plan.schema}.{plan.table}":
            name = plan.table
        cols = [c for c in columns if c != "*"]
        parts.append(f"{name}.{'/'.join(cols)}" if cols else name)
    return ", ".join(parts)


def _facts(
    common: Common, op: Operation, from_metadata: str | None
) -> tuple[TableFacts, set[str], list[dict[str, Any]]]:
    if from_metadata:
        from ..plan.from_metadata import facts_from_metadata, load_metadata

        metadata = load_metadata(from_metadata)
        return facts_from_metadata(metadata, op.schema, op.table, op.column()), set(), []
    from ..db.engine import connect
    from ..revisions.inflight import active_in_db

    with connect(common.engine()) as conn:
        facts = _read(conn, op)
        active, finished = active_in_db(conn)
        conn.rollback()
    return facts, finished, active


def _read(conn: Any, op: Operation) -> TableFacts:
    """The facts an operation plans from: its table's (found from its index when it names
    one), or the server's alone for an operation without a table; plus related tables'."""
    import dataclasses as dc

    from ..db.catalog import read_table_facts, server_facts, table_of_index

    index = op.index_name()
    if index is not None:
        schema, table = table_of_index(conn, op.schema, index)
        op = dc.replace(op, schema=schema, table=table)
    if not op.table and not op.needs_table:
        facts = server_facts(conn, op.schema)
    else:
        facts = read_table_facts(conn, op.schema, op.table, op.column(), whole=op.whole_table)
    related = {}
    for schema, table in op.related(facts):
        other = read_table_facts(conn, schema, table, None, whole=True)
        related[f"{other.schema}.{other.name}"] = other.to_json()
    if related:
        facts = dc.replace(facts, extra={**facts.extra, "related": related})
    columns = [read_table_facts(conn, s, t, c).to_json() for s, t, c in op.related_columns(facts)]
    if columns:
        facts = dc.replace(facts, extra={**facts.extra, "columns": columns})
    wanted = op.relations(facts)
    if wanted:
        from ..db.catalog import relation_kinds

        facts = dc.replace(
            facts, extra={**facts.extra, "relations": relation_kinds(conn, facts.schema, wanted)}
        )
    return facts


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
        if any(r.phase == "contract" for r in revs):
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


def _render(common: Common, plan: Plan, files: list[dict[str, Any]], dry_run: bool) -> None:
    from rich.markup import escape  # notes and step names carry SQL and rule ids in [brackets]

    common.say(f"plan [bold]{plan.plan_id}[/]: {escape(plan.title)}")
    for note in plan.notes:
        common.say(f"  note: {escape(note)}")
    if dry_run:
        from rich.syntax import Syntax

        # Without colours highlighting changes no character, and pygments' SQL lexer is slow to
        # import (its keyword tables): plain text then, character for character the same output.
        lexer = "sql" if common.console.color_system else "text"
        for phase in plan.phases:
            common.say(f"\n[bold]{phase.name}[/] — {escape(phase.summary)}")
            for i, step in enumerate(plan.shown_steps(phase), 1):
                common.say(f"  {i}. {escape(step.name)} [dim]({escape(step.lock or step.kind)})[/]")
                if step.sql:
                    common.say(Syntax(step.sql, lexer, theme="ansi_dark", background_color="default"))
        common.say("\n(dry run: nothing written)")
        return
    for f in files:
        common.say(f"  {f['phase']:<9} {Path(f['path'])}")
    common.say("next: " + _next_steps([p.name for p in plan.phases]))


def _next_steps(phases: list[str]) -> str:
    words = [f"`--phase {p}`" for p in phases]
    if words:
        words[0] = f"`ecm upgrade --phase {phases[0]}`" + (" (pre-deploy)" if phases[0] != "contract" else "")
    return ", then ".join(words)
