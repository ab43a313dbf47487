"""The backfill engine against a real server: shapes of keys, resume after SIGKILL, verify, CLI.

Tables are the rename-column case (``name`` -> ``full_name``) with the real dual-write
trigger installed, so every test exercises the trigger's fast path and its WHEN clause.
Sizes come from ``knob()``: ``ECM_TEST_BACKFILL_ROWS`` (default 20,000).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import structlog
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from expandcontract.backfill.engine import BackfillOptions, run_backfill, verify
from expandcontract.backfill.health import ProbeContext
from expandcontract.backfill.spec import BackfillSpec
from expandcontract.db import control
from expandcontract.sql import trigger

from .conftest import knob, run_ecm

ROWS = knob("ECM_TEST_BACKFILL_ROWS", 20_000)

SHAPES: dict[str, tuple[str, tuple[str, ...], str]] = {
    # kind: (columns DDL before name, key, key_kind)
    "pk": ("id bigint PRIMARY KEY", ("id",), "pk"),
    "identity": ("id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY", ("id",), "pk"),
    "composite": (
        '"Tenant" text NOT NULL, seq int NOT NULL, PRIMARY KEY ("Tenant", seq)',
        ("Tenant", "seq"),
        "pk",
    ),
    "unique": ("token uuid NOT NULL UNIQUE", ("token",), "unique"),
    "ctid": ("n int", (), "ctid"),
}

ROW_SQL = {
    "pk": "INSERT INTO users (id, name) SELECT g, 'user ' || g FROM generate_series(1, %s) g",
    "identity": "INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, %s) g",
    "composite": (
        'INSERT INTO users ("Tenant", seq, name) '
        "SELECT 'tenant-' || (g %% 7), g, 'user ' || g FROM generate_series(1, %s) g"
    ),
    "unique": (
        "INSERT INTO users (token, name) SELECT md5(g::text)::uuid, 'user ' || g FROM generate_series(1, %s) g"
    ),
    "ctid": "INSERT INTO users (n, name) SELECT g, 'user ' || g FROM generate_series(1, %s) g",
}


def sa_engine(url: str) -> Engine:
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def make_table(
    db: psycopg.Connection[Any], url: str, kind: str = "pk", rows: int = ROWS, plan: str = "p1"
) -> BackfillSpec:
    """The table as expand leaves it: full_name added (NULL everywhere), trigger installed."""
    cols, key, key_kind = SHAPES[kind]
    db.execute(f"CREATE TABLE users ({cols}, name text)")
    db.execute(ROW_SQL[kind], [rows])  # type: ignore[arg-type]
    db.execute("ALTER TABLE users ADD COLUMN full_name text")
    db.execute("VACUUM ANALYZE users")
    db.execute(trigger.function_sql("public", "users_dual", "name", "full_name"))  # type: ignore[arg-type]
    db.execute(trigger.trigger_sql("public", "users", "users_dual", "users_dual"))  # type: ignore[arg-type]
    engine = sa_engine(url)
    with engine.connect() as conn:
        control.ensure(conn)
    engine.dispose()
    spec = BackfillSpec(
        plan_id=plan,
        schema="public",
        table="users",
        key=key,
        key_kind=key_kind,  # type: ignore[arg-type]
        set_sql='"full_name" = "name"',
        pending_sql='"full_name" IS DISTINCT FROM "name"',
        mismatch_sql='"full_name" IS DISTINCT FROM "name"',
        rows_estimate=rows,
    )
    db.execute(
        "INSERT INTO ecm.plans (plan_id, operation, table_schema, table_name, spec, phase) "
        "VALUES (%s, 'rename_column', 'public', 'users', %s::jsonb, 'expanded')",
        [plan, json.dumps({"backfill": spec.to_json()})],
    )
    return spec


def out_of_step(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name").fetchone()
    assert row is not None
    return int(row[0])


def plan_row(db: psycopg.Connection[Any], plan: str = "p1") -> dict[str, Any]:
    cur = db.execute("SELECT * FROM ecm.plans WHERE plan_id = %s", [plan])
    names = [d.name for d in cur.description or []]
    row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def checkpoints(db: psycopg.Connection[Any], plan: str = "p1") -> list[dict[str, Any]]:
    cur = db.execute("SELECT * FROM ecm.backfill_checkpoints WHERE plan_id = %s ORDER BY chunk", [plan])
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    e = sa_engine(database_url)
    yield e
    e.dispose()


# --------------------------------------------------------------------------- key shapes


@pytest.mark.parametrize("kind", ["pk", "identity", "composite", "unique", "ctid"])
def test_every_key_shape_backfills_every_row(
    kind: str, db: psycopg.Connection[Any], database_url: str, engine: Engine
) -> None:
    spec = make_table(db, database_url, kind)
    assert out_of_step(db) == ROWS
    # Two workers over several chunks: also exercises chunk planning on this key type.
    result = run_backfill(engine, spec, BackfillOptions(workers=2, chunks=5, start_batch=500), progress=False)
    assert result.status == "complete"
    assert out_of_step(db) == 0
    assert result.rows_updated == ROWS
    if kind != "ctid":
        assert result.rows_done == ROWS == result.rows_total
    ck = checkpoints(db)
    assert all(c["finished_at"] is not None for c in ck)
    assert plan_row(db)["backfill_status"] == "complete"
    assert verify(engine, spec).ok


def test_never_overwrites_a_newer_value_and_never_writes_the_key(
    db: psycopg.Connection[Any], database_url: str, engine: Engine
) -> None:
    spec = make_table(db, database_url, "identity")
    # New code writes only the new column before the backfill reaches the row: the trigger
    # brings the old side along, and the backfill must leave both alone.
    db.execute("UPDATE users SET full_name = 'Newer' WHERE id IN (10, 5000)")
    stop = threading.Event()
    written: dict[int, str] = {}

    def writer() -> None:
        with psycopg.connect(database_url, autocommit=True) as w:
            i = 0
            while not stop.is_set():
                key = 1 + (i * 7919) % ROWS
                w.execute("UPDATE users SET full_name = %s WHERE id = %s", [f"live {i}", key])
                written[key] = f"live {i}"
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        result = run_backfill(engine, spec, BackfillOptions(max_batch=2_000), progress=False)
    finally:
        stop.set()
        t.join()
    assert result.status == "complete"
    assert out_of_step(db) == 0
    rows = dict(db.execute("SELECT id, full_name FROM users WHERE id = ANY(%s)", [list(written)]).fetchall())
    assert rows == written
    if 10 not in written:
        assert db.execute("SELECT name, full_name FROM users WHERE id = 10").fetchone() == ("Newer", "Newer")


def _rewrite_keys(db: psycopg.Connection[Any], sql: str) -> None:
    """Move keys around behind the trigger's back and make every row pending again."""
    db.execute("ALTER TABLE users DISABLE TRIGGER users_dual")
    db.execute(sql)  # type: ignore[arg-type]
    db.execute("UPDATE users SET full_name = NULL")
    db.execute("ALTER TABLE users ENABLE TRIGGER users_dual")
    db.execute("VACUUM ANALYZE users")


def test_integer_keys_dense_with_a_hole_and_sparse(
    db: psycopg.Connection[Any], database_url: str, engine: Engine
) -> None:
    spec = make_table(db, database_url, "pk", rows=10_000)
    # Keys 1..8000 and 10001..12000: dense enough for arithmetic ranges (no bound query),
    # and a 2000-key hole the walk must jump over rather than crawl through.
    _rewrite_keys(db, "UPDATE users SET id = id + 2000 WHERE id > 8000")
    with structlog.testing.capture_logs() as logs:
        dense = run_backfill(engine, spec, BackfillOptions(max_batch=500, start_batch=500), progress=False)
    assert dense.status == "complete" and out_of_step(db) == 0
    assert dense.rows_done == dense.rows_updated == 10_000
    uppers = [e["upper"] for e in logs if e["event"] == "backfill_batch"]
    assert uppers and not any(8500 < u <= 10_000 for u in uppers), uppers

    # Keys 100010, 100020, ...: too sparse for arithmetic; each batch finds its upper key first.
    _rewrite_keys(db, "UPDATE users SET id = id * 10 + 100000")
    with structlog.testing.capture_logs() as logs:
        sparse = run_backfill(
            engine, spec, BackfillOptions(max_batch=500, start_batch=500, restart=True), progress=False
        )
    assert sparse.status == "complete" and out_of_step(db) == 0
    assert sparse.rows_done == sparse.rows_updated == 10_000
    assert all(e["rows"] <= 500 for e in logs if e["event"] == "backfill_batch")


def test_second_run_is_a_no_op(db: psycopg.Connection[Any], database_url: str, engine: Engine) -> None:
    spec = make_table(db, database_url, "pk", rows=1000)
    assert run_backfill(engine, spec, progress=False).status == "complete"
    again = run_backfill(engine, spec, progress=False)
    assert again.status == "already_complete" and again.rows_done == 0 and again.rows_total == 1000


class Inserter:
    """Between batches, what an insert-heavy application does meanwhile: 500 new rows a time."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.inserted = 0

    def __call__(self, ctx: ProbeContext) -> str | None:
        self.conn.execute("INSERT INTO users (name) SELECT 'late ' || g FROM generate_series(1, 500) g")
        self.inserted += 500
        return None


@pytest.mark.parametrize("workers", [1, 2])
def test_only_the_rows_there_at_the_start_are_walked(
    db: psycopg.Connection[Any], database_url: str, engine: Engine, workers: int
) -> None:
    """Rows inserted during the backfill went through the trigger: the walk ends at the greatest
    key there was when it was planned instead of chasing the inserts."""
    spec = make_table(db, database_url, "identity", rows=5000)
    inserter = Inserter(database_url)
    try:
        result = run_backfill(
            engine,
            spec,
            BackfillOptions(workers=workers, chunks=4, start_batch=200, max_batch=200),
            probe=inserter,
            progress=False,
        )
    finally:
        inserter.conn.close()
    assert inserter.inserted >= 5000  # as many rows came in as there were to copy
    assert result.status == "complete" and out_of_step(db) == 0
    assert result.rows_done == 5000 == result.rows_updated
    last = max(c["hi_key"] for c in checkpoints(db) if c["hi_key"] is not None)
    assert last == ["5000"]


# --------------------------------------------------------------------------- throttling


class TripTwice:
    """A probe that objects twice, then lets the backfill go on."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ctx: ProbeContext) -> str | None:
        self.calls += 1
        return "maintenance window (test probe)" if self.calls <= 2 else None


def test_throttle_pauses_while_the_probe_objects(
    db: psycopg.Connection[Any], database_url: str, engine: Engine
) -> None:
    spec = make_table(db, database_url, "pk", rows=2000)
    probe = TripTwice()
    with structlog.testing.capture_logs() as logs:
        result = run_backfill(engine, spec, BackfillOptions(pause_seconds=0.05), probe=probe, progress=False)
    assert result.status == "complete" and out_of_step(db) == 0
    paused = [e for e in logs if e["event"] == "backfill_paused"]
    assert paused and paused[0]["reason"] == "maintenance window (test probe)"
    assert any(e["event"] == "backfill_unpaused" for e in logs)
    assert probe.calls >= 3


def test_batch_waiting_on_a_row_lock_pauses_then_finishes(
    db: psycopg.Connection[Any], database_url: str, engine: Engine
) -> None:
    spec = make_table(db, database_url, "pk", rows=3000)
    holder = psycopg.connect(database_url)
    holder.execute("SELECT 1 FROM users WHERE id = 1500 FOR UPDATE")
    release = threading.Timer(1.0, holder.rollback)
    release.start()
    try:
        with structlog.testing.capture_logs() as logs:
            result = run_backfill(
                engine,
                spec,
                BackfillOptions(lock_timeout_ms=100, pause_seconds=0.2, start_batch=3000),
                progress=False,
            )
    finally:
        release.join()
        holder.close()
    assert result.status == "complete" and out_of_step(db) == 0
    reasons = [e["reason"] for e in logs if e["event"] == "backfill_paused"]
    assert any("waited on locks" in r for r in reasons), reasons
    assert result.retries >= 1


# --------------------------------------------------------------------------- CLI


def _start(database_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "expandcontract", "backfill", "p1", "--database-url", database_url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ECM_LOG_FORMAT": "json"},
    )


def _wait_rows(
    db: psycopg.Connection[Any], at_least: int, proc: subprocess.Popen[str], timeout: float = 60
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute("SELECT COALESCE(sum(rows_done), 0) FROM ecm.backfill_checkpoints").fetchone()
        done = int(row[0]) if row else 0
        if done >= at_least:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"backfill did not reach {at_least} rows")


def test_resume_after_sigkill_at_several_points(db: psycopg.Connection[Any], database_url: str) -> None:
    make_table(db, database_url, "pk")
    # A lease far longer than the test: resuming must not wait for it, because the killed
    # worker's session is gone and the chunk is free at once.
    slow = ("--max-batch", "500", "--start-batch", "500", "--sleep", "5", "--lease-seconds", "600")
    kills = 0
    for fraction in (0.15, 0.4, 0.7):
        proc = _start(database_url, *slow)
        _wait_rows(db, int(ROWS * fraction), proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
        status = run_ecm("status", "--database-url", database_url, "--json")
        plan = json.loads(status.stdout)["plans"][0]
        assert plan["backfill_status"] == "running"
        assert 0 < plan["backfill_rows_done"] < ROWS
    done = run_ecm("backfill", "p1", "--database-url", database_url, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "complete"
    assert doc["resumed"] and doc["resumed"][0]["rows_done"] >= int(ROWS * 0.7)
    assert "resuming chunk 0 after key" in done.stderr
    assert out_of_step(db) == 0
    # No row counted twice, none lost: the checkpoints add up to the table.
    assert doc["rows_total"] == ROWS
    assert plan_row(db)["backfill_completed_at"] is not None
    ledger = db.execute("SELECT outcome FROM ecm.ledger WHERE plan_id = 'p1' ORDER BY id").fetchall()
    assert ledger[-1] == ("ok",) and len(ledger) == kills + 1


def test_cli_backfill_verify_and_planted_mismatch(db: psycopg.Connection[Any], database_url: str) -> None:
    make_table(db, database_url, "composite")
    first = run_ecm("backfill", "p1", "--database-url", database_url, "--json", "--batch-time", "50")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["rows_done"] == ROWS
    assert "backfill of p1 complete" in first.stderr
    assert any(e.get("event") == "backfill_progress" for e in events(first.stderr))

    ok = run_ecm("verify", "p1", "--database-url", database_url, "--json", "--batch-size", "3000")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rows_checked"] == ROWS
    assert plan_row(db)["verified_at"] is not None

    # Plant two mismatches behind the trigger's back (its WHEN clause lets us).
    with db.transaction():
        db.execute("SET LOCAL ecm.backfill = 'on'")
        db.execute(
            """UPDATE users SET full_name = 'wrong' WHERE ("Tenant", seq) IN (('tenant-3', 10), ('tenant-0', 707))"""
        )
    bad = run_ecm("verify", "p1", "--database-url", database_url, "--json", "--batch-size", "3000")
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and doc["mismatch_count"] == 2
    assert doc["mismatches"] == [{"Tenant": "tenant-0", "seq": "707"}, {"Tenant": "tenant-3", "seq": "10"}]
    assert "Tenant=tenant-0, seq=707" in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("ecm: error: verify p1: 2 rows out of step")

    again = run_ecm("backfill", "p1", "--database-url", database_url)
    assert again.returncode == 0 and "already complete" in again.stderr


def test_unknown_plan_is_bad_input(db: psycopg.Connection[Any], database_url: str) -> None:
    assert run_ecm("init", "--database-url", database_url).returncode == 0
    for cmd in ("backfill", "verify"):
        result = run_ecm(cmd, "nope", "--database-url", database_url)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "ecm: error: unknown plan 'nope' (see `ecm status` for the plans this database knows)"
        ]


def test_progress_bar_when_asked(
    db: psycopg.Connection[Any], database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = make_table(db, database_url, "pk", rows=5000)
    run_backfill(engine, spec, BackfillOptions(sleep_ms=5, max_batch=1000), progress=True)
    err = capsys.readouterr().err
    assert "backfill p1" in err and "5,000/5,000 rows" in err and "rows/s" in err and "ETA" in err


def test_cli_probe_option_pauses_and_logs_why(db: psycopg.Connection[Any], database_url: str) -> None:
    make_table(db, database_url, "pk", rows=2000)
    result = run_ecm(
        "backfill",
        "p1",
        "--database-url",
        database_url,
        "--probe",
        "tests.test_backfill:TripTwice",
        "--pause",
        "0.05",
    )
    assert result.returncode == 0, result.stderr
    paused = [e for e in events(result.stderr) if e.get("event") == "backfill_paused"]
    assert paused and paused[0]["reason"] == "maintenance window (test probe)"
    assert out_of_step(db) == 0
    bad = run_ecm("backfill", "p1", "--database-url", database_url, "--probe", "no_such_module:probe")
    assert bad.returncode == 2 and "cannot load health probe" in bad.stderr


def test_batch_size_grows_slowly_and_shrinks_fast() -> None:
    from expandcontract.backfill.engine import BatchSizer

    s = BatchSizer(0.1, lo=100, hi=50_000, start=1_000)
    assert s.observe(0.001) == 1_200  # far under target: still at most 1.2x
    assert s.observe(0.09) == 1_333  # a little under: grows by the ratio
    assert s.observe(0.4) == 333  # four times too slow: a quarter at once
    assert s.observe(5.0) == 100  # never below the floor
    assert s.observe(0.05, rows=10) == 100  # a short tail batch teaches nothing
    for _ in range(100):
        s.observe(0.0001)
    assert s.size == 50_000  # never above the ceiling
