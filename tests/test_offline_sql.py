"""`ecm upgrade --sql`: the pending steps as one psql script, run by psql and linted by squawk.

A DBA who applies reviewed SQL gets the same end state as `ecm upgrade`: the script is
run here with ``psql -v ON_ERROR_STOP=1`` (autocommit, never one transaction) against a
fresh database, the tables, the ledger and the version tables are checked afterwards,
and squawk must find nothing in it at the server's major version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import Server
from .project import Project, columns, constraints, indexes, make_project, triggers

PLAN = "rename_accounts_name_full_name"
NO_REPORTERS = {"ECM_ALLOW_NO_REPORTERS": "1"}
PSQL = shutil.which("psql")
SQUAWK = Path(sys.executable).parent / "squawk"

pytestmark = [
    pytest.mark.skipif(PSQL is None, reason="psql is not installed"),
    pytest.mark.skipif(not SQUAWK.exists(), reason="squawk-cli is not installed"),
]

SCHEMA = """
CREATE TABLE registry (n varchar(200) PRIMARY KEY);
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name varchar(200) NOT NULL DEFAULT 'anon' REFERENCES registry (n),
    email text,
    CONSTRAINT accounts_name_key UNIQUE (name),
    CONSTRAINT accounts_name_len CHECK (char_length(name) > 0)
);
CREATE INDEX accounts_lower_name_idx ON accounts (lower(name));
CREATE INDEX accounts_email_partial_idx ON accounts (email) WHERE name <> 'anon';
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_name varchar(200) REFERENCES accounts (name) ON UPDATE CASCADE
);
INSERT INTO registry SELECT 'user ' || g FROM generate_series(1, 300) g;
INSERT INTO registry VALUES ('anon');
INSERT INTO accounts (name, email) SELECT 'user ' || g, 'u' || g || '@example.com' FROM generate_series(1, 300) g;
INSERT INTO orders (account_name) SELECT 'user ' || (g % 300 + 1) FROM generate_series(1, 100) g;
"""


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection[Any]) -> Project:
    db.execute(SCHEMA)
    p = make_project(tmp_path / "app", database_url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    result = p.ecm("plan", "rename-column", "accounts", "name", "full_name", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plan_id"] == PLAN
    return p


def render(project: Project, phase: str, path: Path, env: dict[str, str] | None = None) -> str:
    result = project.ecm("upgrade", "--sql", "--phase", phase, env=env)
    assert result.returncode == 0, result.stderr
    path.write_text(result.stdout)
    return result.stdout


def psql(url: str, path: Path) -> subprocess.CompletedProcess[str]:
    assert PSQL is not None
    return subprocess.run(
        [PSQL, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-f", str(path), url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def lint(path: Path, major: int) -> None:
    """squawk at the server's major version must find nothing in the script."""
    proc = subprocess.run(
        [str(SQUAWK), "--pg-version", str(major), "--reporter", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    issues = json.loads(proc.stdout or "[]")
    lines = path.read_text().splitlines()
    found = [f"{i['rule_name']} at line {i['line'] + 1}: {lines[i['line']].strip()}" for i in issues]
    assert not found, "squawk:\n" + "\n".join(found)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def snapshot(conn: psycopg.Connection[Any], column: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT id, {column} FROM accounts ORDER BY id").fetchall()


def version_rows(conn: psycopg.Connection[Any], table: str) -> list[str]:
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
        return []
    return [str(r[0]) for r in conn.execute(f"SELECT version_num FROM {table}").fetchall()]


def test_full_cycle_script_reaches_the_contracted_state(
    project: Project, db: psycopg.Connection[Any], tmp_path: Path, pg_server: Server
) -> None:
    names = snapshot(db, "name")
    files = sorted(p.name for p in project.root.rglob("*") if p.is_file())
    script = tmp_path / "contract.sql"
    text = render(project, "contract", script, env=NO_REPORTERS)

    # --sql changes nothing: no file, no control schema, no version table, no new column.
    assert sorted(p.name for p in project.root.rglob("*") if p.is_file()) == files
    assert db.execute("SELECT to_regnamespace('ecm'), to_regclass('alembic_version')").fetchone() == (
        None,
        None,
    )
    assert "full_name" not in columns(db, "accounts") and triggers(db, "accounts") == []
    # stdout is the script and nothing else: comments, SQL and psql meta-commands.
    assert text.startswith("-- expandcontract: pending steps through phase contract") and text.endswith("\n")
    assert '"event"' not in text and "INFO " not in text and "Running upgrade" not in text
    for line in text.splitlines():
        assert not line.startswith("\\") or line.split()[0] in ("\\set", "\\if", "\\endif"), line
    assert "CREATE OR REPLACE PROCEDURE" in text and "CALL " in text and "DO $ecm_guard$" in text
    assert "-- squawk-ignore ban-drop-column" in text
    lint(script, pg_server.major)  # parsed without a syntax error, and clean

    # CONCURRENTLY and CALL must run outside transaction blocks: psql in autocommit, no -1.
    result = psql(project.url, script)
    assert result.returncode == 0, result.stderr
    assert "ecm: backfill of rename_accounts_name_full_name complete" in result.stderr

    cols = columns(db, "accounts")
    assert "name" not in cols
    assert cols["full_name"] == ("character varying(200)", False, "'anon'::character varying", None)
    assert snapshot(db, "full_name") == names  # every row copied, none changed
    cons = constraints(db, "accounts")
    assert cons["accounts_full_name_key"] == ("UNIQUE (full_name)", True)
    assert cons["accounts_full_name_fkey"] == ("FOREIGN KEY (full_name) REFERENCES registry(n)", True)
    assert cons["accounts_full_name_len"] == ("CHECK ((char_length((full_name)::text) > 0))", True)
    assert not any(name.startswith("ecm_") for name in cons)
    assert constraints(db, "orders")["orders_account_full_name_fkey"] == (
        "FOREIGN KEY (account_name) REFERENCES accounts(full_name) ON UPDATE CASCADE",
        True,
    )
    assert "orders_account_name_fkey" not in constraints(db, "orders")
    idx = indexes(db, "accounts")
    assert "lower((full_name)::text)" in idx["accounts_lower_full_name_idx"][0]
    assert "WHERE ((full_name)::text <> 'anon'::text)" in idx["accounts_email_partial_idx_full_name"][0]
    assert all(valid for _, valid in idx.values())
    assert triggers(db, "accounts") == []
    db.execute("INSERT INTO accounts (email) VALUES ('new@example.com')")  # the default moved too
    assert db.execute("SELECT full_name FROM accounts WHERE email = 'new@example.com'").fetchone() == (
        "anon",
    )

    # Bookkeeping: the ledger, both version tables, and what ecm and alembic report.
    assert db.execute("SELECT phase, backfill_status FROM ecm.plans").fetchall() == [
        ("contracted", "complete")
    ]
    offline = db.execute(
        "SELECT phase FROM ecm.ledger WHERE detail ->> 'offline' = 'true' AND revision IS NOT NULL ORDER BY id"
    ).fetchall()
    assert [r[0] for r in offline] == ["expand", "backfill", "contract"]
    contract_rev = Path(project.contracts()[0]).name.split("_", 1)[0]
    assert version_rows(db, "ecm.contract_version") == [contract_rev]
    status = json.loads(project.ecm("status", "--json").stdout)
    assert [(p["plan_id"], p["phase"]) for p in status["plans"]] == [(PLAN, "contracted")]
    assert status["control_schema"]["up_to_date"] is True
    current = project.alembic("current")
    assert current.returncode == 0 and "(head)" in current.stdout, current.stderr
    later = project.ecm("upgrade", "--json")
    assert later.returncode == 0, later.stderr
    doc = json.loads(later.stdout)
    assert doc["applied"] == [] and doc["backfills"] == []
    assert doc["contracts"] == {"applied": [], "held": [], "skipped": []}

    # The same script run a second time changes nothing: finished revisions are skipped.
    rerun = psql(project.url, script)
    assert rerun.returncode == 0, rerun.stderr
    assert triggers(db, "accounts") == [] and "name" not in columns(db, "accounts")
    assert version_rows(db, "ecm.contract_version") == [contract_rev]
    assert len(version_rows(db, "alembic_version")) == 1


def test_guard_stops_psql_before_any_contract_ddl(
    project: Project, db: psycopg.Connection[Any], tmp_path: Path, pg_server: Server
) -> None:
    script = tmp_path / "refused.sql"
    text = render(project, "contract", script)  # no ECM_ALLOW_NO_REPORTERS: reporters demanded
    assert "no application instance has reported recently" in text
    result = psql(project.url, script)
    assert result.returncode != 0
    assert "contract of rename_accounts_name_full_name refused" in result.stderr
    # Expand and backfill ran; nothing of the contract did.
    cols = columns(db, "accounts")
    assert "name" in cols and cols["full_name"][1] is True  # still nullable
    assert db.execute("SELECT count(*) FROM accounts WHERE full_name IS DISTINCT FROM name").fetchone() == (
        0,
    )
    assert triggers(db, "accounts") == [f"ecm_{PLAN}_sync"]
    assert constraints(db, "accounts")[f"ecm_{PLAN}_nn"][1] is False  # not even validated
    assert "orders_account_name_fkey" in constraints(db, "orders")
    assert db.execute("SELECT phase FROM ecm.plans").fetchone() == ("backfilled",)
    assert version_rows(db, "ecm.contract_version") == []
    # The contract's part of the script is what remains: a new script holds only it.
    rest = tmp_path / "rest.sql"
    remaining = render(project, "contract", rest, env=NO_REPORTERS)
    assert remaining.count("-- revision ") == 1 and "ecm contract of plan" in remaining
    assert psql(project.url, rest).returncode == 0
    assert "name" not in columns(db, "accounts")
    lint(rest, pg_server.major)
    lint(script, pg_server.major)


def test_phase_scripts_expand_then_backfill_then_contract(
    project: Project, db: psycopg.Connection[Any], tmp_path: Path, pg_server: Server
) -> None:
    # --- expand: app revisions applied, the backfill deferred -----------------------------
    expand = tmp_path / "expand.sql"
    text = render(project, "expand", expand)
    assert "CALL " not in text and "DO $ecm_guard$" not in text
    result = psql(project.url, expand)
    assert result.returncode == 0, result.stderr
    assert columns(db, "accounts")["full_name"] == ("character varying(200)", True, None, None)
    assert db.execute("SELECT count(*) FROM accounts WHERE full_name IS NULL").fetchone() == (300,)
    assert db.execute("SELECT phase, backfill_status FROM ecm.plans").fetchone() == ("expanded", "pending")
    assert triggers(db, "accounts") == [f"ecm_{PLAN}_sync"]
    assert all(valid for _, valid in indexes(db, "accounts").values())
    assert "(head)" in project.alembic("current").stdout
    # New writes are already dual-written by the trigger.
    db.execute("INSERT INTO registry VALUES ('late')")
    db.execute("INSERT INTO accounts (name) VALUES ('late')")
    assert db.execute("SELECT full_name FROM accounts WHERE name = 'late'").fetchone() == ("late",)
    lint(expand, pg_server.major)

    # --- backfill: the deferred backfill runs as a procedure ------------------------------
    backfill = tmp_path / "backfill.sql"
    text = render(project, "backfill", backfill)
    assert "-- revision " not in text and "CALL " in text and "-- control schema" not in text
    result = psql(project.url, backfill)
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT count(*) FROM accounts WHERE full_name IS DISTINCT FROM name").fetchone() == (
        0,
    )
    assert db.execute("SELECT phase, backfill_status FROM ecm.plans").fetchone() == ("backfilled", "complete")
    assert "name" in columns(db, "accounts")
    lint(backfill, pg_server.major)

    # --- contract ---------------------------------------------------------------------------
    contract = tmp_path / "contract.sql"
    text = render(project, "contract", contract, env=NO_REPORTERS)
    assert text.count("-- revision ") == 1 and "CALL " not in text
    result = psql(project.url, contract)
    assert result.returncode == 0, result.stderr
    assert "name" not in columns(db, "accounts")
    assert columns(db, "accounts")["full_name"][1:3] == (False, "'anon'::character varying")
    assert db.execute("SELECT phase FROM ecm.plans").fetchone() == ("contracted",)
    lint(contract, pg_server.major)
    doc = json.loads(project.ecm("upgrade", "--json").stdout)
    assert doc["applied"] == [] and doc["contracts"] == {"applied": [], "held": [], "skipped": []}


def test_hand_written_app_revision_is_rendered_in_its_own_transaction(
    tmp_path: Path, database_url: str, db: psycopg.Connection[Any]
) -> None:
    db.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
    p = make_project(tmp_path / "app", database_url)
    result = p.alembic("revision", "-m", "add note title")
    assert result.returncode == 0, result.stderr
    rev = p.versions()[0]
    rev.write_text(
        rev.read_text().replace(
            '    """Upgrade schema."""\n    pass',
            '    """Upgrade schema."""\n'
            "    from alembic import context\n"
            "    assert context.is_offline_mode()\n"
            "    op.add_column('notes', sa.Column('title', sa.Text(), nullable=True))\n"
            "    op.execute(\"COMMENT ON COLUMN notes.title IS 'a note title'\")",
        )
    )
    script = tmp_path / "app.sql"
    text = render(p, "contract", script)
    assert "ALTER TABLE notes ADD COLUMN title TEXT" in text
    result = psql(database_url, script)
    assert result.returncode == 0, result.stderr
    assert "title" in columns(db, "notes")
    assert db.execute("SELECT col_description('notes'::regclass, 3)").fetchone() == ("a note title",)
    assert version_rows(db, "alembic_version") == [rev.name.split("_", 1)[0]]
