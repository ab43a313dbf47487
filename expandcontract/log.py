"""The library's loggers: structlog when the application configured it, else standard ``logging``.

A library must never print. structlog unconfigured prints every event, debug lines
included, to stdout, which corrupts ``alembic upgrade --sql > f.sql`` and anything else
an application writes there. So each call asks at that moment: if someone called
``structlog.configure()`` (the ``ecm`` CLI does, on stderr; so may the application),
the event goes through structlog; otherwise it becomes a ``logging`` record on the logger
of the same name, which stays silent unless the application configured ``logging``.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _format(event: str, values: dict[str, Any]) -> str:
    if not values:
        return event
    return (
        event
        + " "
        + " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}" for k, v in values.items())
    )


class Logger:
    """The subset of structlog's bound logger the library uses, routed per call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._std = logging.getLogger(name)

    def _emit(self, level: str, event: str, values: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(self.name), level)(event, **values)
            return
        number = _LEVELS[level]
        if self._std.isEnabledFor(number):
            exc_info = values.pop("exc_info", None)
            self._std.log(number, _format(event, values), exc_info=exc_info, stacklevel=3)

    def debug(self, event: str, **values: Any) -> None:
        self._emit("debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._emit("info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._emit("warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._emit("error", event, values)


def get_logger(name: str) -> Logger:
    return Logger(name)
