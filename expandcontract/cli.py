"""The ``ecm`` command line: parse, call, render.

Only typer is imported at module load; every command imports SQLAlchemy, Alembic and
psycopg inside its body, which keeps ``ecm --help`` fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .commands import backfill, control, demo, live, plan, upgrade

EPILOG = (
    "Exit codes: 0 success; 1 operational failure (database unreachable, DDL failed); "
    "2 bad input (unknown table or column, malformed identifier, bad option); "
    "3 refused by a guard (live code still uses what a contract removes)."
)

app = typer.Typer(
    name="ecm",
    help="expandcontract: zero-downtime schema migrations for PostgreSQL, SQLAlchemy and Alembic.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        from ._version import version

        typer.echo(f"ecm {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """expandcontract: zero-downtime schema migrations for PostgreSQL, SQLAlchemy and Alembic."""


control.register(app)
plan.register(app)
upgrade.register(app)
backfill.register(app)
live.register(app)
demo.register(app)


def _usage_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):  # typer >= 0.2x vendors click under this base
        types.append(typer.TyperException)
    try:
        import click  # type: ignore[import-not-found,unused-ignore]

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    """Entry point; usage errors become one line and exit code 2 instead of a boxed panel."""
    import sys

    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("ecm: aborted\n")
        sys.exit(1)
    except _usage_error_types() as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():  # no-args help already printed itself
            sys.stderr.write(f"ecm: error: {message}{hint}\n")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
