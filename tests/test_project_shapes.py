"""The matrix: every stock `alembic init` template with the drivers that fit, end to end.

init → plan → the project's own `alembic upgrade head` → `ecm upgrade --phase expand|backfill`
→ guarded contract (held without evidence, then applied in plan order) → abort, with no
ecm setting in the environment: ecm finds the database through the project's env.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .project import columns, triggers
from .shapes import MATRIX, Shape, make_shape

FIRST = "rename_accounts_name_full_name"
SECOND = "rename_accounts_email_email_address"


@pytest.mark.parametrize(("template", "driver"), MATRIX, ids=[f"{t}-{d}" for t, d in MATRIX])
def test_template_and_driver_end_to_end(
    tmp_path: Path, database_url: str, template: str, driver: str
) -> None:
    shape = make_shape(tmp_path / "app", database_url, template, driver)
    done = shape.alembic("upgrade", "head")
    assert done.returncode == 0, done.stderr
    with shape.connect() as conn:
        conn.execute(
            "INSERT INTO accounts (name, email) SELECT 'n' || g, 'e' || g FROM generate_series(1, 500) g"
        )

    init = shape.ecm("init")
    assert init.returncode == 0, init.stderr
    planned = shape.ecm("plan", "rename-column", "accounts", "name", "full_name", "--json")
    assert planned.returncode == 0, planned.stderr
    paths = {f["phase"]: Path(f["path"]) for f in json.loads(planned.stdout)["files"]}
    assert paths["contract"].parent == (shape.contracts_dir / "versions").resolve()
    if template.startswith("pyproject"):
        assert "[ecm_contracts]" in (shape.root / "alembic.ini").read_text()

    # The project's own command runs the expand and the backfill on its own driver; stdout stays clean.
    own = shape.alembic("upgrade", "head")
    assert own.returncode == 0, own.stderr
    assert own.stdout == ""
    with shape.connect() as conn:
        row = conn.execute("SELECT count(*) FROM accounts WHERE full_name IS DISTINCT FROM name").fetchone()
        assert row == (0,)

    second = shape.ecm("plan", "rename-column", "accounts", "email", "email_address")
    assert second.returncode == 0, second.stderr
    expand = shape.ecm("upgrade", "--phase", "expand", "--json")
    assert expand.returncode == 0, expand.stderr
    assert len(json.loads(expand.stdout)["applied"]) == 2
    backfill = shape.ecm("upgrade", "--phase", "backfill", "--json")
    assert backfill.returncode == 0, backfill.stderr
    assert all(b["verified"] for b in json.loads(backfill.stdout)["backfills"])

    held = shape.ecm("upgrade", "--json")
    assert held.returncode == 3, held.stderr
    assert {c["plan_id"] for c in json.loads(held.stdout)["contracts"]["held"]} == {FIRST, SECOND}
    applied = shape.ecm("upgrade", "--allow-no-reporters", "--json")
    assert applied.returncode == 0, applied.stderr
    assert [c["plan_id"] for c in json.loads(applied.stdout)["contracts"]["applied"]] == [FIRST, SECOND]
    with shape.connect() as conn:
        assert list(columns(conn, "accounts")) == ["id", "full_name", "email_address"]
        assert triggers(conn, "accounts") == []

    aborted = shape.ecm("abort", SECOND, "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr
    assert json.loads(aborted.stdout)["state"] == "aborted"
    with shape.connect() as conn:
        assert list(columns(conn, "accounts")) == ["id", "full_name", "email"]
        assert triggers(conn, "accounts") == []
        row = conn.execute("SELECT count(*) FROM accounts WHERE email IS NULL").fetchone()
        assert row == (0,)
    current = shape.alembic("current")
    assert current.returncode == 0, current.stderr


ENV_COMPUTES_URL = """
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)
target_metadata = None


def get_url() -> str:
    # As pydantic settings do: the URL comes from the environment, whatever alembic.ini says.
    return os.environ["APP_DATABASE_URL"]


def run_migrations_offline() -> None:
    context.configure(url=get_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = create_engine(get_url(), poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""


def _env_computes_url(tmp_path: Path, database_url: str) -> tuple[Shape, dict[str, str]]:
    shape = make_shape(tmp_path / "app", database_url, "generic", "psycopg2")
    (shape.root / "migrations" / "env.py").write_text(ENV_COMPUTES_URL)
    ini = shape.root / "alembic.ini"
    ini.write_text(
        "\n".join(
            "sqlalchemy.url = postgresql://user:pass@localhost/dbname"
            if line.startswith("sqlalchemy.url")
            else line
            for line in ini.read_text().splitlines()
        )
        + "\n"
    )
    env = {"APP_DATABASE_URL": database_url.replace("postgresql://", "postgresql+psycopg2://", 1)}
    assert shape.alembic("upgrade", "head", env=env).returncode == 0
    return shape, env


def test_env_py_that_computes_its_url_is_the_database(tmp_path: Path, database_url: str) -> None:
    """Found in fastapi/full-stack-fastapi-template: alembic.ini holds a placeholder, env.py the truth."""
    import psycopg
    from sqlalchemy.engine import make_url

    shape, env = _env_computes_url(tmp_path, database_url)
    init = shape.ecm("init", env=env)
    assert init.returncode == 0, init.stderr
    assert shape.ecm("plan", "rename-column", "accounts", "name", "full_name", env=env).returncode == 0

    # Another database named explicitly: refused before anything changes, in either database.
    other = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    refused = shape.ecm("upgrade", "--phase", "expand", env={**env, "ECM_DATABASE_URL": other})
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.startswith("ecm: error:")]
    assert lines and "env.py" in lines[0] and "ECM_DATABASE_URL" in lines[0], refused.stderr
    with psycopg.connect(database_url) as conn:
        assert list(columns(conn, "accounts")) == ["id", "name", "email"]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]

    # The same database spelled differently (localhost for 127.0.0.1) is the same database.
    url = make_url(database_url)
    same = url.set(host="localhost" if url.host in ("127.0.0.1", None) else url.host)
    agreed = shape.ecm(
        "upgrade",
        "--phase",
        "expand",
        "--json",
        env={**env, "ECM_DATABASE_URL": same.render_as_string(hide_password=False)},
    )
    assert agreed.returncode == 0, agreed.stderr
    assert len(json.loads(agreed.stdout)["applied"]) == 2
    with psycopg.connect(database_url) as conn:
        assert list(columns(conn, "accounts")) == ["id", "name", "email", "full_name"]


SWITCHING_ENV = ENV_COMPUTES_URL.replace(
    """    return os.environ["APP_DATABASE_URL"]""",
    """    # A pathological env.py: the first run (ecm's lookup) sees one database, later runs another.
    marker = os.environ["SWITCH_MARKER"]
    if os.path.exists(marker):
        return os.environ["OTHER_DATABASE_URL"]
    open(marker, "w").close()
    return os.environ["APP_DATABASE_URL"]""",
)


def test_revisions_applied_elsewhere_are_not_reported_as_applied(tmp_path: Path, database_url: str) -> None:
    """After alembic runs, ecm reads the version table back instead of trusting the pending list."""
    import psycopg
    from sqlalchemy.engine import make_url

    shape, env = _env_computes_url(tmp_path, database_url)
    other_name = make_url(database_url).database + "_other"  # type: ignore[operator]
    admin = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{other_name}"')
    try:
        other = make_url(database_url).set(database=other_name, drivername="postgresql+psycopg2")
        planned = shape.ecm("plan", "rename-column", "accounts", "name", "full_name", env=env)
        assert planned.returncode == 0, planned.stderr
        (shape.root / "migrations" / "env.py").write_text(SWITCHING_ENV)
        env = {
            **env,
            "SWITCH_MARKER": str(tmp_path / "switched"),
            "OTHER_DATABASE_URL": other.render_as_string(hide_password=False),
        }
        result = shape.ecm("upgrade", "--phase", "expand", env=env)
        assert result.returncode == 1, result.stderr
        assert "another database" in result.stderr, result.stderr
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other_name}" WITH (FORCE)')


def test_a_version_table_of_its_own(tmp_path: Path, database_url: str) -> None:
    """env.py's `version_table`/`version_table_schema` are where ecm reads the application line too."""
    import psycopg

    shape = make_shape(tmp_path / "app", database_url, "generic", "psycopg")
    env_py = shape.root / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "target_metadata=target_metadata",
            "target_metadata=target_metadata, version_table='app_versions', version_table_schema='meta'",
        )
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA meta")
    assert shape.alembic("upgrade", "head").returncode == 0
    assert shape.ecm("plan", "rename-column", "accounts", "name", "full_name").returncode == 0
    script = shape.ecm("upgrade", "--sql", "--phase", "expand")
    assert script.returncode == 0, script.stderr
    assert "meta.app_versions" in script.stdout and "alembic_version" not in script.stdout
    done = shape.ecm("upgrade", "--phase", "backfill", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["applied"]) == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,)
        assert "full_name" in columns(conn, "accounts")


#: Project shapes, drivers and frameworks: the same on every server version (.ci/run runs them once).
pytestmark = pytest.mark.server_independent
