"""structlog setup for the CLI only; the library itself never configures logging.

Logs go to stderr so stdout stays clean for ``--json`` documents.
"""

from __future__ import annotations

import logging
import sys


def resolve_format(requested: str | None) -> str:
    from .settings import get

    fmt = (requested or get("ECM_LOG_FORMAT") or "").lower()
    if fmt in ("console", "json"):
        return fmt
    return "console" if sys.stderr.isatty() else "json"


def configure(fmt: str | None, verbose: bool) -> str:
    import structlog

    fmt = resolve_format(fmt)
    level = logging.DEBUG if verbose else logging.INFO
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if fmt == "json":
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Alembic logs through stdlib logging; route it to stderr at WARNING unless verbose.
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if verbose else logging.WARNING, format="%(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)
    return fmt
