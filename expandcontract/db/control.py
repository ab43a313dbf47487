"""The control schema: applying the toolkit's own migrations and reading its state.

Upgrades run under a session advisory lock so that concurrent ``ecm init`` calls (or
several pods starting an expand at once) serialize instead of racing on CREATE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..log import get_logger
from ..settings import control_schema
from ..sql.quoting import literal, q

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

VERSION_TABLE = "schema_version"
log = get_logger("expandcontract.control")


def migrations_dir() -> Path:
    """Where the control-schema scripts are: inside the wheel, or at the top of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("expandcontract's control-schema migrations are missing from this install")


def alembic_config(connection: Connection | None, schema: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    cfg.attributes["control_schema"] = schema
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(None, control_schema())).get_current_head()
    assert head is not None
    return head


def lock_key(name: str) -> str:
    """SQL for a stable bigint advisory-lock key derived from a name."""
    return f"hashtextextended({literal('expandcontract:' + name)}, 0)"


def current_revision(conn: Connection, schema: str | None = None) -> str | None:
    schema = schema or control_schema()
    table = f"{q(schema)}.{q(VERSION_TABLE)}"
    exists = conn.exec_driver_sql(f"SELECT to_regclass({literal(table)})").scalar()
    if exists is None:
        return None
    return conn.exec_driver_sql(f"SELECT version_num FROM {table}").scalar()


@contextmanager
def preserved_alembic_proxies() -> Iterator[None]:
    """Alembic keeps one global `op`/`context` proxy and removes it when a command ends; when
    an application revision brings the control schema up (nested command), put its proxies back."""
    from alembic import context as context_module
    from alembic import op as op_module

    saved = [getattr(m, "_proxy", None) for m in (context_module, op_module)]
    try:
        yield
    finally:
        for proxy in saved:
            if proxy is not None:
                proxy._install_proxy()


def _autocommit(conn: Connection) -> bool:
    return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def _commit(conn: Connection) -> None:
    """Commit, except on an autocommit connection (e.g. inside Alembic's autocommit_block, whose
    own transaction object must stay open for Alembic to close)."""
    if not _autocommit(conn) and conn.in_transaction():
        conn.commit()


def ensure(conn: Connection, schema: str | None = None) -> dict[str, Any]:
    """Bring the control schema to head; idempotent and safe to run concurrently.

    Everything happens in ONE transaction holding a transaction-level advisory lock:
    PostgreSQL DDL is transactional, so concurrent callers serialize on the lock and the
    second finds the schema at head, and nothing here depends on a session outliving a
    transaction (safe behind a transaction-pooling PgBouncer). On an autocommit connection
    the transaction is opened and closed by hand. A caller's open transaction is committed.
    """
    from alembic import command

    schema = schema or control_schema()
    head = head_revision()
    manual = _autocommit(conn)
    _commit(conn)
    key = lock_key("control:" + schema)
    if manual:
        conn.exec_driver_sql("BEGIN")
    try:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key})")
        before = current_revision(conn, schema)
        if before != head:
            # Alembic creates its version table before running 0001, so the schema must exist first.
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
            log.info("control_schema_upgrade", schema=schema, from_revision=before, to_revision=head)
            with preserved_alembic_proxies():
                command.upgrade(alembic_config(conn, schema), "head")
    except BaseException:
        if manual:
            conn.exec_driver_sql("ROLLBACK")
        elif conn.in_transaction():
            conn.rollback()
        raise
    if manual:
        conn.exec_driver_sql("COMMIT")
    else:
        _commit(conn)
    return {"schema": schema, "before": before, "version": head, "changed": before != head}


def offline_sql(schema: str | None = None) -> str:
    """The control-schema DDL as a script, for ``ecm upgrade --sql``."""
    import io

    from alembic import command

    schema = schema or control_schema()
    buffer = io.StringIO()
    cfg = alembic_config(None, schema)
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    return buffer.getvalue()
