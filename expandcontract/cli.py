"""The ``ecm`` command line: parse, call, render.

Only typer is imported at module load; every command imports SQLAlchemy, Alembic and
psycopg inside its body, which keeps ``ecm --help`` fast.

A run builds only the part of the command tree it names: ``ecm plan rename-column …``
registers the ``plan`` group with that one operation, ``ecm status`` only the control
commands. Building all of them (every option of every command, through typer and
pydantic) costs more than some commands take to run. ``--help`` at the top, an unknown
name or anything else unusual gets the whole tree, so help texts, error messages and
suggestions are exactly those of the full tree. :data:`app` (docs, ``flask ecm``) is
the whole tree, built on first access.
"""

from __future__ import annotations

from importlib import import_module
from typing import Annotated, Any

import typer

EPILOG = (
    "Exit codes: 0 success; 1 operational failure (database unreachable, DDL failed); "
    "2 bad input (unknown table or column, malformed identifier, bad option); "
    "3 refused by a guard (live code still uses what a contract removes)."
)

#: The modules of :mod:`expandcontract.commands` in registration (``--help``) order.
MODULES = ("control", "plan", "upgrade", "backfill", "lint", "live", "demo")

#: Which module registers each top-level command. Only a shortcut: a name missing here,
#: or a module that no longer registers it, makes the run build the whole tree.
_MODULE_OF = {
    "init": "control",
    "status": "control",
    "plan": "plan",
    "upgrade": "upgrade",
    "abort": "upgrade",
    "backfill": "backfill",
    "verify": "backfill",
    "lint": "lint",
    "instances": "live",
    "check-app": "live",
    "guard": "live",
    "demo": "demo",
}


def _version_callback(value: bool) -> None:
    if value:
        from ._version import version

        typer.echo(f"ecm {version()}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """expandcontract: zero-downtime schema migrations for PostgreSQL, SQLAlchemy and Alembic."""


def build(args: list[str] | None = None) -> typer.Typer:
    """The ``ecm`` Typer app: the whole tree, or only what ``args`` (a command line) runs."""
    new = typer.Typer(
        name="ecm",
        help="expandcontract: zero-downtime schema migrations for PostgreSQL, SQLAlchemy and Alembic.",
        epilog=EPILOG,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    new.callback()(_root)
    name = args[0] if args and not args[0].startswith("-") else None
    module = _MODULE_OF.get(name) if name is not None else None
    if module is not None:
        assert name is not None
        _register(new, module, args[1:] if args else [])
        if name in _names(new):
            return new
        return build()  # the shortcut is stale: the whole tree, as if it had not been tried
    for each in MODULES:
        _register(new, each, [])
    return new


def _register(target: typer.Typer, module: str, rest: list[str]) -> None:
    commands = import_module(f".commands.{module}", __package__)
    if module == "plan":
        # `ecm plan KIND …`: that operation alone (an unknown KIND registers them all).
        kind = rest[0] if rest and not rest[0].startswith("-") else None
        commands.register(target, only=kind)
    else:
        commands.register(target)


def _names(target: typer.Typer) -> set[str]:
    names = {c.name for c in target.registered_commands if isinstance(c.name, str)}
    for group in target.registered_groups:
        for name in (group.name, group.typer_instance.info.name if group.typer_instance else None):
            if isinstance(name, str):
                names.add(name)
    return names


_app: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    """``app``: the whole command tree (docs, ``flask ecm``), built once, on first use."""
    global _app
    if name == "app":
        if _app is None:
            _app = build()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        rv = build(args)(args=argv, standalone_mode=False)
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
