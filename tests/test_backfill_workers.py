"""Several ``ecm backfill`` processes on one plan: chunks, leases, takeovers, exactly once.

Each process is the real CLI, as separate Kubernetes Job pods would run it; batches are
slowed with ``--sleep`` so both processes are certainly working at the same time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg

from .test_backfill import ROWS, checkpoints, make_table, out_of_step

SLOW = ("--max-batch", "1000", "--start-batch", "1000", "--json", "--no-progress")


def start(database_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "expandcontract",
            "backfill",
            "p1",
            "--database-url",
            database_url,
            *SLOW,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ECM_LOG_FORMAT": "json"},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[dict[str, Any], str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out), err


def wait_for(db: psycopg.Connection[Any], sql: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(sql).fetchone()  # type: ignore[arg-type]
        if row is not None and row[0]:
            return row[0]
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {sql}")


def assert_each_chunk_once(db: psycopg.Connection[Any], *docs: dict[str, Any]) -> None:
    finished = [set(d["chunks_finished"]) for d in docs]
    chunks = {c["chunk"] for c in checkpoints(db)}
    assert set().union(*finished) == chunks
    for i, a in enumerate(finished):
        for b in finished[i + 1 :]:
            assert not a & b, "a chunk was finished twice"
    assert all(c["finished_at"] is not None for c in checkpoints(db))
    # Rows were counted once: no batch was committed by two workers.
    assert sum(c["rows_done"] for c in checkpoints(db)) == ROWS
    assert sum(d["rows_done"] for d in docs) == ROWS
    assert out_of_step(db) == 0


def test_two_processes_share_the_chunks(db: psycopg.Connection[Any], database_url: str) -> None:
    make_table(db, database_url, "pk")
    a = start(database_url, "--chunks", "6", "--sleep", "100")
    b = start(database_url, "--chunks", "6", "--sleep", "100")
    doc_a, _ = finish(a)
    doc_b, _ = finish(b)
    assert doc_a["chunks_finished"] and doc_b["chunks_finished"], (doc_a, doc_b)
    assert doc_a["chunks"] == doc_b["chunks"] == 6
    assert_each_chunk_once(db, doc_a, doc_b)
    assert {doc_a["status"], doc_b["status"]} == {"complete"}


def _idle_stop(db: psycopg.Connection[Any], proc: subprocess.Popen[str]) -> None:
    """SIGSTOP the process between batches (its session idle, no transaction open)."""
    for _ in range(200):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        state = db.execute(
            "SELECT a.state FROM pg_stat_activity a JOIN ecm.backfill_checkpoints c "
            "ON a.pid = substring(c.worker FROM ':b([0-9]+)$')::int WHERE c.chunk = 0"
        ).fetchone()
        if state is not None and state[0] == "idle":
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("could not catch the worker between batches")


def test_stalled_worker_loses_its_lease_and_the_chunk_finishes_once(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    make_table(db, database_url, "pk")
    a = start(database_url, "--chunks", "2", "--sleep", "300", "--lease-seconds", "2")
    wait_for(db, "SELECT rows_done FROM ecm.backfill_checkpoints WHERE chunk = 0 AND rows_done > 0")
    _idle_stop(db, a)  # alive but silent: only the lease can free its chunk
    try:
        b = start(database_url, "--sleep", "20", "--lease-seconds", "2")
        doc_b, err_b = finish(b)
    finally:
        a.send_signal(signal.SIGCONT)
    doc_a, err_a = finish(a)
    assert [t["chunk"] for t in doc_b["takeovers"]] == [0]
    assert "taking over chunk 0" in err_b
    assert "backfill_lease_lost" in err_a  # its next batch found the chunk gone and rolled back
    assert doc_b["status"] == "complete"
    assert_each_chunk_once(db, doc_a, doc_b)


def test_killed_worker_chunk_is_taken_over(db: psycopg.Connection[Any], database_url: str) -> None:
    make_table(db, database_url, "pk")
    # A long lease: the takeover must come from seeing the killed worker's session gone.
    a = start(database_url, "--chunks", "2", "--sleep", "400", "--lease-seconds", "600")
    wait_for(db, "SELECT rows_done FROM ecm.backfill_checkpoints WHERE chunk = 0 AND rows_done > 0")
    b = start(database_url, "--sleep", "20", "--lease-seconds", "600")
    wait_for(db, "SELECT count(*) FROM ecm.backfill_checkpoints WHERE worker IS NOT NULL AND chunk = 1")
    a.send_signal(signal.SIGKILL)
    a.communicate()
    done_before = db.execute("SELECT rows_done FROM ecm.backfill_checkpoints WHERE chunk = 0").fetchone()
    doc_b, err_b = finish(b)
    assert doc_b["status"] == "complete"
    assert 0 in [t["chunk"] for t in doc_b["takeovers"]]
    assert "taking over chunk 0" in err_b
    assert done_before is not None and done_before[0] > 0
    assert out_of_step(db) == 0
    assert sum(c["rows_done"] for c in checkpoints(db)) == ROWS
