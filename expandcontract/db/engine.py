"""Engines and connections, with connection failures turned into one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import OperationalError
from ..urls import normalize, redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def create(url: str, **kwargs: Any) -> Engine:
    from sqlalchemy import create_engine

    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 10)
    return create_engine(normalize(url), **kwargs)


def as_engine(bind: Engine | str) -> Engine:
    """Accept an Engine or a URL, the way application-facing helpers take ``bind``."""
    if isinstance(bind, str):
        return create(bind)
    return bind


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    from sqlalchemy import exc as sa_exc

    try:
        conn = engine.connect()
    except sa_exc.DBAPIError as exc:
        raise OperationalError(
            f"cannot connect to {redact(engine.url.render_as_string(hide_password=False))}: {first_line(exc)}"
        ) from exc
    try:
        yield conn
    finally:
        conn.close()


def server_version(conn: Connection) -> str:
    return str(conn.exec_driver_sql("SHOW server_version").scalar_one()).split()[0]
