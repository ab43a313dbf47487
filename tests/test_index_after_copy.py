"""NEW's indexes are built after the copy: at the end of the backfill, before new code deploys.

What a user sees: after the expand NEW has no index (the batches maintain none), new code's
readiness probe lists the missing index while old code's stays ready, the backfill builds it
CONCURRENTLY once every row is copied and only then records itself complete (so the plan is
``backfilled``, and the contract may run, only with a valid index), whichever way the backfill
runs (``ecm upgrade --phase backfill``, a deferred ``ecm backfill``, inline ``alembic
upgrade``, a psql script), and an INVALID leftover of an interrupted build is built again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import BigInteger, Column, MetaData, Table, Text

from expandcontract import schema_ready

from .project import Project, make_project

PLAN = "rename_accounts_name_full_name"
NO_REPORTERS = {"ECM_ALLOW_NO_REPORTERS": "1"}

SCHEMA = """
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text,
    CONSTRAINT accounts_name_key UNIQUE (name)
);
CREATE INDEX accounts_lower_name_idx ON accounts (lower(name));
INSERT INTO accounts (name, email) SELECT 'user ' || g, 'u' || g || '@example.com' FROM generate_series(1, 3000) g;
"""


def model(column: str) -> MetaData:
    md = MetaData()
    Table(
        "accounts",
        md,
        Column("id", BigInteger, primary_key=True),
        Column(column, Text),
        Column("email", Text),
    )
    return md


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection[Any]) -> Project:
    db.execute(SCHEMA)
    p = make_project(tmp_path / "app", database_url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    made = p.ecm("plan", "rename-column", "accounts", "name", "full_name")
    assert made.returncode == 0, made.stderr
    return p


def new_indexes(db: psycopg.Connection[Any]) -> dict[str, tuple[bool, str]]:
    """Indexes on full_name: name -> (valid, definition)."""
    rows = db.execute(
        "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'accounts'::regclass "
        "AND pg_get_indexdef(i.indexrelid) LIKE '%full_name%'"
    ).fetchall()
    return {str(r[0]): (bool(r[1]), str(r[2])) for r in rows}


def plan_row(db: psycopg.Connection[Any]) -> tuple[str, str]:
    row = db.execute("SELECT phase, backfill_status FROM ecm.plans WHERE plan_id = %s", [PLAN]).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_the_backfill_phase_builds_the_indexes_after_the_copy(
    project: Project, database_url: str, db: psycopg.Connection[Any]
) -> None:
    text = "\n".join(p.read_text() for p in project.versions())
    assert "create index accounts_full_name_key (after the copy)" in text  # in the backfill's docstring

    expanded = project.ecm("upgrade", "--phase", "expand")
    assert expanded.returncode == 0, expanded.stderr
    assert new_indexes(db) == {}
    assert plan_row(db)[0] == "expanded"
    # New code waits for the index; old code, which never reads full_name, stays ready.
    waiting = schema_ready(database_url, model("full_name"))
    assert len(waiting) == 2, waiting
    assert all(p.startswith("index ") and "full_name" in p and PLAN in p for p in waiting)
    assert schema_ready(database_url, model("name")) == []

    backfilled = project.ecm("upgrade", "--phase", "backfill")
    assert backfilled.returncode == 0, backfilled.stderr
    built = new_indexes(db)
    assert set(built) == {"accounts_full_name_key", "accounts_lower_full_name_idx"}, built
    assert all(valid for valid, _ in built.values())
    assert "CREATE UNIQUE INDEX" in built["accounts_full_name_key"][1]
    assert "lower(full_name)" in built["accounts_lower_full_name_idx"][1]
    assert plan_row(db) == ("backfilled", "complete")
    assert schema_ready(database_url, model("full_name")) == []
    names = [e["event"] for e in events(backfilled.stderr)]
    assert names.count("index_built") == 2
    # The indexes came after the last batch and before the completion was verified.
    assert names.index("index_built") > names.index("backfill_start")
    done = next(e for e in events(backfilled.stderr) if e["event"] == "backfill_done")
    assert done["index_build_s"] > 0

    contracted = project.ecm("upgrade", "--phase", "contract", env=NO_REPORTERS)
    assert contracted.returncode == 0, contracted.stderr
    cons = db.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'accounts'::regclass AND contype = 'u'"
    ).fetchall()
    assert cons == [("accounts_full_name_key",)]


def test_a_deferred_backfill_is_complete_only_once_its_indexes_exist(
    project: Project, db: psycopg.Connection[Any]
) -> None:
    assert project.ecm("upgrade", "--phase", "expand").returncode == 0
    ran = project.ecm("backfill", PLAN)
    assert ran.returncode == 0, ran.stderr
    assert all(valid for valid, _ in new_indexes(db).values()) and len(new_indexes(db)) == 2
    assert plan_row(db)[1] == "complete"
    rest = project.ecm("upgrade", "--phase", "backfill")
    assert rest.returncode == 0, rest.stderr
    assert plan_row(db) == ("backfilled", "complete")
    # Nothing left to build: a second run finds the indexes valid.
    again = project.ecm("backfill", PLAN)
    assert again.returncode == 0, again.stderr
    assert "index_built" not in again.stderr


def test_an_invalid_leftover_of_an_interrupted_build_is_built_again(
    project: Project, db: psycopg.Connection[Any]
) -> None:
    assert project.ecm("upgrade", "--phase", "backfill").returncode == 0
    # What a kill -9 or a restart in the middle of CREATE INDEX CONCURRENTLY leaves: an INVALID
    # index, and a backfill whose chunks are all finished but which never recorded completion.
    before = db.execute("SELECT 'accounts_full_name_key'::regclass::oid").fetchone()
    db.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'accounts_full_name_key'::regclass")
    db.execute(
        "UPDATE ecm.plans SET backfill_status = 'running', phase = 'expanded' WHERE plan_id = %s", [PLAN]
    )
    ran = project.ecm("backfill", PLAN)
    assert ran.returncode == 0, ran.stderr
    built = new_indexes(db)
    assert built["accounts_full_name_key"][0] is True
    after = db.execute("SELECT 'accounts_full_name_key'::regclass::oid").fetchone()
    assert after != before  # dropped and built again, not trusted
    assert [e["event"] for e in events(ran.stderr)].count("index_built") == 1
    assert plan_row(db)[1] == "complete"


def test_inline_alembic_upgrade_builds_them_too(project: Project, db: psycopg.Connection[Any]) -> None:
    ran = project.alembic("upgrade", "head")
    assert ran.returncode == 0, ran.stderr
    assert len(new_indexes(db)) == 2 and all(v for v, _ in new_indexes(db).values())
    assert plan_row(db) == ("backfilled", "complete")


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_the_psql_script_builds_them_after_the_copy_and_before_completion(
    project: Project, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    rendered = project.ecm("upgrade", "--phase", "backfill", "--sql")
    assert rendered.returncode == 0, rendered.stderr
    script = rendered.stdout
    call, build, complete = (
        script.index("CALL "),
        script.index("step: create index accounts_full_name_key (after the copy)"),
        script.index("the backfill is complete once its indexes exist"),
    )
    assert call < build < complete
    path = tmp_path / "backfill.sql"
    path.write_text(script)
    ran = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", project.url, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert len(new_indexes(db)) == 2 and all(v for v, _ in new_indexes(db).values())
    assert plan_row(db) == ("backfilled", "complete")
    assert db.execute("SELECT count(*) FROM accounts WHERE full_name IS DISTINCT FROM name").fetchone() == (
        0,
    )


@pytest.mark.parametrize(
    "command", [["rename-column", "r", "room", "room_no"], ["change-type", "r", "room", "bigint"]]
)
def test_an_exclusion_constraint_is_refused_not_lost(
    tmp_path: Path, database_url: str, db: psycopg.Connection[Any], command: list[str]
) -> None:
    """No concurrent build and no USING INDEX for an exclusion constraint: moving the column
    would have dropped it with the old one (a plain index copy was all the new column got)."""
    db.execute(  # btree can exclude on =: no extension needed (the embedded server has none)
        "CREATE TABLE r (id int PRIMARY KEY, room int, CONSTRAINT r_room_excl EXCLUDE USING btree (room WITH =))"
    )
    p = make_project(tmp_path / "app", database_url)
    before = sorted(p.root.rglob("*.py"))
    ran = p.ecm("plan", *command)
    assert ran.returncode == 2
    last = ran.stderr.strip().splitlines()[-1]
    assert "exclusion constraint(s) r_room_excl" in last and "cannot carry over online" in last
    assert sorted(p.root.rglob("*.py")) == before


def test_an_in_place_change_type_keeps_its_exclusion_constraint(
    tmp_path: Path, database_url: str, db: psycopg.Connection[Any]
) -> None:
    """A catalog-only ALTER COLUMN TYPE needs no copy of the constraint: not refused, and the
    constraint is still there after it."""
    db.execute(
        "CREATE TABLE r (id int PRIMARY KEY, code varchar(10), CONSTRAINT r_code_excl EXCLUDE USING btree (code WITH =))"
    )
    p = make_project(tmp_path / "app", database_url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    planned = p.ecm("plan", "change-type", "r", "code", "varchar(20)")
    assert planned.returncode == 0, planned.stderr
    ran = p.ecm("upgrade", "--phase", "contract", env=NO_REPORTERS)
    assert ran.returncode == 0, ran.stderr
    row = db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'r'::regclass AND attname = 'code'"
    ).fetchone()
    assert row == ("character varying(20)",)
    cons = db.execute(
        "SELECT conname, contype FROM pg_constraint WHERE conrelid = 'r'::regclass ORDER BY 1"
    ).fetchall()
    assert ("r_code_excl", "x") in cons
