"""Names that need quoting, all the way through: plan, live phases, and the offline psql script.

Reserved words, mixed case, spaces, embedded double quotes, semicolons, colons that
psql or SQLAlchemy could mistake for variables or bind parameters, unicode, and names
of exactly 63 bytes (PostgreSQL's limit): each must come out of every statement ecm
writes as the same identifier, never as SQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from expandcontract.sql.quoting import literal, q

from .conftest import Server
from .project import Project, columns, constraints, indexes, make_project, triggers
from .test_offline_sql import NO_REPORTERS, PSQL, SQUAWK, lint, psql, render

ROWS = 200


def _bytes63(prefix: str, filler: str) -> str:
    name = prefix
    while len((name + filler).encode()) <= 63:
        name += filler
    while len(name.encode()) < 63:
        name += "x"
    assert len(name.encode()) == 63
    return name


CASES = {
    # reserved words as table and new column; mixed case with a space as the old column
    "reserved": ("select", "Mixed Case", "from", "user"),
    # statement separators, comment starts, a newline (it would end a -- comment), embedded
    # quotes, colons that psql (:ecm_run is the script's own variable) or SQLAlchemy could bind
    "punctuation": (
        "Order Items; DROP TABLE x; --",
        'Ünï "cödé" x',
        'new:ecm_run; "x" :name\nDROP TABLE x; --',
        "Parent; --",
    ),
    # exactly 63 bytes, multibyte characters included
    "63 bytes": (_bytes63("T", "é"), _bytes63("o", "ö"), _bytes63("N", "ü"), _bytes63("P", "ä")),
    # a name ending in a double quote (quoted, it ends in three, like a Python docstring) and a
    # backslash escape Python would read in a docstring
    "trailing quote": ("t", 'Ünïcödé "quoted"', "back\\xslash", "p"),
}
PARAMS = list(CASES)


def create_schema(db: psycopg.Connection[Any], table: str, old: str, parent: str) -> None:
    t, o, p = q(table), q(old), q(parent)
    db.execute(f"CREATE TABLE {p} (k text PRIMARY KEY)")
    db.execute(
        f"CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        f"{o} text NOT NULL DEFAULT {literal('v; 0')} REFERENCES {p} (k), note text, "
        f"UNIQUE ({o}), CHECK (char_length({o}) > 0))"
    )
    db.execute(f"CREATE INDEX ON {t} (lower({o}))")
    db.execute(f"CREATE INDEX ON {t} (note) WHERE {o} <> {literal(':name')}")
    db.execute(f"INSERT INTO {p} SELECT 'v; ' || g FROM generate_series(0, {ROWS}) g")
    db.execute(f"INSERT INTO {t} ({o}, note) SELECT 'v; ' || g, 'n' || g FROM generate_series(1, {ROWS}) g")


def values(db: psycopg.Connection[Any], table: str, column: str) -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT id, {q(column)} FROM {q(table)} ORDER BY id").fetchall()


@pytest.fixture
def case(request: pytest.FixtureRequest) -> tuple[str, str, str, str]:
    return CASES[request.param]


@pytest.fixture
def planned(
    case: tuple[str, str, str, str], tmp_path: Path, database_url: str, db: psycopg.Connection[Any]
) -> tuple[Project, list[tuple[Any, ...]]]:
    table, old, new, parent = case
    create_schema(db, table, old, parent)
    before = values(db, table, old)
    p = make_project(tmp_path / "app", database_url)
    result = p.ecm("plan", "rename-column", table, old, new, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["plan_id"].encode()) <= 63
    for f in doc["files"]:
        compile(Path(f["path"]).read_text(), f["path"], "exec")  # the revision files stay valid Python
    return p, before


def assert_contracted(
    db: psycopg.Connection[Any], case: tuple[str, str, str, str], before: list[tuple[Any, ...]]
) -> None:
    table, old, new, parent = case
    cols = columns(db, table)
    assert old not in cols
    assert cols[new] == ("text", False, literal("v; 0") + "::text", None)
    assert values(db, table, new) == before
    cons = constraints(db, table)
    assert all(valid for _, valid in cons.values()), cons
    # PostgreSQL 18 lists NOT NULL as constraints too; the column's nullability is checked above.
    kinds = sorted(d.split(" ", 1)[0] for d, _ in cons.values() if not d.startswith("NOT NULL"))
    assert kinds == ["CHECK", "FOREIGN", "PRIMARY", "UNIQUE"], cons
    assert any(d.startswith("FOREIGN KEY") and f"REFERENCES {q(parent)}(k)" in d for d, _ in cons.values())
    assert not any(name.startswith("ecm_") for name in cons)
    idx = indexes(db, table)
    assert len(idx) == 4 and all(valid for _, valid in idx.values()), idx
    assert any(f"lower({q(new)})" in d for d, _ in idx.values()), idx
    assert any(f"WHERE ({q(new)} <> ':name'::text)" in d for d, _ in idx.values()), idx
    assert all(len(name.encode()) <= 63 for name in [*cons, *idx])
    assert triggers(db, table) == []
    # The table is whole and usable: the default moved, old code's column is gone.
    db.execute(f"INSERT INTO {q(table)} (note) VALUES ('after')")
    assert db.execute(f"SELECT {q(new)} FROM {q(table)} WHERE note = 'after'").fetchone() == ("v; 0",)


@pytest.mark.parametrize("case", PARAMS, indirect=True)
def test_live_cycle(
    case: tuple[str, str, str, str],
    planned: tuple[Project, list[tuple[Any, ...]]],
    db: psycopg.Connection[Any],
) -> None:
    table, _, new, _ = case
    project, before = planned
    result = project.ecm("upgrade", "--phase", "expand")
    assert result.returncode == 0, result.stderr
    assert columns(db, table)[new][1] is True
    assert db.execute(f"SELECT count(*) FROM {q(table)} WHERE {q(new)} IS NULL").fetchone() == (ROWS,)
    assert len(triggers(db, table)) == 1
    result = project.ecm("upgrade", "--phase", "backfill")
    assert result.returncode == 0, result.stderr
    assert values(db, table, new) == before
    result = project.ecm("upgrade", "--allow-no-reporters")
    assert result.returncode == 0, result.stderr
    assert_contracted(db, case, before)


@pytest.mark.skipif(PSQL is None or not SQUAWK.exists(), reason="needs psql and squawk-cli")
@pytest.mark.parametrize("case", [k for k in CASES if k != "trailing quote"], indirect=True)
def test_offline_cycle(
    case: tuple[str, str, str, str],
    planned: tuple[Project, list[tuple[Any, ...]]],
    db: psycopg.Connection[Any],
    tmp_path: Path,
    pg_server: Server,
) -> None:
    project, before = planned
    script = tmp_path / "all.sql"
    render(project, "contract", script, env=NO_REPORTERS)
    result = psql(project.url, script)
    assert result.returncode == 0, result.stderr
    assert_contracted(db, case, before)
    assert db.execute("SELECT phase, backfill_status FROM ecm.plans").fetchall() == [
        ("contracted", "complete")
    ]
    rerun = psql(project.url, script)
    assert rerun.returncode == 0, rerun.stderr
    assert triggers(db, case[0]) == []
    lint(script, pg_server.major)


def test_name_over_63_bytes_is_refused_and_nothing_changes(
    tmp_path: Path, database_url: str, db: psycopg.Connection[Any]
) -> None:
    db.execute('CREATE TABLE "Ünïcödé" (id bigint PRIMARY KEY, "Ünïcödé" text)')
    p = make_project(tmp_path / "app", database_url)
    files_before = sorted(str(f) for f in p.root.rglob("*") if f.is_file())
    ini_before = (p.root / "alembic.ini").read_text()
    too_long = _bytes63("Ü", "é") + "x"  # 64 bytes
    args = {"table": (too_long, "Ünïcödé", "new"), "column": ("Ünïcödé", too_long, "new")}
    args["new column"] = ("Ünïcödé", "Ünïcödé", too_long)
    for which, argv in args.items():
        result = p.ecm("plan", "rename-column", *argv)
        assert result.returncode == 2, which
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert f"{which} name" in lines[0] and "64 bytes" in lines[0] and "63" in lines[0]
        assert result.stdout == ""
    assert sorted(str(f) for f in p.root.rglob("*") if f.is_file()) == files_before
    assert (p.root / "alembic.ini").read_text() == ini_before
    assert db.execute("SELECT to_regnamespace('ecm')").fetchone() == (None,)
    assert list(columns(db, "Ünïcödé")) == ["id", "Ünïcödé"]
