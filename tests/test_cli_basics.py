"""ecm init / status / exit codes, driven through the real CLI against a real server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg

from expandcontract.db.control import head_revision

from .conftest import run_ecm


def test_version() -> None:
    result = run_ecm("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"ecm \d+\.\d+\.\d+\S*\n", result.stdout)


def test_help_lists_exit_codes() -> None:
    result = run_ecm("--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout
    for code in ("0 success", "1 operational failure", "2 bad input", "3 refused"):
        assert code in " ".join(result.stdout.split())


def test_init_creates_control_schema_and_is_idempotent(database_url: str, db: psycopg.Connection) -> None:
    first = run_ecm("init", "--database-url", database_url, "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["changed"] is True and doc["before"] is None and doc["schema"] == "ecm"
    tables = {
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ecm'"
        ).fetchall()
    }
    assert {"plans", "ledger", "backfill_checkpoints", "instances", "schema_version"} <= tables
    # The application's alembic_version is untouched (never created).
    assert db.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,)

    second = run_ecm("init", "--database-url", database_url, "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["changed"] is False
    assert db.execute("SELECT count(*) FROM ecm.schema_version").fetchone() == (1,)


def test_concurrent_init_both_succeed(database_url: str, db: psycopg.Connection) -> None:
    def one(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "expandcontract", "init", "--database-url", database_url, "--json"],
            capture_output=True,
            text=True,
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    changed = [json.loads(r.stdout)["changed"] for r in results]
    assert changed.count(True) == 1
    assert db.execute("SELECT version_num FROM ecm.schema_version").fetchall() == [(head_revision(),)]


def test_control_schema_name_is_overridable(database_url: str, db: psycopg.Connection) -> None:
    result = run_ecm("init", "--database-url", database_url, env={"ECM_CONTROL_SCHEMA": "Deploy Ctl"})
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT to_regclass('\"Deploy Ctl\".plans')").fetchone() != (None,)
    assert db.execute("SELECT to_regnamespace('ecm')").fetchone() == (None,)


def test_status_text_and_json(database_url: str) -> None:
    before = run_ecm("status", "--database-url", database_url, "--json")
    assert before.returncode == 0, before.stderr
    doc = json.loads(before.stdout)
    assert doc["control_schema"]["initialized"] is False
    assert doc["control_schema"]["version"] is None

    assert run_ecm("init", "--database-url", database_url).returncode == 0
    after = run_ecm("status", "--database-url", database_url, "--json")
    doc = json.loads(after.stdout)
    assert doc["control_schema"] == {
        "name": "ecm",
        "version": head_revision(),
        "head": head_revision(),
        "initialized": True,
        "up_to_date": True,
    }
    assert doc["plans"] == [] and doc["instances"] == []
    assert re.match(r"\d+(\.\d+)?", doc["server_version"])

    text = run_ecm("status", "--database-url", database_url)
    assert text.returncode == 0
    assert text.stdout == ""  # human output goes to stderr only
    assert f"version {head_revision()} (up to date)" in text.stderr


def test_database_url_from_alembic_ini(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        f"[alembic]\nscript_location = migrations\nsqlalchemy.url = {database_url.replace('%', '%%')}\n"
    )
    result = run_ecm("status", "--json", cwd=tmp_path, env={"ECM_DATABASE_URL": ""})
    assert result.returncode == 0, result.stderr
    other = run_ecm("status", "--json", "-c", str(ini), env={"ECM_DATABASE_URL": ""})
    assert other.returncode == 0, other.stderr


def test_postgres_scheme_is_taken_as_psycopg3(database_url: str) -> None:
    url = database_url.replace("postgresql://", "postgres://", 1)
    result = run_ecm("status", "--database-url", url, "--json")
    assert result.returncode == 0, result.stderr


def test_unreachable_database_exit_1_one_line() -> None:
    result = run_ecm("status", "--database-url", "postgresql://nobody@127.0.0.1:1/nowhere")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ecm: error: cannot connect to")
    assert "Traceback" not in result.stderr


def test_unreachable_database_verbose_shows_traceback() -> None:
    result = run_ecm("status", "-v", "--database-url", "postgresql://nobody@127.0.0.1:1/nowhere")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_invalid_option_exit_2() -> None:
    result = run_ecm("status", "--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_log_format_exit_2() -> None:
    result = run_ecm("status", "--log-format", "xml", "--database-url", "postgresql://x@127.0.0.1:1/x")
    assert result.returncode == 2


def test_no_database_url_is_bad_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_ecm("status", cwd=tmp_path, env={"ECM_DATABASE_URL": ""})
    assert result.returncode == 2
    assert "no database URL" in result.stderr


def test_unsupported_scheme_is_bad_input() -> None:
    result = run_ecm("status", "--database-url", "mysql://root@localhost/test")
    assert result.returncode == 2
    assert "postgresql://" in result.stderr


def test_cli_import_stays_light() -> None:
    """`ecm --help` must not pay for SQLAlchemy, Alembic or psycopg."""
    code = (
        "import sys, expandcontract.cli; "
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'psycopg', 'structlog') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_test_command_is_what_ci_runs() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    command = "python -m pip install nox && nox -s tests lint"
    assert f"    {command}\n" in (root / "README.md").read_text()
    assert command in (root / ".ci" / "run").read_text()
