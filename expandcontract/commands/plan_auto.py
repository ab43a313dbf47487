"""``ecm plan auto``: the models' differences from the database, as Alembic sees them, turned into plans.

Breaking differences become one plan each (the operation that makes them safe); safe ones
are listed as Alembic's to keep. A possible rename is never written as a drop: on a
terminal ecm asks, otherwise it stops (exit 2) until ``--rename`` or ``--no-rename`` says.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import Common, command

AUTO_HELP = (
    "Compare the models (env.py's target_metadata, or --metadata) with the database through "
    "Alembic's autogenerate, and write one plan per breaking difference.\n\n"
    "Renames: a dropped and an added column of compatible type in one table (or a dropped and a "
    "created table with the same columns) may be a rename; on a terminal ecm asks, otherwise it "
    "refuses (exit 2) until --rename or --no-rename decides. A column made NOT NULL needs --fill. "
    "Safe differences (new tables, nullable columns, constant defaults, comments) are left to "
    "`alembic revision --autogenerate`, and listed."
)


def register(plan_app: typer.Typer) -> None:
    command(plan_app, "auto", help=AUTO_HELP)(auto)


def auto(
    common: Common,
    metadata: Annotated[
        str | None,
        typer.Option(
            "--metadata", help="module:attribute of the models' MetaData (default: env.py's target_metadata)."
        ),
    ] = None,
    rename: Annotated[
        list[str] | None,
        typer.Option(
            "--rename",
            metavar="TABLE.OLD:NEW",
            help="A rename, not a drop and an add (OLD:NEW for a table). Repeatable.",
        ),
    ] = None,
    no_rename: Annotated[
        list[str] | None,
        typer.Option(
            "--no-rename",
            metavar="TABLE.COLUMN",
            help="Not a rename: drop it (TABLE for a table). Repeatable.",
        ),
    ] = None,
    fill: Annotated[
        list[str] | None,
        typer.Option(
            "--fill",
            metavar="TABLE.COLUMN=SQL",
            help="Value for NULLs / old code's inserts of a column made NOT NULL. Repeatable.",
        ),
    ] = None,
    checks: Annotated[
        bool, typer.Option("--checks", help="Also compare named CHECK constraints (Alembic does not).")
    ] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Title for the revisions.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; write nothing.")
    ] = False,
) -> None:
    from ..autoplan.classify import Choices
    from ..autoplan.compare import upgrade_ops
    from ..autoplan.flow import decide, summary_lines, write_plans
    from ..revisions.authoring import FROM_FILES

    choices = Choices.parse(rename or (), no_rename or (), fill or ())
    project = common.project()
    common.resolve_url()  # env.py connects where ecm does (and project.set_url when given one)
    models = None
    if metadata:
        from ..plan.from_metadata import load_metadata

        models = load_metadata(metadata, "--metadata")
    ops, compared = upgrade_ops(project, models, checks=checks, quiet=not common.verbose)
    interactive = sys.stdin.isatty() and not common.json_output
    given = choices
    result, choices = decide(
        ops, choices, console=common.console if interactive else None, how=lambda q: q.how, metadata=compared
    )
    if choices != given and not common.json_output:
        common.say("same answers without questions: ecm plan auto " + answers(choices))

    def connect() -> Any:
        from ..db.engine import connect as open_connection

        return open_connection(common.engine())

    outcome = write_plans(
        result, connect=connect, project=project, message=message, dry_run=dry_run, app_head=FROM_FILES
    )
    doc = outcome.to_json(dry_run)
    common.emit(doc)
    if common.json_output:
        return
    from rich.markup import escape

    for line in summary_lines(outcome):
        common.say("  " + escape(line))
    for _, authored in outcome.authored:
        for f in authored.files:
            common.say(f"  {f['phase']:<9} {Path(f['path'])}")
    kept = [d for d in outcome.decisions if d.action == "alembic"]
    if kept:
        common.say(
            f"{len(kept)} safe difference(s) left to Alembic: `alembic revision --autogenerate` writes them "
            "(with expandcontract.autogen.rewrite in env.py it leaves the planned ones out)"
        )
    if not outcome.decisions:
        common.say("no differences between the models and the database")
    if dry_run:
        common.say("(dry run: nothing written)")


def answers(choices: Any) -> str:
    """The options that give the same answers (to repeat a run in CI)."""
    import shlex

    words: list[str] = []
    for old, new in choices.renames.items():
        words += ["--rename", f"{old}:{new}"]
    for name in sorted(choices.no_renames):
        words += ["--no-rename", name]
    for column, sql in choices.fills.items():
        words += ["--fill", f"{column}={sql}"]
    return " ".join(shlex.quote(w) for w in words)
