"""Alembic environment of accounts-app: Alembic's stock env.py plus one line for expandcontract.

The line is ``include_object=expandcontract.autogen.include_object`` below: while a plan is in
flight, `alembic revision --autogenerate` would otherwise propose dropping the column the old code
still uses (or the new one, with the plan's indexes and foreign keys), and accepting that loses data.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

import expandcontract.autogen

config = context.config

# Tests that run this env.py in their own process (pytest-alembic) keep their logging as it is.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def target_metadata() -> Any:
    # pytest-alembic hands the models in (Config(target_metadata=...)); everyone else imports them.
    given = config.attributes.get("target_metadata")
    if given is not None:
        return given
    # The example keeps its two deploys side by side, v1/ and v2/, each an `accounts_app` package;
    # ACCOUNTS_APP_VERSION picks the one to compare against. A real project has one package and
    # simply does `from accounts_app.models import metadata`.
    code = Path(__file__).resolve().parents[1] / os.environ.get("ACCOUNTS_APP_VERSION", "v2")
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    from accounts_app.models import metadata

    return metadata


def configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata(),
        # expandcontract: autogenerate leaves in-flight plans' objects alone ...
        include_object=expandcontract.autogen.include_object,
        # ... and hands unsafe changes (renames, type changes, NOT NULL, indexes) to ecm plans.
        process_revision_directives=expandcontract.autogen.rewrite,
        **kwargs,
    )


def run_migrations_offline() -> None:
    configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")  # pytest-alembic passes its engine here
    if isinstance(given, Connection):
        run_migrations(given)
        return
    connectable = given or engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
