"""The library's loggers: structlog when the application configured it, else standard ``logging``.

A library must never print. structlog unconfigured prints every event, debug lines
included, to stdout, which corrupts ``alembic upgrade --sql > f.sql`` and anything else
an application writes there. So each call asks at that moment: if someone called
``structlog.configure()`` (the ``ecm`` CLI does, on stderr; so may the application),
the event goes through structlog; otherwise it becomes a ``logging`` record on the logger
of the same name, which stays silent unless the application configured ``logging``.

structlog is never imported here: if nobody imported it, nobody configured it. The CLI
hands its structlog set-up to :func:`defer_configure`, which runs it when the first event
that would pass its level is logged (most commands log nothing: they never pay for
importing structlog).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

#: A structlog set-up not run yet, and the level below which the events it would filter out.
_pending: tuple[Callable[[], object], int] | None = None
#: True while a deferred set-up runs: other threads wait for it instead of logging around it.
_running = False
_lock = threading.RLock()


def defer_configure(configure: Callable[[], object], level: int) -> None:
    """Run ``configure`` (which calls ``structlog.configure()``) before the first event at
    ``level`` or above; events below it are dropped meanwhile, as its filtering logger would.

    If structlog is already imported (an application may have configured it), ``configure``
    runs now, which is what calling it directly would do.
    """
    global _pending
    with _lock:
        _pending = None
        if "structlog" in sys.modules:
            configure()
        else:
            _pending = (configure, level)


def configure_now() -> None:
    """Run a deferred set-up now (call it before reconfiguring structlog on top of it)."""
    global _pending, _running
    with _lock:
        pending = _pending
        if pending is None:
            return
        _running = True
        _pending = None
        try:
            structlog = sys.modules.get("structlog")
            if structlog is None or not structlog.is_configured():
                pending[0]()
            # else: configured by someone else since the deferral; theirs came later and stands.
        finally:
            _running = False


def _structlog_configured(number: int) -> bool | None:
    """Whether structlog is configured (None: a deferred set-up would filter this event out)."""
    pending = _pending
    if pending is not None:
        if number < pending[1] and "structlog" not in sys.modules:
            return None
        configure_now()
    elif _running:
        with _lock:  # another thread is configuring: wait for it
            pass
    structlog = sys.modules.get("structlog")
    return structlog is not None and bool(structlog.is_configured())


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
        number = _LEVELS[level]
        configured = _structlog_configured(number)
        if configured is None:
            return
        if configured:
            structlog = sys.modules["structlog"]
            getattr(structlog.get_logger(self.name), level)(event, **values)
            return
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
