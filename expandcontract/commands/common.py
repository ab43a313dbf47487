"""Options every command accepts, and the one place that maps errors to exit codes.

Typer has no "global options after the subcommand", so :func:`command` appends the
common options to each command's own signature and hands the command a
:class:`Common` object instead.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import EXIT_FAILURE, BadInput, EcmError, Refused

if typing.TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.engine import Engine

    from ..revisions.project import Project

F = TypeVar("F", bound=Callable[..., Any])
#: Console width when stderr is not a terminal: wide enough that Rich never crops a table cell.
PIPED_WIDTH = 10_000

_COMMON: dict[str, tuple[Any, Any]] = {
    "database_url": (
        Annotated[
            str | None,
            typer.Option(
                "--database-url",
                envvar="ECM_DATABASE_URL",
                help="Target database URL (postgresql://..., any driver), or `embedded` / `embedded:DIR`. "
                "Default: the database the project's env.py connects to.",
                show_envvar=True,
            ),
        ],
        None,
    ),
    "config": (
        Annotated[
            Path,
            typer.Option(
                "-c",
                "--config",
                help="Path to alembic.ini (or a pyproject.toml with a tool.alembic table).",
                envvar="ECM_ALEMBIC_CONFIG",
            ),
        ],
        Path("alembic.ini"),
    ),
    "name": (
        Annotated[
            str,
            typer.Option(
                "-n",
                "--name",
                help="Section of alembic.ini for the application line (as `alembic -n`).",
                envvar="ECM_ALEMBIC_NAME",
            ),
        ],
        "alembic",
    ),
    "json_output": (
        Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")],
        False,
    ),
    "log_format": (
        Annotated[
            str | None,
            typer.Option(
                "--log-format",
                help="Log format on stderr: console or json (default: console on a TTY, JSON otherwise).",
                envvar="ECM_LOG_FORMAT",
            ),
        ],
        None,
    ),
    "verbose": (
        Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.")],
        False,
    ),
}


@dataclass
class Common:
    """What every command gets: resolved options plus output helpers."""

    database_url: str | None
    config: Path
    name: str
    json_output: bool
    log_format: str | None
    verbose: bool
    _engine: Engine | None = field(default=None, repr=False)
    _console: Console | None = field(default=None, repr=False)
    _project: Project | None = field(default=None, repr=False)
    _url: str | None = field(default=None, repr=False)
    #: Where the database URL came from: "explicit", "env.py" or "sqlalchemy.url".
    url_source: str | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            if sys.stderr.isatty():
                self._console = Console(stderr=True, highlight=False)
            else:
                # Piped output is read by programs and pasted into tickets: never crop or wrap a
                # plan id, a path or SQL to fit an imaginary 80-column terminal.
                self._console = Console(stderr=True, highlight=False, width=PIPED_WIDTH, soft_wrap=True)
        return self._console

    def alembic_config_path(self) -> Path | None:
        from ..revisions.project import exists

        return self.config if exists(self.config) else None

    def project(self) -> Project:
        """The Alembic project (-c/-n), loaded once; BadInput when there is none."""
        if self._project is None:
            from ..revisions.project import load

            self._project = load(self.config, self.name)
        return self._project

    def resolve_url(self) -> str:
        """The psycopg 3 URL of the database this command acts on.

        In a project, that is the database its env.py connects to (an explicit URL must
        agree with it); without one, the explicit URL.
        """
        if self._url is None:
            if self.alembic_config_path() is not None:
                from ..revisions.target import resolve

                self._url, self.url_source = resolve(self.project(), self.database_url)
            elif self.database_url:
                from ..urls import normalize

                self._url, self.url_source = normalize(self.database_url), "explicit"
            else:
                raise BadInput(
                    "no database URL: pass --database-url or set ECM_DATABASE_URL "
                    f"(or run from an Alembic project; no {self.config} here)"
                )
        return self._url

    def engine(self) -> Engine:
        if self._engine is None:
            from ..db.engine import create

            self._engine = create(self.resolve_url())
        return self._engine

    def emit(self, document: Any) -> None:
        """Write the command's one JSON document to stdout (only with --json)."""
        if self.json_output:
            sys.stdout.write(json.dumps(document, default=str, sort_keys=False) + "\n")
            sys.stdout.flush()

    def say(self, message: Any = "", **kwargs: Any) -> None:
        """Human output: stderr, never stdout."""
        self.console.print(message, **kwargs)


def _fail(common: Common, exc: BaseException, code: int) -> typing.NoReturn:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if common.verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"ecm: error: {message}\n")
    if isinstance(exc, Refused):
        for reason in exc.reasons:
            sys.stderr.write(f"  - {reason}\n")
    raise typer.Exit(code)


def configure_logging(log_format: str | None, verbose: bool) -> None:
    """:func:`expandcontract.logconfig.configure`, with its structlog half run on the first
    event that passes its level (most commands log nothing and never import structlog).

    The standard-logging half (stderr, Alembic at WARNING unless verbose) happens now, as
    before: env.py's ``fileConfig()`` and the Alembic commands build on it. When the
    structlog half runs later, it leaves standard logging as it then finds it.
    """
    import logging

    from .. import log
    from ..logconfig import configure, resolve_format

    fmt = resolve_format(log_format)
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if verbose else logging.WARNING, format="%(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)

    def structlog_half() -> None:
        root, alembic = logging.getLogger(), logging.getLogger("alembic")
        saved = (root.level, list(root.handlers), alembic.level)
        configure(fmt, verbose)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        alembic.setLevel(saved[2])

    log.defer_configure(structlog_half, level)


def run(common: Common, body: Callable[[], int | None]) -> None:
    if common.log_format and common.log_format.lower() not in ("console", "json"):
        sys.stderr.write(f"ecm: error: --log-format must be console or json, not {common.log_format!r}\n")
        raise typer.Exit(2)
    configure_logging(common.log_format, common.verbose)
    try:
        code = body()
    except typer.Exit:
        raise
    except EcmError as exc:
        _fail(common, exc, exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("ecm: interrupted\n")
        raise typer.Exit(130) from None
    except Exception as exc:
        from sqlalchemy import exc as sa_exc

        if isinstance(exc, sa_exc.DBAPIError):
            from ..errors import first_line

            _fail(common, RuntimeError(f"database error: {first_line(exc)}"), EXIT_FAILURE)
        if "outside of application context" in str(exc):
            # A Flask-Migrate env.py run without its application (ECM_DATABASE_URL skips the probe).
            hint = "this project's env.py needs its Flask application: run `flask ecm …` instead of `ecm …`"
            _fail(common, BadInput(hint), BadInput.exit_code)
        _fail(common, exc, EXIT_FAILURE)
    finally:
        if common._engine is not None:
            common._engine.dispose()
    if code:
        raise typer.Exit(code)


def _database_url_option(help_text: str) -> Any:
    return Annotated[
        str | None,
        typer.Option("--database-url", envvar="ECM_DATABASE_URL", help=help_text, show_envvar=True),
    ]


def _option_names(annotation: Any) -> tuple[str, ...]:
    """The ``--long``/``-s`` names an ``Annotated[..., typer.Option(...)]`` declares."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, typer.models.OptionInfo):
            # In Annotated form typer keeps the first name where a default would be.
            first = (meta.default,) if isinstance(meta.default, str) and meta.default.startswith("-") else ()
            return (*first, *(str(d) for d in meta.param_decls or ()))
    return ()


def _without_names(annotation: Any, taken: set[str]) -> Any:
    """A common option without the names a command's own option uses (``ecm plan add-index
    --name`` names the index; the Alembic section stays reachable as ``-n`` and its env var)."""
    import copy

    base, *metadata = typing.get_args(annotation)
    out = []
    for meta in metadata:
        if isinstance(meta, typer.models.OptionInfo):
            names = [d for d in _option_names(annotation) if d not in taken]
            meta = copy.copy(meta)
            meta.default, meta.param_decls = names[0], tuple(names[1:])
        out.append(meta)
    return Annotated[(base, *out)]


def command(
    app: typer.Typer, name: str | None = None, *, database_url_help: str | None = None, **kwargs: Any
) -> Callable[[F], F]:
    """Register ``fn(common, **own_options)`` as a command that also takes the common options.

    ``database_url_help`` replaces the shared --database-url help for a command whose default
    differs (``ecm demo`` uses the embedded server).
    """
    common_options = dict(_COMMON)
    if database_url_help:
        common_options["database_url"] = (_database_url_option(database_url_help), None)

    def decorator(fn: F) -> F:
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in list(signature.parameters.values())[1:]
        ]
        taken = {d for p in own for d in _option_names(p.annotation)}
        for n, (ann, default) in list(common_options.items()):
            if taken & set(_option_names(ann)):
                common_options[n] = (_without_names(ann, taken), default)
        extra = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
            for n, (ann, default) in common_options.items()
        ]

        @functools.wraps(fn)
        def wrapper(**options: Any) -> None:
            common = Common(**{n: options.pop(n) for n in _COMMON})
            run(common, lambda: fn(common, **options))

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra,
            return_annotation=None,
        )
        wrapper.__annotations__ = {
            **{p.name: p.annotation for p in own},
            **{n: a for n, (a, _) in common_options.items()},
        }
        app.command(name, **kwargs)(wrapper)
        return fn

    return decorator


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
