"""``procedure_sql``: the backfill as psql runs it from an ``ecm upgrade --sql`` script.

Runs the generated SQL with ``psql -v ON_ERROR_STOP=1`` (autocommit, as a DBA would)
on a fresh database and lints it with squawk, the same checks the offline script gets.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from expandcontract.backfill.offline import procedure_sql

from .test_backfill import ROWS, checkpoints, make_table, out_of_step, plan_row

PSQL = shutil.which("psql")
SQUAWK = Path(__import__("sys").executable).parent / "squawk"
needs_psql = pytest.mark.skipif(PSQL is None, reason="psql is not installed")


def psql(url: str, sql: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "backfill.sql"
    path.write_text(sql)
    assert PSQL is not None
    return subprocess.run(
        [PSQL, url, "-X", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_psql
@pytest.mark.parametrize("kind", ["pk", "composite", "ctid"])
def test_procedure_backfills_in_psql_and_passes_squawk(
    kind: str, db: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    spec = make_table(db, database_url, kind)
    sql = procedure_sql(spec, schema="ecm")
    result = psql(database_url, sql, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backfill of p1 complete" in result.stderr
    assert out_of_step(db) == 0
    assert plan_row(db)["backfill_status"] == "complete"
    ck = checkpoints(db)
    assert len(ck) == 1 and ck[0]["finished_at"] is not None and ck[0]["rows_done"] == ROWS
    if kind != "ctid":  # the walk ended at the greatest key there was (later rows are the trigger's)
        last = db.execute(
            "SELECT jsonb_build_array(" + ", ".join(f'"{c}"::text' for c in spec.key) + ") FROM users "
            "ORDER BY " + ", ".join(f'"{c}" DESC NULLS LAST' for c in spec.key) + " LIMIT 1"
        ).fetchone()
        assert last is not None and ck[0]["hi_key"] == last[0]
    if SQUAWK.exists():
        lint = subprocess.run(
            [str(SQUAWK), "--pg-version", "15", str(tmp_path / "backfill.sql")],
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    # Running the script again is harmless: nothing left to do.
    again = psql(database_url, sql, tmp_path)
    assert again.returncode == 0, again.stderr
    assert checkpoints(db)[0]["rows_done"] == ROWS


@needs_psql
def test_procedure_resumes_where_the_engine_stopped(
    db: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    spec = make_table(db, database_url, "identity")
    half = ROWS // 2
    # What a killed `ecm backfill` leaves: the first half copied and checkpointed.
    with db.transaction():
        db.execute("SET LOCAL ecm.backfill = 'on'")
        db.execute("UPDATE users SET full_name = name WHERE id <= %s", [half])
        db.execute(
            "INSERT INTO ecm.backfill_checkpoints (plan_id, chunk, last_key, rows_done, worker, lease_expires_at) "
            "VALUES ('p1', 0, jsonb_build_array(%s::text), %s, 'gone:b999999', now() + interval '1 hour')",
            [half, half],
        )
    result = psql(database_url, procedure_sql(spec, schema="ecm"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert f'resuming chunk 0 after key ["{half}"]' in result.stderr
    assert out_of_step(db) == 0
    assert checkpoints(db)[0]["rows_done"] == ROWS
