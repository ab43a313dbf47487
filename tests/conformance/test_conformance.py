"""The conformance suite: every operation through the same scenarios (see harness.py).

Figures of each traffic run (operations per version, errors, max query wait per phase)
are printed and written to ``$ECM_CONFORMANCE_REPORT`` (JSON lines) when set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from .cases import CASES, Case
from .harness import Scenario

OPERATIONS = sorted(CASES)


@pytest.fixture(params=OPERATIONS)
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_zero_errors_through_every_phase(case: Case, tmp_path: Path, database_url: str) -> None:
    s = Scenario(case, tmp_path, database_url)
    traffic = s.traffic()
    assert traffic.error_count() == 0, traffic.errors()[:10]
    assert traffic.held is not None
    if getattr(case, "held", True):
        assert traffic.held.returncode == 3, traffic.held.stderr[-2000:]
        reasons = [r for c in json.loads(traffic.held.stdout)["contracts"]["held"] for r in c["reasons"]]
        assert any(case.held_by in r for r in reasons), reasons
    else:
        assert traffic.held.returncode == 0, traffic.held.stderr[-2000:]
    checked = s.oracle(traffic)
    summary = {**traffic.summary(case), "rows_checked": checked, "lost_writes": 0}  # oracle() asserts it
    print(json.dumps(summary))
    report = os.environ.get("ECM_CONFORMANCE_REPORT")
    if report:
        with open(report, "a") as fh:
            fh.write(json.dumps(summary) + "\n")
    assert all(traffic.ops(v) > 50 for v in ("1", "2")), summary


def test_abort_from_each_phase(case: Case, tmp_path: Path, database_url: str) -> None:
    s = Scenario(case, tmp_path, database_url)
    original = s.snapshot()
    for last in ("expand", "backfill", "contract"):
        # A plan without this phase (drop-column has no backfill) is not written: its files
        # would stay in flight and refuse the next plan on the same column.
        if last not in [f["phase"] for f in s.plan("--dry-run")["files"]]:
            continue
        doc = s.plan()
        if last == "contract":
            s.ok("upgrade", "--allow-no-reporters")
        else:
            s.ok("upgrade", "--phase", last)
        aborted = s.ok("abort", doc["plan_id"], "--allow-no-reporters", "--json")
        assert json.loads(aborted.stdout)["state"] == "aborted", aborted.stdout
        expected = case.restored(original, contracted=last == "contract")
        assert s.snapshot() == expected, f"abort after {last} left the table changed"


@pytest.mark.server_independent  # input checks and catalog lookups: the same on every server
def test_bad_input_changes_nothing(case: Case, tmp_path: Path, database_url: str) -> None:
    s = Scenario(case, tmp_path, database_url)
    before = s.snapshot()
    for args, fragment in case.bad_input:
        result = s.ecm("plan", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.startswith("ecm: error:")]
        assert len(lines) == 1 and fragment in lines[0], (args, result.stderr)
    assert s.snapshot() == before
    assert not list((s.project.root / "migrations" / "versions").glob("*ecm_*.py"))


def test_offline_script_runs_in_psql_and_passes_squawk(case: Case, tmp_path: Path, database_url: str) -> None:
    """The whole plan as one psql script: squawk finds nothing, and the result equals the live run's."""
    import shutil
    import subprocess

    s = Scenario(case, tmp_path, database_url)
    s.plan()
    s.ok("init")
    script = s.ok("upgrade", "--sql", "--phase", "contract", env={"ECM_ALLOW_NO_REPORTERS": "1"}).stdout
    path = tmp_path / "plan.sql"
    path.write_text(script)
    with psycopg.connect(database_url) as conn:
        major = int(str(conn.execute("SHOW server_version_num").fetchone()[0])) // 10000  # type: ignore[index]
    import sys

    squawk = str(Path(sys.executable).parent / "squawk")
    assert Path(squawk).exists(), "squawk-cli is in the dev extra"
    lint = subprocess.run(
        [squawk, "--reporter", "json", "--pg-version", str(major), str(path)], capture_output=True, text=True
    )
    findings = json.loads(lint.stdout or "[]")
    assert findings == [], findings
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    ran = subprocess.run(
        [psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path), database_url],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    offline = s.snapshot()
    rerun = subprocess.run(
        [psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path), database_url],
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert s.snapshot() == offline


@pytest.mark.server_independent  # drivers' integration: the server-dependent DDL is proven by the live runs
@pytest.mark.parametrize(("template", "driver"), [("generic", "psycopg2"), ("async", "asyncpg")])
def test_revisions_on_other_drivers(
    case: Case, tmp_path: Path, database_url: str, template: str, driver: str
) -> None:
    """The same plan's revisions upgrade and downgrade under the project's own driver."""
    from ..shapes import make_shape
    from .harness import ROWS, snapshot

    shape = make_shape(tmp_path / "app", database_url, template, driver)
    assert shape.alembic("upgrade", "head").returncode == 0
    with shape.connect() as conn:
        conn.execute(case.setup_sql.format(rows=ROWS))
        original = snapshot(conn, case.tables)
    planned = shape.ecm("plan", *case.plan, "--json")
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    phases = {f["phase"]: f for f in doc["files"]}
    env = {"ECM_ALLOW_NO_REPORTERS": "1"}
    up = shape.alembic("upgrade", "head", env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    if "contract" in phases:
        contract = shape.alembic("-n", "ecm_contracts", "upgrade", "heads", env=env)
        assert contract.returncode == 0, contract.stderr[-3000:]
        down = shape.alembic("-n", "ecm_contracts", "downgrade", f"{doc['plan_id']}@base", env=env)
        assert down.returncode == 0, down.stderr[-3000:]
    back = shape.alembic("downgrade", "0001", env=env)
    assert back.returncode == 0, back.stderr[-3000:]
    with shape.connect() as conn:
        assert snapshot(conn, case.tables) == case.restored(original, contracted="contract" in phases)
