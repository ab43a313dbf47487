"""`ecm demo` end to end: the README's first command must keep its promises.

It runs the real demo (real application processes, real SIGTERM, real `ecm` commands)
against the test server, then checks what the user is told: zero errors, both versions
served, the refusal named version 1, the contract went through, and nothing is left
behind unless --keep.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from expandcontract.demo.summary import summarize

from .conftest import Server, knob, run_ecm

ROWS = knob("ECM_DEMO_ROWS", 20_000)
PHASES = ["v1_only", "expand", "backfill", "v1_v2", "contract_refused", "stop_v1", "contract", "v2_only"]


def demo(server: Server, *args: str) -> tuple[int, dict[str, object], str]:
    result = run_ecm("demo", "--json", "--database-url", server.url, *args, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be one JSON document, got {result.stdout[:2000]!r}"
    return result.returncode, json.loads(lines[0]), result.stderr


def database_exists(server: Server, name: str) -> bool:
    with psycopg.connect(server.url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.mark.slow
def test_demo_renames_under_traffic_with_zero_errors_and_leaves_nothing(pg_server: Server) -> None:
    code, doc, err = demo(pg_server, "--rows", str(ROWS))
    assert code == 0, err[-4000:]
    assert doc["ok"] is True and doc["errors_total"] == 0, doc.get("error_samples")
    assert doc["rows"] == ROWS

    versions = doc["versions"]
    assert isinstance(versions, dict)
    for v in ("1", "2"):
        assert versions[v]["requests"] > 0 and versions[v]["errors"] == 0
        assert versions[v]["exit_codes"] == [0, 0] and versions[v]["deregistered"] is True

    phases = doc["phases"]
    assert isinstance(phases, list)
    assert [p["name"] for p in phases] == PHASES
    by_name = {p["name"]: p for p in phases}
    # Traffic really ran while each DDL phase did.
    assert by_name["expand"]["versions"]["1"]["requests"] > 0
    assert by_name["backfill"]["versions"]["1"]["requests"] > 0
    # Version 2 rolls out once the backfill has copied every row and built full_name's index
    # (its readiness probe, schema_ready, holds it until then).
    assert by_name["backfill"]["versions"]["2"] is None
    assert by_name["v1_v2"]["versions"]["2"]["requests"] > 0
    assert by_name["contract"]["versions"]["2"]["requests"] > 0
    assert by_name["contract"]["versions"]["1"] is None  # version 1 was stopped first

    refusal = doc["refusal"]
    assert isinstance(refusal, dict)
    assert refusal["exit_code"] == 3 and refusal["names_version_1"] is True
    assert any("instances of demo-app 1 still map public.accounts.name" in r for r in refusal["reasons"]), (
        refusal
    )
    assert not any("demo-app 2" in r for r in refusal["reasons"])
    assert doc["stop_v1"]["exit_codes"] == [0, 0] and doc["stop_v1"]["deregistered"] == 2  # type: ignore[index]
    assert doc["contract"]["applied"] is True  # type: ignore[index]
    assert doc["backfill"]["verified"] is True and doc["backfill"]["rows"] > 0  # type: ignore[index]
    assert "name" not in doc["final_columns"] and "full_name" in doc["final_columns"]  # type: ignore[operator]
    assert [s["exit_code"] for s in doc["steps"]] == [0, 0, 0, 3, 0]  # type: ignore[union-attr]

    assert doc["kept"] is False
    assert doc["cleanup"] == {"database_dropped": True, "temp_removed": True}
    assert not database_exists(pg_server, str(doc["database"]))
    assert not Path(str(doc["project"])).exists()
    assert "contract refused (exit 3): 2 instances of demo-app 1" in err
    assert "SIGTERM" in err and "contract applied" in err


@pytest.mark.slow
def test_demo_keep_leaves_the_project_and_database(pg_server: Server, tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    code, doc, err = demo(pg_server, "--rows", "2000", "--keep", str(keep))
    name = str(doc["database"])
    try:
        assert code == 0, err[-4000:]
        assert doc["ok"] is True and doc["kept"] is True
        assert Path(str(doc["project"])) == keep.resolve()
        assert (keep / "alembic.ini").is_file()
        app_line = sorted(p.name for p in (keep / "migrations" / "versions").glob("*.py"))
        contracts = sorted(p.name for p in (keep / "migrations" / "contracts" / "versions").glob("*.py"))
        assert "0001_create_accounts.py" in app_line
        assert any("ecm_expand_rename_accounts_name_full_name" in n for n in app_line)
        assert any("ecm_backfill_rename_accounts_name_full_name" in n for n in app_line)
        assert len(contracts) == 1 and "ecm_contract_rename_accounts_name_full_name" in contracts[0]
        for rev in doc["revisions"]:  # type: ignore[attr-defined]
            assert Path(rev["path"]).is_file()
        assert database_exists(pg_server, name)
        assert "psql '" in err and name in err
        # The kept project is usable as is: its alembic.ini points at the kept database.
        status = run_ecm("status", "--json", cwd=keep, env={"ECM_DATABASE_URL": ""})
        assert status.returncode == 0, status.stderr
        assert "rename_accounts_name_full_name" in status.stdout
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_demo_keep_must_be_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = run_ecm(
        "demo", "--keep", str(tmp_path), "--database-url", "postgresql://nobody@127.0.0.1:1/none"
    )
    assert result.returncode == 2, result.stderr
    assert "must be a new or empty directory" in result.stderr


def test_summary_folds_processes_per_phase_and_version() -> None:
    timeline = [
        {"name": "v1_only", "label": "v1 only", "duration_s": 1.0},
        {"name": "expand", "label": "expand", "duration_s": 2.0},
    ]
    stats = {
        "1": [
            {
                "pid": 1,
                "exit_code": 0,
                "deregistered": True,
                "phases": {
                    "v1_only": {"requests": 3, "errors": 0, "max_wait_ms": 4.0},
                    "expand": {"requests": 2, "errors": 1, "max_wait_ms": 30.0},
                },
                "error_samples": ["[expand] boom"],
            },
            {
                "pid": 2,
                "exit_code": 0,
                "deregistered": True,
                "phases": {"expand": {"requests": 5, "errors": 0, "max_wait_ms": 12.0}},
                "error_samples": [],
            },
        ],
        "2": [{"pid": 3, "exit_code": 143, "missing": True, "phases": {}, "error_samples": []}],
    }
    steps = [{"command": "ecm upgrade --phase expand", "phase": "expand", "exit_code": 0, "seconds": 2.0}]
    out = summarize(timeline, steps, stats)
    expand = out["phases"][1]
    assert expand["versions"]["1"] == {"requests": 7, "errors": 1, "max_wait_ms": 30.0}
    assert expand["versions"]["2"] is None
    assert expand["commands"] == ["ecm upgrade --phase expand"]
    assert out["versions"]["1"]["requests"] == 10 and out["versions"]["1"]["max_wait_ms"] == 30.0
    # A request error and a process that never reported both count.
    assert out["errors_total"] == 2
    assert out["error_samples"] == ["v1: [expand] boom"]


#: Project shapes, drivers and frameworks: the same on every server version (.ci/run runs them once).
pytestmark = pytest.mark.server_independent
