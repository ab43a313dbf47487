"""env.py body of the contract lineage: its own version table inside the control schema."""

from __future__ import annotations

import os
from typing import Any


def _run(**options: Any) -> None:
    from alembic import context

    from ..settings import control_schema
    from .project import CONTRACT_VERSION_TABLE

    context.configure(version_table=CONTRACT_VERSION_TABLE, version_table_schema=control_schema(), **options)
    with context.begin_transaction():
        context.run_migrations()


def _url(config: Any) -> str:
    """By hand (`alembic -n ecm_contracts …`): the database the application line's env.py uses."""
    from pathlib import Path

    from .project import Project, load
    from .target import resolve

    explicit = os.environ.get("ECM_DATABASE_URL") or None
    project = config.attributes.get("ecm_project")
    if not isinstance(project, Project) and config.config_file_name:
        project = load(Path(config.config_file_name))
    if isinstance(project, Project):
        return resolve(project, explicit)[0]
    url = explicit or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set ECM_DATABASE_URL or sqlalchemy.url in alembic.ini")
    return str(url)


def run() -> None:
    from alembic import context
    from sqlalchemy import pool

    from ..db import control
    from ..db.engine import create

    config = context.config
    if context.is_offline_mode():
        _run(url="postgresql+psycopg://", literal_binds=True, dialect_name="postgresql")
        return
    connection = config.attributes.get("connection")
    if connection is not None:  # `ecm upgrade` hands its connection over
        control.ensure(connection)
        _run(connection=connection, transaction_per_migration=True)
        return
    engine = create(_url(config), poolclass=pool.NullPool)
    with engine.connect() as conn:
        control.ensure(conn)
        _run(connection=conn, transaction_per_migration=True)
