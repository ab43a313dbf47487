"""The live guard inside `ecm upgrade` and inside the revisions: overrides are recorded, rollbacks guarded."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text

from expandcontract import LiveReporter

from .project import Project, columns, make_project

PLAN = "rename_accounts_name_full_name"


def metadata(column: str) -> MetaData:
    md = MetaData()
    Table("accounts", md, Column("id", Integer, primary_key=True), Column(column, Text))
    return md


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Project:
    db.execute(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 100) g"
    )
    p = make_project(tmp_path / "app", database_url)
    assert p.ecm("plan", "rename-column", "accounts", "name", "full_name").returncode == 0
    assert p.ecm("upgrade", "--phase", "backfill").returncode == 0
    return p


def ledger(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT step, outcome, actor, detail->>'reason' FROM ecm.ledger WHERE phase = 'contract' "
        "AND step IN ('force-contract', 'allow-no-reporters') ORDER BY id"
    ).fetchall()


def test_allow_no_reporters_is_recorded(project: Project, db: psycopg.Connection) -> None:
    result = project.ecm("upgrade", "--allow-no-reporters")
    assert result.returncode == 0, result.stderr
    rows = ledger(db)
    assert [(r[0], r[1]) for r in rows] == [("allow-no-reporters", "allowed-no-reporters")]
    assert "@" in str(rows[0][2])  # who: database role and OS user@host


def test_force_contract_proceeds_past_live_old_code_and_is_recorded(
    project: Project, db: psycopg.Connection
) -> None:
    with LiveReporter(
        project.url, app="web", version="1", metadata=metadata("name"), interval=0.5, handle_signals=False
    ):
        held = project.ecm("upgrade")
        assert held.returncode == 3 and "web 1" in held.stderr
        no_reason = project.ecm("upgrade", "--force-contract", PLAN)
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
        forced = project.ecm(
            "upgrade", "--force-contract", PLAN, "--reason", "web 1 pods are drained", "--json"
        )
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["contracts"]["applied"] == [
            {**json.loads(forced.stdout)["contracts"]["applied"][0], "plan_id": PLAN, "forced": True}
        ]
    assert "name" not in columns(db, "accounts")
    rows = ledger(db)
    assert [(r[0], r[1], r[3]) for r in rows] == [("force-contract", "forced", "web 1 pods are drained")]


def test_force_does_not_skip_an_unverified_backfill(project: Project, db: psycopg.Connection) -> None:
    db.execute("ALTER TABLE accounts DISABLE TRIGGER USER")
    db.execute("UPDATE accounts SET full_name = 'drifted' WHERE id = 7")
    db.execute("ALTER TABLE accounts ENABLE TRIGGER USER")
    result = project.ecm("upgrade", "--force-contract", PLAN, "--reason", "testing", "--allow-no-reporters")
    assert result.returncode == 3
    assert "out of step" in result.stderr
    assert "name" in columns(db, "accounts")


def test_new_code_never_blocks_the_contract(project: Project, db: psycopg.Connection) -> None:
    with LiveReporter(
        project.url,
        app="web",
        version="2",
        metadata=metadata("full_name"),
        interval=0.5,
        handle_signals=False,
    ):
        result = project.ecm("upgrade")
        assert result.returncode == 0, result.stderr
    assert "name" not in columns(db, "accounts")


def test_expand_rollback_refused_while_new_code_is_live(project: Project, db: psycopg.Connection) -> None:
    with LiveReporter(
        project.url,
        app="web",
        version="2",
        metadata=metadata("full_name"),
        interval=0.5,
        handle_signals=False,
    ):
        result = project.alembic("downgrade", "base", env={"ECM_ALLOW_NO_REPORTERS": "1"})
        assert result.returncode != 0
        assert "rollback of expand" in result.stderr and "web 2" in result.stderr
        assert "full_name" in columns(db, "accounts")
        aborted = project.ecm("abort", PLAN, "--json")
        assert aborted.returncode == 3
        assert json.loads(aborted.stdout)["state"] != "aborted"
        assert json.loads(aborted.stdout)["refused"] is True
        assert "full_name" in columns(db, "accounts")
    result = project.alembic("downgrade", "base", env={"ECM_ALLOW_NO_REPORTERS": "1"})
    assert result.returncode == 0, result.stderr
    assert "full_name" not in columns(db, "accounts")


def test_expand_rollback_refused_while_the_contract_is_applied(
    project: Project, db: psycopg.Connection
) -> None:
    assert project.ecm("upgrade", "--allow-no-reporters").returncode == 0
    result = project.alembic("downgrade", "base", env={"ECM_ALLOW_NO_REPORTERS": "1"})
    assert result.returncode != 0
    assert "roll back the contract first" in result.stderr
    assert "full_name" in columns(db, "accounts")  # the only copy of the data stays


def test_an_aborted_plan_contract_is_skipped_not_held(project: Project, db: psycopg.Connection) -> None:
    aborted = project.ecm("abort", PLAN, "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr
    assert json.loads(aborted.stdout)["state"] == "aborted"
    result = project.ecm("upgrade", "--allow-no-reporters", "--json")
    assert result.returncode == 0, result.stderr
    contracts = json.loads(result.stdout)["contracts"]
    assert contracts["held"] == [] and contracts["applied"] == []
    assert [c["plan_id"] for c in contracts["skipped"]] == [PLAN]
    assert "name" in columns(db, "accounts") and "full_name" not in columns(db, "accounts")
