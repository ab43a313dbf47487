"""Bad input for `ecm plan rename-column`: exit 2, one clear line, no file written, nothing changed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import psycopg
import pytest

from .project import Project, make_project

SETUP = """
CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, email text, n int GENERATED ALWAYS AS IDENTITY,
                       doubled int GENERATED ALWAYS AS (id * 2) STORED, secret text, viewed text);
CREATE MATERIALIZED VIEW account_names AS SELECT id, viewed FROM accounts;
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_mine ON accounts USING (secret = current_user);
CREATE TABLE notes (id int, who text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_secret ON notes USING (EXISTS (SELECT 1 FROM accounts a WHERE a.secret = who));
CREATE TABLE events (id int, at date, label text) PARTITION BY RANGE (at);
"""


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Project:
    db.execute(SETUP)
    return make_project(tmp_path / "app", database_url)


def snapshot(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2"
    ).fetchall()


CASES = [
    (["nosuch", "name", "full_name"], "does not exist"),
    (["accounts", "nosuch", "full_name"], "does not exist"),
    (["accounts", "name", "email"], "already exists"),
    (["accounts", "name", "name"], "the same"),
    (["accounts", "id", "account_id"], "primary key"),
    (["accounts", "n", "m"], "identity"),
    (["accounts", "doubled", "twice"], "generated"),
    # Views and the table's own policies are carried through (tests/test_dependent_views.py);
    # a materialized view, and a policy of another table, are not.
    (["accounts", "viewed", "seen"], "materialized view"),
    (["accounts", "secret", "hidden"], "policy by_secret on table public.notes"),
    (["events", "label", "title"], "partitioned"),
    (["accounts", "name", "x" * 64], "63 bytes"),
    (["accounts", "name", "é" * 32], "63 bytes"),
    (["accounts", "name", "full_name", "--schema", "nosuch"], "does not exist"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_bad_input(project: Project, db: psycopg.Connection, args: list[str], message: str) -> None:
    before = snapshot(db)
    result = project.ecm("plan", "rename-column", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ecm: error:") and message in lines[0], lines[0]
    assert project.versions() == [] and not (project.root / "migrations" / "contracts").exists()
    assert snapshot(db) == before
    assert db.execute("SELECT to_regnamespace('ecm')").fetchone() == (None,)


def test_plan_already_in_flight_on_the_column(project: Project, db: psycopg.Connection) -> None:
    assert project.ecm("plan", "rename-column", "accounts", "name", "full_name").returncode == 0
    files = project.versions()
    again = project.ecm("plan", "rename-column", "accounts", "name", "display_name")
    assert again.returncode == 2
    assert "already in flight" in again.stderr and "rename_accounts_name_full_name" in again.stderr
    assert project.versions() == files
    # Once expanded, the database says so too (even if the files were lost).
    assert project.ecm("upgrade", "--phase", "expand").returncode == 0
    for f in files:
        f.unlink()
    for f in project.contracts():
        f.unlink()
    again = project.ecm("plan", "rename-column", "accounts", "full_name", "display_name")
    assert again.returncode == 2 and "already in flight" in again.stderr


def test_missing_alembic_config(tmp_path: Path, database_url: str) -> None:
    from .conftest import run_ecm

    result = run_ecm(
        "plan", "rename-column", "accounts", "name", "x", cwd=tmp_path, env={"ECM_DATABASE_URL": database_url}
    )
    assert result.returncode == 2 and "alembic.ini" in result.stderr


def test_from_metadata_needs_no_database(tmp_path: Path, database_url: str) -> None:
    p = make_project(tmp_path / "app", "postgresql://nobody@127.0.0.1:1/unreachable")
    (p.root / "models.py").write_text(
        textwrap.dedent(
            """
            from sqlalchemy import Column, Integer, MetaData, String, Table

            metadata = MetaData()
            accounts = Table(
                "accounts", metadata,
                Column("id", Integer, primary_key=True),
                Column("name", String(200), nullable=False, unique=True),
            )
            """
        )
    )
    result = p.ecm(
        "plan",
        "rename-column",
        "accounts",
        "name",
        "full_name",
        "--from-metadata",
        "models:metadata",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert len(p.versions()) == 2 and len(p.contracts()) == 1
    bad = p.ecm("plan", "rename-column", "accounts", "name", "x", "--from-metadata", "nosuchmodule:metadata")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
