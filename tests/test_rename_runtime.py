"""Runtime mechanics of generated revisions: idempotent re-runs, INVALID index leftovers, per-plan locks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from .project import Project, indexes, make_project

PLAN = "rename_accounts_name_full_name"


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Project:
    db.execute(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL UNIQUE);"
        "INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 200) g"
    )
    p = make_project(tmp_path / "app", database_url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    assert p.ecm("plan", "rename-column", "accounts", "name", "full_name").returncode == 0
    return p


def base_revision(project: Project) -> str:
    heads = project.alembic("history").stdout
    return next(
        line.split(" -> ")[1].split(",")[0].strip()
        for line in heads.splitlines()
        if line.startswith("<base>")
    )


def test_rerunning_expand_is_harmless(project: Project, db: psycopg.Connection) -> None:
    """(An INVALID index left by an interrupted build is rebuilt: tests/test_index_after_copy.py,
    now that NEW's indexes are built by the backfill.)"""
    assert project.ecm("upgrade", "--phase", "expand").returncode == 0
    assert "accounts_full_name_key" not in indexes(db, "accounts")  # built after the copy
    # Run the phase again from the start (as an operator would after a failure).
    assert project.alembic("stamp", base_revision(project)).returncode == 0
    result = project.alembic("upgrade", "head", env={"ECM_BACKFILL": "defer"})
    assert result.returncode == 0, result.stderr
    outcomes = db.execute(
        "SELECT step, outcome FROM ecm.ledger WHERE phase = 'expand' ORDER BY id"
    ).fetchall()
    second = outcomes[len(outcomes) // 2 :]
    assert ("add column full_name", "ran") in second  # IF NOT EXISTS: ran again, changed nothing
    assert any(step.startswith("add NOT NULL check") and outcome == "skipped" for step, outcome in second)
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ecm_%'").fetchone() == (1,)


def test_a_second_runner_waits_for_the_plan_lock(project: Project, db: psycopg.Connection) -> None:
    holder = psycopg.connect(project.url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"expandcontract:plan:{PLAN}",))
    proc = subprocess.Popen(
        [sys.executable, "-m", "expandcontract", "upgrade", "--phase", "expand", "--log-format", "json"],
        cwd=project.root,
        env={**__import__("os").environ, "ECM_DATABASE_URL": project.url},
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the runner queues on the plan's advisory lock (however slow its start-up is).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            waiting = db.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if waiting == (1,):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting for the other runner
        assert db.execute("SELECT count(*) FROM ecm.ledger WHERE phase = 'expand'").fetchone() == (0,)
    finally:
        holder.close()  # the other runner finishes
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "plan_lock_wait" in err


def test_direct_url_holds_the_plan_lock(project: Project, db: psycopg.Connection) -> None:
    result = project.ecm("upgrade", "--phase", "expand", env={"ECM_DIRECT_DATABASE_URL": project.url})
    assert result.returncode == 0, result.stderr
    assert "full_name" in [
        r[0]
        for r in db.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'accounts'::regclass"
        ).fetchall()
    ]
