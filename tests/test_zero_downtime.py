"""Zero downtime: old and new application code run through every phase of a rename.

Old code (threads on `name` only, reporting live) runs from before expand until just
before the contract; new code (threads on `full_name` only, reporting live) from after
expand to the end. Every row has one writer, so every row's final value is known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text

from expandcontract import LiveReporter

from .conftest import knob
from .project import Project, columns, make_project
from .workload import Workload

ROWS = knob("ECM_ZDT_ROWS", 50_000)
PAUSE = float(knob("ECM_ZDT_PHASE_MS", 1500)) / 1000
PLAN = "rename_accounts_name_full_name"


def metadata(column: str) -> MetaData:
    md = MetaData()
    Table(
        "accounts",
        md,
        Column("id", Integer, primary_key=True),
        Column(column, Text),
        Column("balance", Integer),
    )
    return md


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Project:
    db.execute(
        "CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL, balance int DEFAULT 0);"
        f"INSERT INTO accounts (name) SELECT 'seed-' || g FROM generate_series(1, {ROWS}) g;"
        "CREATE INDEX accounts_name_idx ON accounts (name);"
        "ANALYZE accounts"
    )
    p = make_project(tmp_path / "app", database_url)
    assert p.ecm("init").returncode == 0
    result = p.ecm("plan", "rename-column", "accounts", "name", "full_name")
    assert result.returncode == 0, result.stderr
    return p


def run(project: Project, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = project.ecm(*args, env={"ECM_LIVE_TTL": "2", **(env or {})})
    return result.returncode, result.stdout, result.stderr


def check_oracle(conn: psycopg.Connection, *workloads: Workload) -> int:
    expected: dict[int, str] = {}
    for w in workloads:
        expected.update(w.expected)
    rows = dict(conn.execute("SELECT id, full_name FROM accounts").fetchall())
    wrong = {i: (v, rows.get(i)) for i, v in expected.items() if rows.get(i) != v}
    assert not wrong, f"{len(wrong)} rows lost their writer's last value, e.g. {list(wrong.items())[:5]}"
    seeds = conn.execute("SELECT count(*) FROM accounts WHERE full_name IS NULL").fetchone()
    assert seeds == (0,)
    return len(expected)


def test_zero_downtime_rename_with_live_reporters(project: Project) -> None:
    ids = list(range(1, ROWS + 1))
    old_ids, new_ids = ids[0::2], ids[1::2]
    old = Workload(project.url, table="accounts", column="name", owned=old_ids, label="v1").start()
    old_reporter = LiveReporter(
        project.url, app="web", version="1.0", metadata=metadata("name"), interval=0.5, handle_signals=False
    ).start()
    try:
        time.sleep(PAUSE)
        old.set_phase("expand")
        code, _, err = run(project, "upgrade", "--phase", "expand")
        assert code == 0, err
        old.set_phase("after-expand")

        new = Workload(project.url, table="accounts", column="full_name", owned=new_ids, label="v2").start()
        new_reporter = LiveReporter(
            project.url,
            app="web",
            version="2.0",
            metadata=metadata("full_name"),
            interval=0.5,
            handle_signals=False,
        ).start()
        time.sleep(PAUSE)
        for w in (old, new):
            w.set_phase("backfill")
        code, _, err = run(project, "upgrade", "--phase", "backfill")
        assert code == 0, err

        # The contract is held while version 1.0 still maps `name`.
        for w in (old, new):
            w.set_phase("contract-held")
        code, out, err = run(project, "upgrade", "--json")
        assert code == 3, err
        held = json.loads(out)["contracts"]["held"]
        assert held[0]["plan_id"] == PLAN
        assert "web 1.0" in " ".join(held[0]["reasons"]) and "public.accounts.name" in " ".join(
            held[0]["reasons"]
        )
        assert "web 2.0" not in " ".join(held[0]["reasons"])
        with project.connect() as conn:
            assert "name" in columns(conn, "accounts")
    finally:
        old_stats = old.stop()
        old_reporter.stop()
    try:
        new.set_phase("contract")
        code, out, err = run(project, "upgrade", "--json")
        assert code == 0, err
        assert json.loads(out)["contracts"]["applied"][0]["plan_id"] == PLAN
        new.set_phase("after-contract")
        time.sleep(PAUSE)
    finally:
        new_stats = new.stop()
        new_reporter.stop()
    assert old_stats.errors == [] and new_stats.errors == [], (old_stats.errors[:5], new_stats.errors[:5])
    with project.connect() as conn:
        assert "name" not in columns(conn, "accounts")
        checked = check_oracle(conn, old, new)
    print(
        f"\nzero-downtime: rows={ROWS} old ops={old_stats.ops} new ops={new_stats.ops} errors=0 "
        f"rows checked={checked} max wait old={old.phase_max} new={new.phase_max}"
    )
    assert old_stats.ops > 0 and new_stats.ops > 0


def test_expand_waits_for_a_long_transaction_without_blocking_traffic(project: Project) -> None:
    lock_timeout = 0.2
    ids = list(range(1, ROWS + 1))
    old = Workload(project.url, table="accounts", column="name", owned=ids[0::2], label="v1").start()
    holding = threading.Event()
    release = threading.Event()

    def blocker() -> None:
        with psycopg.connect(project.url) as conn:  # a long transaction holding ACCESS SHARE on the table
            conn.execute("SELECT count(*) FROM accounts WHERE id < 10").fetchone()
            holding.set()
            release.wait(60)
            conn.rollback()

    def ddl_waiting(conn: psycopg.Connection) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'accounts'::regclass "
            "AND mode = 'AccessExclusiveLock' AND NOT granted"
        ).fetchone()
        return bool(row and row[0])

    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()
    assert holding.wait(10)
    env = {
        **os.environ,
        "ECM_DATABASE_URL": project.url,
        "ECM_LOG_FORMAT": "json",
        "ECM_LOCK_TIMEOUT": "200ms",
    }
    try:
        old.set_phase("expand-blocked")
        proc = subprocess.Popen(
            [sys.executable, "-m", "expandcontract", "upgrade", "--phase", "expand"],
            cwd=project.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Wait until the DDL is queued behind the blocker, then keep the blocker a while longer
        # so the expand has to time out and retry several times.
        seen = 0
        with psycopg.connect(project.url, autocommit=True) as watch:
            deadline = time.monotonic() + 60
            while seen < 3 and time.monotonic() < deadline and proc.poll() is None:
                if ddl_waiting(watch):
                    seen += 1
                    time.sleep(0.3)
                time.sleep(0.02)
        assert seen >= 3, "the expand never queued behind the long transaction"
        assert proc.poll() is None  # still retrying while the blocker holds its lock
        release.set()
        _out, err = proc.communicate(timeout=120)
        old.set_phase("after")
        time.sleep(0.3)
    finally:
        release.set()
        stats = old.stop()
        thread.join(10)
    assert proc.returncode == 0, err
    assert "step_retry" in err  # it waited by timing out and retrying, not by queueing behind the blocker
    assert stats.errors == []
    worst = old.phase_max.get("expand-blocked", 0.0)
    print(f"\nblocked expand: workload ops={stats.ops}, max wait during expand={worst:.3f} s")
    assert worst < lock_timeout + 0.8, f"a workload query waited {worst:.3f} s behind the DDL"
    with project.connect() as conn:
        assert "full_name" in columns(conn, "accounts")
