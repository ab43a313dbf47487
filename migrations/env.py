"""Alembic environment for expandcontract's own control schema.

Run by ``expandcontract.db.control``; it never reads the application's alembic.ini.
The version table lives inside the control schema so it never collides with the
application's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

from expandcontract.db.control import VERSION_TABLE
from expandcontract.settings import control_schema

config = context.config
schema = config.attributes.get("control_schema") or control_schema()
connection = config.attributes.get("connection")

if connection is None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "postgresql+psycopg://",
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        dialect_name="postgresql",
    )
    with context.begin_transaction():
        context.run_migrations(control_schema=schema)
else:
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations(control_schema=schema)
