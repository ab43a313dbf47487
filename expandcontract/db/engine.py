"""Engines and connections, with connection failures turned into one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import OperationalError, first_line
from ..urls import normalize, redact

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine


def create(url: str, **kwargs: Any) -> Engine:
    from sqlalchemy import create_engine

    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 10)
    return create_engine(normalize(url), **kwargs)


def bind_url(bind: Any) -> URL:
    """The URL of whatever connection or engine the project handed us, password included.

    ``bind`` is a SQLAlchemy Engine, Connection or AsyncEngine/AsyncConnection, whatever
    its driver. An engine built with the password outside its URL (``connect_args``, a
    ``creator``) still has it on the live DBAPI connection, so it is read back from there.
    """
    engine = getattr(bind, "sync_engine", None) or getattr(bind, "engine", None) or bind
    engine = getattr(engine, "sync_engine", None) or engine
    url: URL = engine.url
    if not url.password and hasattr(bind, "connection"):
        password = _dbapi_password(bind)
        if password:
            url = url.set(password=password)
    return url


def _dbapi_password(conn: Any) -> str | None:
    try:
        raw = conn.connection.driver_connection
    except Exception:
        return None
    info = getattr(raw, "info", None)  # psycopg 3 and psycopg2 (2.8+): ConnectionInfo.password
    password = getattr(info, "password", None)
    if password is None:
        params = getattr(raw, "_params", None)  # asyncpg
        password = getattr(params, "password", None)
    return password if isinstance(password, str) and password else None


def own_engine(bind: Any, **kwargs: Any) -> Engine:
    """A psycopg 3 engine of ecm's own for the database ``bind`` is connected to.

    The backfill engine and sessions with their own settings need psycopg 3 itself, while
    the project's revisions run on whatever driver its ``env.py`` uses (psycopg2, asyncpg
    under ``run_sync``). Connections come from a NullPool: callers dispose the engine.
    """
    from sqlalchemy import pool

    from ..urls import to_psycopg

    kwargs.setdefault("poolclass", pool.NullPool)
    return create(to_psycopg(bind_url(bind)).render_as_string(hide_password=False), **kwargs)


@contextmanager
def own_engine_for(bind: Any) -> Iterator[Engine]:
    engine = own_engine(bind)
    try:
        yield engine
    finally:
        engine.dispose()


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
