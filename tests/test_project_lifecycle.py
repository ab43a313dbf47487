"""What happens to a project over time: fresh databases, aborts, missing folders, other shapes.

Each test reproduces a finding from running ecm in real projects (a FastAPI template and a
Flask-Migrate app) and asserts what the user now sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text
from sqlalchemy.engine import make_url

from expandcontract import LiveReporter

from .conftest import Server
from .project import Project, columns, make_project, triggers
from .shapes import clean_env, make_shape

FIRST = "rename_accounts_name_full_name"
SECOND = "rename_accounts_full_name_display_name"
THIRD = "rename_accounts_email_email_address"


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ecm: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def second_database(pg_server: Server) -> Iterator[str]:
    name = f"ecm_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_fresh_database_reaches_the_final_schema(
    tmp_path: Path, database_url: str, second_database: str
) -> None:
    """Plans made one after another in one database; CI's empty database gets every phase in plan order."""
    shape = make_shape(tmp_path / "app", database_url, "generic", "psycopg")
    assert shape.alembic("upgrade", "head").returncode == 0
    with shape.connect() as conn:
        conn.execute(
            "INSERT INTO accounts (name, email) SELECT 'n' || g, 'e' || g FROM generate_series(1, 200) g"
        )

    def step(*args: str) -> dict[str, object]:
        result = shape.ecm(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else {}

    step("plan", "rename-column", "accounts", "name", "full_name")
    step("upgrade", "--allow-no-reporters")
    # The second plan builds on the first one's contracted shape.
    step("plan", "rename-column", "accounts", "full_name", "display_name")
    step("plan", "rename-column", "accounts", "email", "email_address")
    step("upgrade", "--phase", "backfill")
    aborted = step("abort", THIRD, "--allow-no-reporters")
    assert aborted["state"] == "aborted"
    assert any("marked" in s for s in aborted["steps"])  # type: ignore[union-attr]
    step("upgrade", "--allow-no-reporters")
    with shape.connect() as conn:
        final = list(columns(conn, "accounts"))
    assert final == ["id", "email", "display_name"]

    # A new database: the same files, one command.
    fresh = {"ECM_DATABASE_URL": second_database}
    ini = shape.root / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            make_url(database_url).database or "", make_url(second_database).database or ""
        )
    )
    result = shape.ecm("upgrade", "--final", "--json", env=fresh)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [c["plan_id"] for c in doc["contracts"]["applied"]] == [FIRST, SECOND]
    assert [c["plan_id"] for c in doc["contracts"]["skipped"]] == [THIRD]
    with psycopg.connect(second_database) as conn:
        assert list(columns(conn, "accounts")) == final
        assert triggers(conn, "accounts") == []
        phases = dict(conn.execute("SELECT plan_id, phase FROM ecm.plans").fetchall())
    assert phases == {FIRST: "contracted", SECOND: "contracted", THIRD: "aborted"}
    again = shape.ecm("upgrade", "--final", "--json", env=fresh)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["contracts"]["applied"] == []


def _planned(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Project:
    db.execute(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 100) g"
    )
    project = make_project(tmp_path / "app", database_url)
    assert project.ecm("plan", "rename-column", "accounts", "name", "full_name").returncode == 0
    assert project.ecm("upgrade", "--phase", "backfill").returncode == 0
    return project


def test_a_refused_abort_changes_nothing(tmp_path: Path, database_url: str, db: psycopg.Connection) -> None:
    """The guard is asked before any downgrade, so the version table and the plan never disagree."""
    project = _planned(tmp_path, database_url, db)
    heads = db.execute("SELECT version_num FROM alembic_version").fetchall()
    md = MetaData()
    Table("accounts", md, Column("id", Integer, primary_key=True), Column("full_name", Text))
    with LiveReporter(project.url, app="web", version="2", metadata=md, interval=0.5, handle_signals=False):
        for _ in range(2):
            result = project.ecm("abort", FIRST, "--allow-no-reporters", "--json")
            assert result.returncode == 3, result.stderr
            doc = json.loads(result.stdout)
            assert doc["state"] == "backfilled" and doc["refused"] is True
            assert doc["steps"][0].startswith("expand not rolled back: rollback of expand")
            assert not any("in place" in s for s in doc["steps"])
            assert db.execute("SELECT version_num FROM alembic_version").fetchall() == heads
            assert "full_name" in columns(db, "accounts")
    done = project.ecm("abort", FIRST, "--allow-no-reporters", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "aborted"
    assert "full_name" not in columns(db, "accounts")
    # The files stay (Alembic must still find them) and say they were aborted.
    assert all(
        "'aborted'" in p.read_text() for p in project.versions() + project.contracts() if "ecm_" in p.name
    )
    assert project.alembic("heads").returncode == 0
    contract = project.ecm("upgrade", "--json")
    assert contract.returncode == 0, contract.stderr
    assert [c["plan_id"] for c in json.loads(contract.stdout)["contracts"]["skipped"]] == [FIRST]


def test_a_contract_refuses_a_shape_its_plan_never_saw(
    tmp_path: Path, database_url: str, db: psycopg.Connection
) -> None:
    project = _planned(tmp_path, database_url, db)
    db.execute("ALTER TABLE accounts RENAME COLUMN full_name TO something_else")
    result = project.ecm("upgrade", "--allow-no-reporters", "--json")
    assert result.returncode == 3, result.stderr
    reasons = json.loads(result.stdout)["contracts"]["held"][0]["reasons"]
    assert any("has no column full_name" in r for r in reasons), reasons
    assert "name" in columns(db, "accounts")


def test_plans_waiting_on_a_missing_contract_lineage_fail(
    tmp_path: Path, database_url: str, db: psycopg.Connection
) -> None:
    """An image that ships migrations/versions but not the contracts must not exit 0 having done nothing."""
    import shutil

    project = _planned(tmp_path, database_url, db)
    shutil.rmtree(project.root / "migrations" / "contracts")
    result = project.ecm("upgrade", "--allow-no-reporters")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert FIRST in line and "contracts" in line and "missing" in line
    (project.root / "migrations" / "contracts").mkdir()
    broken = project.ecm("upgrade", "--allow-no-reporters")
    assert broken.returncode == 1 and "no env.py" in one_error_line(broken.stderr)


def test_multidb_template_is_refused_with_what_to_do(tmp_path: Path, database_url: str) -> None:
    root = tmp_path / "app"
    root.mkdir()
    subprocess.run(
        [sys.executable, "-m", "alembic", "init", "-t", "multidb", "migrations"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [sys.executable, "-m", "expandcontract", "plan", "rename-column", "accounts", "name", "full_name"],
        cwd=root,
        capture_output=True,
        text=True,
        env=clean_env({"ECM_DATABASE_URL": database_url}),
    )
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "multidb" in line and "-c" in line


def test_pyproject_only_project(tmp_path: Path, database_url: str) -> None:
    """Alembic's pyproject template without an alembic.ini: the lineage registers in [tool.ecm]."""
    shape = make_shape(tmp_path / "app", database_url, "pyproject", "psycopg")
    (shape.root / "alembic.ini").unlink()
    env = {"ECM_DATABASE_URL": database_url}
    assert shape.ecm("upgrade", "--phase", "expand", env=env).returncode == 0
    planned = shape.ecm(
        "plan", "rename-column", "accounts", "name", "full_name", "-c", "pyproject.toml", env=env
    )
    assert planned.returncode == 0, planned.stderr
    text = (shape.root / "pyproject.toml").read_text()
    assert "[tool.ecm]" in text and "migrations/contracts" in text
    done = shape.ecm("upgrade", "--allow-no-reporters", "--json", "-c", "pyproject.toml", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["contracts"]["applied"][0]["plan_id"] == FIRST


def test_library_never_writes_to_stdout(tmp_path: Path, database_url: str, db: psycopg.Connection) -> None:
    """`alembic upgrade --sql > f.sql` with a reporter started at import (as in create_app): SQL only."""
    project = _planned(tmp_path, database_url, db)
    env_py = project.root / "migrations" / "env.py"
    env_py.write_text(
        "from expandcontract import LiveReporter\n"
        f"LiveReporter({project.url!r}, app='web', version='1', uses={{'accounts': ['name']}}, handle_signals=False).start()\n"
        + env_py.read_text()
    )
    result = project.alembic("upgrade", "head", "--sql")
    assert result.returncode == 0, result.stderr
    sql_lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert sql_lines and not any(line.lstrip().startswith(("{", "20")) for line in sql_lines), result.stdout[
        :500
    ]
    assert "live_registered" not in result.stdout


def test_piped_output_is_never_cropped(tmp_path: Path, database_url: str, db: psycopg.Connection) -> None:
    long = "a_rather_long_column_name_that_makes_the_plan_id_long"
    db.execute(f"CREATE TABLE accounts (id serial PRIMARY KEY, {long} text)")
    project = make_project(tmp_path / "app", database_url)
    planned = project.ecm(
        "plan", "rename-column", "accounts", long, "x" + long, env={"ECM_LOG_FORMAT": "console"}
    )
    assert planned.returncode == 0, planned.stderr
    for path in project.versions() + project.contracts():
        assert any(str(path) in line for line in planned.stderr.splitlines()), planned.stderr
    assert project.ecm("upgrade", "--phase", "expand").returncode == 0
    status = project.ecm("status", env={"ECM_LOG_FORMAT": "console"})
    assert status.returncode == 0, status.stderr
    ids = {p["plan_id"] for p in json.loads(project.ecm("status", "--json").stdout)["plans"]}
    assert ids and all(any(i in line for line in status.stderr.splitlines()) for i in ids), status.stderr


def test_ecm_init_needs_no_url_when_env_py_knows_it(tmp_path: Path, database_url: str) -> None:
    shape = make_shape(tmp_path / "app", database_url, "async", "asyncpg")
    result = subprocess.run(
        [sys.executable, "-m", "expandcontract", "init", "--json"],
        cwd=shape.root,
        capture_output=True,
        text=True,
        env={k: v for k, v in clean_env().items() if k != "ECM_DATABASE_URL"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "ecm"


#: Project shapes, drivers and frameworks: the same on every server version (.ci/run runs them once).
pytestmark = pytest.mark.server_independent
