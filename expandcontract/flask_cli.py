"""``flask ecm …``: ecm inside a Flask-Migrate project, with the application loaded.

A Flask-Migrate ``env.py`` reads its engine and metadata from ``current_app``, so every
ecm command that runs it (finding the database, ``upgrade``, ``abort``) needs the Flask
application loaded and its context pushed, the way ``flask db`` has it. Flask loads
this command group through the ``flask.commands`` entry point; it finds the application
the Flask way (``--app`` / ``FLASK_APP``, app factories, ``.flaskenv``), pushes the
context, and hands the arguments to ecm's own command line unchanged. Only defaults
differ, and only where Flask already knows the answer:

* ``-c/--config`` is ``<Migrate directory>/alembic.ini`` (``migrations/alembic.ini``),
  unless given on the command line or in ``ECM_ALEMBIC_CONFIG``;
* ``check-app`` without a target checks the Flask-SQLAlchemy metadata Flask-Migrate
  uses, and ``db`` means that metadata wherever a ``MODULE:ATTRIBUTE`` is expected
  (``--from-metadata db``), so no import path is needed.

Defaults go in through Click's ``default_map``, which ranks below the command line and
the environment: an explicit option always wins without this module parsing ecm's
options. Flask itself is imported only when the command runs: ecm never requires it.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import MetaData

__all__ = ["APP_METADATA", "METADATA_TOKEN", "ecm_command"]

#: What ``db`` stands for when the Flask-SQLAlchemy object is not a module attribute anywhere.
APP_METADATA: MetaData | None = None
#: The ``MODULE:ATTRIBUTE`` shorthand for "the metadata Flask-Migrate compares with".
METADATA_TOKEN = "db"
#: Commands that never run the project's env.py nor read its models: no application needed.
_WITHOUT_APP = frozenset({"demo"})
_HELP = ("-h", "--help")


@click.command(
    "ecm",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
    short_help="expandcontract: zero-downtime schema changes (ecm) inside this application.",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ecm_command(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Run ``ecm ARGS…`` with this Flask application loaded and its context pushed."""
    ctx.exit(run(ctx, list(args)))


def run(ctx: click.Context, args: list[str]) -> int:
    """ecm's command line inside the application context; returns the exit code."""
    import typer

    from .cli import app as ecm_app

    root = typer.main.get_command(ecm_app)
    path, leaf, own = _resolve(root, args)
    verbose = any(a in ("-v", "--verbose") for a in own)
    if not _needs_app(path, leaf, own):
        return _invoke(args, None)
    _declare_cli_process()
    try:
        flask_app = _load_app(ctx)
    except click.UsageError as exc:  # flask.cli.NoAppException: no FLASK_APP, or nothing to find there
        return _fail(f"cannot load the Flask application: {exc.format_message()}", 2, exc, verbose)
    except Exception as exc:  # the application's own import or factory error
        detail = str(exc).strip().splitlines()
        message = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
        return _fail(f"cannot load the Flask application: {message}", 1, exc, verbose)
    with flask_app.app_context():
        defaults = _defaults(flask_app)
        if path[0] == "plan":
            problem = _multidb(leaf, own, defaults)
            if problem:
                return _fail(problem, 2, None, False)
        args = _expand_token(args, path, leaf, own, defaults.get("target"))
        return _invoke(args, _default_map(root, defaults))


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's commands, else None.

    Duck-typed: Typer ≥ 0.2x builds ecm's tree from its own vendored Click, whose classes
    are not the ``click`` package's this module (and Flask) use.
    """
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def _resolve(root: Any, args: list[str]) -> tuple[list[str], Any, list[str]]:
    """(subcommand path, the command it names, the arguments that command parses)."""
    path: list[str] = []
    command = root
    i = 0
    while (commands := _subcommands(command)) is not None:
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            i += 1  # ecm's groups only take flags (--help, --version)
        if i >= len(args) or args[i] not in commands:
            break
        command = commands[args[i]]
        path.append(args[i])
        i += 1
    return path, command, args[i:]


def _needs_app(path: list[str], leaf: Any, own: list[str]) -> bool:
    """Help, ``--version`` and groups print text only: they work without an application."""
    if _subcommands(leaf) is not None or not path or path[0] in _WITHOUT_APP:
        return False
    before_separator = own[: own.index("--")] if "--" in own else own
    return not any(a in _HELP for a in before_separator)


def _declare_cli_process() -> None:
    """A reporter the application starts while loading is a command-line run, not a server.

    Flask's ``flask run`` detection cannot tell from argv here (a table may be called
    ``run``), and this process is known to be a migration run.
    """
    from .live import reporter

    setter = getattr(reporter, "set_process_role", None)
    if setter is not None:
        setter("cli")


def _load_app(ctx: click.Context) -> Flask:
    from flask import current_app
    from flask.cli import ScriptInfo

    if current_app:  # a FlaskGroup(create_app=…) or a test already pushed one
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return app
    info = ctx.ensure_object(ScriptInfo)
    return info.load_app()


def _defaults(flask_app: Flask) -> dict[str, str]:
    """Option defaults Flask knows: the migrations folder's alembic.ini and the models' metadata."""
    defaults: dict[str, str] = {}
    migrate = flask_app.extensions.get("migrate")
    directory = getattr(migrate, "directory", None)
    if directory:
        # Relative to the working directory, as `flask db` reads it.
        defaults["config"] = str(Path(str(directory)) / "alembic.ini")
    target = _metadata_target(flask_app)
    if target is not None:
        defaults["target"] = target
    return defaults


def _multidb(leaf: Any, own: list[str], defaults: dict[str, str]) -> str | None:
    """Why a plan cannot go into this repository, when it is Flask-Migrate's multidb template.

    Its revisions are ``upgrade(engine_name)`` and its env.py calls them once per bind;
    ecm's revisions take no argument, so the plan would be written and then fail in
    ``flask db upgrade``. The config is the one the command will use (``-c``, the
    environment, or the default), read the way Click reads it.
    """
    default_map = {"config": defaults["config"]} if "config" in defaults else None
    try:
        parsed = leaf.make_context("plan", list(own), resilient_parsing=True, default_map=default_map)
        directory = Path(str(parsed.params.get("config") or "alembic.ini")).parent
    except Exception:  # ecm's own parse reports a malformed command line
        return None
    for name in ("script.py.mako", "env.py"):
        path = directory / name
        if path.is_file() and "engine_name" in path.read_text(errors="replace"):
            return (
                f"{directory} is a Flask-Migrate multidb repository (`flask db init --multidb`: its revisions take "
                "engine_name and run once per bind); ecm plans one database at a time and its revisions cannot run "
                "there: use a single-database repository (`flask db init`)"
            )
    return None


def _sqlalchemy_of(flask_app: Flask) -> Any:
    """The Flask-SQLAlchemy object env.py takes its metadata from (Flask-Migrate's, else the app's)."""
    db = getattr(flask_app.extensions.get("migrate"), "db", None)
    if db is None:
        db = flask_app.extensions.get("sqlalchemy")
        if db is not None and not hasattr(db, "metadata"):  # Flask-SQLAlchemy 2 keeps a state object
            db = getattr(db, "db", None)
    return db


def _metadata_target(flask_app: Flask) -> str | None:
    """``MODULE:ATTRIBUTE`` of the application's metadata, in the form ecm's loaders import.

    The attribute the application defines (``app:db``) when one holds the object, so
    output and ``--json`` name something the user recognises; else this module's
    :data:`APP_METADATA`, set to the metadata.
    """
    global APP_METADATA
    from sqlalchemy import MetaData

    db = _sqlalchemy_of(flask_app)
    if db is None:
        return None
    metadatas = getattr(db, "metadatas", None)
    metadata = metadatas.get(None) if isinstance(metadatas, dict) else getattr(db, "metadata", None)
    if not isinstance(metadata, MetaData):
        return None
    found = _attribute_holding(db) or _attribute_holding(metadata)
    if found is not None:
        return found
    APP_METADATA = metadata
    return f"{__name__}:APP_METADATA"


def _attribute_holding(obj: object) -> str | None:
    """The shallowest loaded module attribute that is ``obj`` (the defining module, usually)."""
    found: list[tuple[int, str, str]] = []
    for name, module in list(sys.modules.items()):
        if module is None or name == "__main__" or name.split(".")[0] in ("expandcontract", "flask_migrate"):
            continue
        try:
            namespace = vars(module)
        except Exception:  # lazy or proxy modules without a plain __dict__
            continue
        for attribute, value in list(namespace.items()):
            if value is obj and not attribute.startswith("_"):
                found.append((name.count("."), name, attribute))
    if not found:
        return None
    _, module_name, attribute = min(found)
    return f"{module_name}:{attribute}"


def _expand_token(
    args: list[str], path: list[str], leaf: Any, own: list[str], target: str | None
) -> list[str]:
    """``db`` where a ``MODULE:ATTRIBUTE`` goes becomes the application's metadata."""
    if target is None:
        return args
    start = len(args) - len(own)
    takes_value = {
        opt
        for p in leaf.params
        if getattr(p, "param_type_name", None) == "option" and not p.is_flag and not p.count
        for opt in (*p.opts, *p.secondary_opts)
    }
    out = list(args)
    positional = 0
    i = start
    while i < len(out):
        arg = out[i]
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name == "--from-metadata":
                if eq and value == METADATA_TOKEN:
                    out[i] = f"{name}={target}"
                elif not eq and i + 1 < len(out) and out[i + 1] == METADATA_TOKEN:
                    out[i + 1] = target
            if not eq and name in takes_value:
                i += 1
        elif arg.startswith("-") and len(arg) > 1:
            for j in range(1, len(arg)):  # a cluster of short flags, perhaps ending in -cVALUE
                if f"-{arg[j]}" in takes_value:
                    if j == len(arg) - 1:
                        i += 1
                    break
        else:
            if path == ["check-app"] and positional == 0 and arg == METADATA_TOKEN:
                out[i] = target
            positional += 1
        i += 1
    return out


def _default_map(root: Any, defaults: dict[str, str]) -> dict[str, Any]:
    """Click's nested default_map: each command gets the defaults it has parameters for."""
    tree: dict[str, Any] = {}
    for name, command in (_subcommands(root) or {}).items():
        if _subcommands(command) is not None:
            tree[name] = _default_map(command, defaults)
            continue
        params = {p.name for p in command.params}
        own = {k: v for k, v in defaults.items() if k in params and (k != "target" or name == "check-app")}
        if own:
            tree[name] = own
    return tree


def _invoke(args: list[str], default_map: dict[str, Any] | None) -> int:
    """ecm's own command line (same options, exit codes and one-line errors), named ``flask ecm``."""
    import typer

    from .cli import _usage_error_types
    from .cli import app as ecm_app

    extra: dict[str, Any] = {"default_map": default_map} if default_map else {}
    try:
        rv = ecm_app(args=args, prog_name="flask ecm", standalone_mode=False, **extra)
    except typer.Abort:
        sys.stderr.write("ecm: aborted\n")
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code)
    except _usage_error_types() as exc:
        uctx = getattr(exc, "ctx", None)
        hint = f" (see '{uctx.command_path} --help')" if uctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():
            sys.stderr.write(f"ecm: error: {message}{hint}\n")
        return int(getattr(exc, "exit_code", 2))
    return rv if isinstance(rv, int) else 0


def _fail(message: str, code: int, exc: BaseException | None, verbose: bool) -> int:
    if verbose and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"ecm: error: {' '.join(message.split())}\n")
    return code
