"""``ecm lint``: review hand-written revisions before they reach a database.

No database is needed: revisions are rendered offline, so the command runs in CI on a pull
request, in a pre-commit hook or on a laptop, and its answer depends only on the files and
``--pg-version`` (a fixed default rather than whatever server happens to be reachable).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import BadInput
from .common import Common, command


def register(app: typer.Typer) -> None:
    command(app, "lint")(lint)


def lint(
    common: Common,
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="REVISIONS",
            help="REVISION_RANGE or PATH…: a range as `alembic upgrade --sql` takes it (FROM:TO, FROM excluded; "
            "base:head is all), one revision, or revision files. Default: every revision of the application "
            "line and of the contract lineage.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="text, json (one document on stdout) or github (workflow commands)."),
    ] = "text",
    pg_version: Annotated[
        int,
        typer.Option(
            "--pg-version",
            help="Major version of the server the revisions will run on (some rules depend on it).",
        ),
    ] = 15,
) -> int:
    """Report unsafe DDL in the project's revisions, rendered offline and read by PostgreSQL's parser.

    Each finding has a rule id, the lock the statement takes, why running code suffers and the
    `ecm plan` that does the same change safely; it points at the op. call in the revision file,
    where `# ecm: ignore[RULE] reason` silences it. Exit 0 when clean, 1 when anything is found or
    a revision cannot be rendered offline (it is then reported as not linted), 2 on bad input.
    """
    from ..revisions import lint as linter

    chosen = "json" if common.json_output else fmt.lower()
    if chosen not in linter.FORMATS:
        raise BadInput(f"--format must be one of {', '.join(linter.FORMATS)}, not {fmt!r}")
    if common.json_output and fmt.lower() not in ("text", "json"):
        raise BadInput(f"--json and --format {fmt} disagree: give one of them")
    if not 9 <= pg_version <= 99:
        raise BadInput(f"--pg-version must be a PostgreSQL major version (9 to 99), not {pg_version}")
    reports = linter.lint(common.project(), targets or [], pg_version)
    sys.stdout.write(linter.output(reports, chosen, pg_version))
    sys.stdout.flush()
    if chosen == "github":
        # The summary as a human line, beside the annotations the runner reads from stdout.
        summary = linter.as_text(reports, pg_version).rstrip("\n").rsplit("\n", 1)[-1]
        common.say(summary, markup=False)
    return linter.exit_code(reports)
