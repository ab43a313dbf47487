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

from .common import Common, command

if TYPE_CHECKING:
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
    if only == "auto":
        chosen = []
    if only is None or only == "auto" or only not in REGISTRY:
        from .plan_auto import register as register_auto

        register_auto(plan_app)
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
    from ..revisions.authoring import author, document

    op.check_input()
    project = None
    if not dry_run or common.alembic_config_path() is not None:
        project = common.project()
    metadata = None
    if from_metadata:
        from ..plan.from_metadata import load_metadata

        metadata = load_metadata(from_metadata)
    authored = author(
        op,
        connect=lambda: _connect(common),
        project=project,
        message=message,
        dry_run=dry_run,
        metadata=metadata,
    )
    common.emit(document(authored.plan, authored.files, dry_run))
    if not common.json_output:
        _render(common, authored.plan, authored.files, dry_run)


def _connect(common: Common) -> Any:
    from ..db.engine import connect

    return connect(common.engine())


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
