"""env.py body of the contract lineage: its own version table inside the control schema."""

from __future__ import annotations

import os


def run() -> None:
    from alembic import context
    from sqlalchemy import pool

    from ..db import control
    from ..db.engine import create
    from ..settings import control_schema
    from .project import CONTRACT_VERSION_TABLE

    config = context.config
    schema = control_schema()
    if context.is_offline_mode():
        context.configure(
            url="postgresql+psycopg://",
            literal_binds=True,
            dialect_name="postgresql",
            version_table=CONTRACT_VERSION_TABLE,
            version_table_schema=schema,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        control.ensure(connection)
        context.configure(
            connection=connection,
            transaction_per_migration=True,
            version_table=CONTRACT_VERSION_TABLE,
            version_table_schema=schema,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("ECM_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url and config.config_file_name:
        from alembic.config import Config

        url = Config(config.config_file_name).get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set ECM_DATABASE_URL or sqlalchemy.url in alembic.ini")
    engine = create(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        control.ensure(conn)
        context.configure(
            connection=conn,
            transaction_per_migration=True,
            version_table=CONTRACT_VERSION_TABLE,
            version_table_schema=schema,
        )
        with context.begin_transaction():
            context.run_migrations()
