"""bigint-key end to end: the real CLI, a stock Alembic project, a real PostgreSQL.

Serial, identity and plain keys, two referencing tables, names that need quoting, a value past
2^31 after the contract, the rollback from the contract, and refusals (exit 2, nothing changed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conformance.harness import snapshot
from .project import Project, make_project

NO_REPORTERS = {"ECM_ALLOW_NO_REPORTERS": "1"}
DB = psycopg.Connection[tuple[object, ...]]


def new_project(tmp_path: Path, url: str, db: DB, setup: str) -> Project:
    db.execute(setup)
    project = make_project(tmp_path / "app", url)
    assert project.alembic("revision", "-m", "base").returncode == 0
    return project


def plan(project: Project, *args: str) -> dict[str, Any]:
    result = project.ecm("plan", "bigint-key", *args, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def ok(project: Project, *args: str) -> str:
    result = project.ecm(*args, env=NO_REPORTERS)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def rows(db: DB, sql: str) -> list[tuple[object, ...]]:
    return db.execute(sql).fetchall()


def type_of(db: DB, table: str, column: str) -> str | None:
    row = db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attname = %s AND NOT attisdropped",
        [table, column],
    ).fetchone()
    return None if row is None else str(row[0])


KEYS = {
    "serial": "id serial PRIMARY KEY",
    "identity": "id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "plain": "id integer PRIMARY KEY",
}


def setup_sql(key: str, parent: str = "items", a: str = "children", b: str = "others") -> str:
    p, ca, cb = (f'"{n}"' for n in (parent, a, b))
    insert = (
        f"INSERT INTO {p} (name) SELECT 'n' || g FROM generate_series(1, 300) g"
        if key != "plain"
        else f"INSERT INTO {p} (id, name) SELECT g, 'n' || g FROM generate_series(1, 300) g"
    )
    return f"""
CREATE TABLE {p} ({KEYS[key]}, name text);
CREATE TABLE {ca} (id bigserial PRIMARY KEY, "item id" integer NOT NULL REFERENCES {p} (id) ON DELETE CASCADE);
CREATE INDEX ON {ca} ("item id");
CREATE TABLE {cb} (id bigserial PRIMARY KEY, ref integer REFERENCES {p} (id));
{insert};
INSERT INTO {ca} ("item id") SELECT g FROM generate_series(1, 300) g;
INSERT INTO {cb} (ref) SELECT CASE WHEN g % 3 = 0 THEN NULL ELSE g END FROM generate_series(1, 300) g;
"""


def parent_insert(db: DB, key: str, table: str, value: int | None = None) -> int:
    if key == "plain":
        assert value is not None
        row = db.execute(
            f'INSERT INTO "{table}" (id, name) VALUES (%s, %s) RETURNING id', [value, "x"]
        ).fetchone()
    else:
        row = db.execute(f'INSERT INTO "{table}" (name) VALUES (%s) RETURNING id', ["x"]).fetchone()
    assert row is not None
    return int(str(row[0]))


@pytest.mark.parametrize("key", ["serial", "identity", "plain"])
def test_key_and_two_children_become_bigint(tmp_path: Path, database_url: str, db: DB, key: str) -> None:
    project = new_project(tmp_path, database_url, db, setup_sql(key))
    original = snapshot(db, ("items", "children", "others"))
    doc = plan(project, "items")
    assert [p["name"] for p in doc["phases"]] == ["expand", "backfill", "contract"]
    ok(project, "upgrade", "--phase", "expand")
    # Old code keeps inserting parent and child rows through the foreign keys.
    new_id = parent_insert(db, key, "items", 1001)
    db.execute('INSERT INTO children ("item id") VALUES (%s)', [new_id])
    ok(project, "upgrade", "--phase", "backfill")
    for table, column in (("items", "id"), ("children", "item id"), ("others", "ref")):
        shadow = f"{column}_ecm_new"
        assert rows(db, f'SELECT count(*) FROM "{table}" WHERE "{shadow}" IS DISTINCT FROM "{column}"') == [
            (0,)
        ]
    ok(project, "upgrade")
    for table, column in (("items", "id"), ("children", "item id"), ("others", "ref")):
        assert type_of(db, table, column) == "bigint", (table, column)
        assert type_of(db, table, f"{column}_ecm_new") is None
        assert type_of(db, table, f"{column}_ecm_old") is None
    after = snapshot(db, ("items", "children", "others"))
    for table in ("items", "children", "others"):
        assert after[table]["constraints"] == original[table]["constraints"], table
        assert after[table]["indexes"] == original[table]["indexes"], table
        assert after[table]["triggers"] == original[table]["triggers"], table
    # A value past 2^31 after the contract, through the key and both foreign keys.
    if key == "serial":
        db.execute("SELECT setval(pg_get_serial_sequence('items', 'id'), 3000000000)")
    elif key == "identity":
        db.execute("ALTER TABLE items ALTER COLUMN id RESTART WITH 3000000001")
    big = parent_insert(db, key, "items", 3_000_000_001)
    assert big > 2**31
    db.execute('INSERT INTO children ("item id") VALUES (%s)', [big])
    db.execute("INSERT INTO others (ref) VALUES (%s)", [big])
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute('INSERT INTO children ("item id") VALUES (%s)', [big + 7])
    db.execute("DELETE FROM others WHERE ref = %s", [big])
    db.execute("DELETE FROM items WHERE id = %s", [big])  # ON DELETE CASCADE carried over
    assert rows(db, f'SELECT count(*) FROM children WHERE "item id" = {big}') == [(0,)]
    assert rows(db, "SELECT count(*) FROM items") == [(301,)]


def test_rollback_from_every_phase_restores_the_original(tmp_path: Path, database_url: str, db: DB) -> None:
    project = new_project(tmp_path, database_url, db, setup_sql("serial"))
    original = snapshot(db, ("items", "children", "others"))
    doc = plan(project, "items")
    ok(project, "upgrade")
    assert type_of(db, "items", "id") == "bigint"
    ok(project, "abort", doc["plan_id"], "--allow-no-reporters")
    after = snapshot(db, ("items", "children", "others"))
    for table in ("items", "children", "others"):
        assert after[table]["constraints"] == original[table]["constraints"], table
        assert after[table]["indexes"] == original[table]["indexes"], table
        assert after[table]["triggers"] == original[table]["triggers"], table
        assert {c: v[:2] for c, v in after[table]["columns"].items()} == {
            c: v[:2] for c, v in original[table]["columns"].items()
        }, table
    assert rows(db, 'SELECT count(*) FROM children c JOIN items i ON i.id = c."item id"') == [(301 - 1,)]
    new_id = parent_insert(db, "serial", "items")
    db.execute('INSERT INTO children ("item id") VALUES (%s)', [new_id])


def test_hostile_identifiers(tmp_path: Path, database_url: str, db: DB) -> None:
    parent, a, b = 'it"ems $ecm$', "ch;ild'ren", "Others Ü"
    db.execute('CREATE SCHEMA "we ird"; SET search_path = "we ird", public')
    project = new_project(
        tmp_path,
        database_url,
        db,
        'SET search_path = "we ird"; ' + setup_sql("serial", parent.replace('"', '""'), a, b),
    )
    doc = plan(project, parent, "--schema", "we ird")
    assert doc["plan_id"]
    ok(project, "upgrade")
    q = parent.replace('"', '""')
    assert type_of(db, f'"we ird"."{q}"', "id") == "bigint"
    assert type_of(db, f'"we ird"."{a}"', "item id") == "bigint"
    assert type_of(db, f'"we ird"."{b}"', "ref") == "bigint"


REFUSALS = [
    ("CREATE TABLE items (id text PRIMARY KEY)", ("items",), "not an integer key"),
    ("CREATE TABLE items (a integer, b integer, PRIMARY KEY (a, b))", ("items",), "composite primary key"),
    ("CREATE TABLE items (id bigserial PRIMARY KEY)", ("items",), "already bigint"),
    ("CREATE TABLE items (id serial PRIMARY KEY, n integer)", ("items", "n"), "is not the primary key"),
    ("CREATE TABLE items (n integer)", ("items",), "has no primary key"),
]


@pytest.mark.parametrize(("setup", "args", "fragment"), REFUSALS)
def test_bad_input_exit_2_one_line_nothing_changed(
    tmp_path: Path, database_url: str, db: DB, setup: str, args: tuple[str, ...], fragment: str
) -> None:
    project = new_project(tmp_path, database_url, db, setup)
    before = snapshot(db, ("items",))
    versions = sorted(p.name for p in project.versions())
    result = project.ecm("plan", "bigint-key", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("ecm: error:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert snapshot(db, ("items",)) == before
    assert sorted(p.name for p in project.versions()) == versions


def test_a_contract_stopped_between_swaps_fails_closed_and_rolls_back(
    tmp_path: Path, database_url: str, db: DB
) -> None:
    """A foreign key the plan never saw keeps the parent's old primary key alive: the parent's swap
    fails (exit 1) after the children swapped; the application keeps working, and abort from there
    gives back the original."""
    project = new_project(tmp_path, database_url, db, setup_sql("serial"))
    original = snapshot(db, ("items", "children", "others"))
    doc = plan(project, "items")
    ok(project, "upgrade", "--phase", "backfill")
    db.execute("CREATE TABLE late (id integer PRIMARY KEY REFERENCES items (id))")
    failed = project.ecm("upgrade", env=NO_REPORTERS)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert type_of(db, "children", "item id") == "bigint"
    assert type_of(db, "others", "ref") == "bigint"
    assert type_of(db, "items", "id") == "integer"
    new_id = parent_insert(db, "serial", "items")
    db.execute('INSERT INTO children ("item id") VALUES (%s)', [new_id])
    db.execute("INSERT INTO late (id) VALUES (%s)", [new_id])
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute('INSERT INTO children ("item id") VALUES (%s)', [new_id + 1000])
    ok(project, "abort", doc["plan_id"], "--allow-no-reporters")
    after = snapshot(db, ("items", "children", "others"))
    for table in ("items", "children", "others"):
        assert after[table]["constraints"] == original[table]["constraints"], table
        assert after[table]["indexes"] == original[table]["indexes"], table
        assert after[table]["triggers"] == original[table]["triggers"], table
        assert {c: v[:2] for c, v in after[table]["columns"].items()} == {
            c: v[:2] for c, v in original[table]["columns"].items()
        }, table
    db.execute('INSERT INTO children ("item id") VALUES (%s)', [new_id])


def test_offline_script_runs_in_psql(tmp_path: Path, database_url: str, db: DB) -> None:
    """`ecm upgrade --sql`: every phase as one psql script, both children's backfills included."""
    import shutil
    import subprocess

    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    project = new_project(tmp_path, database_url, db, setup_sql("identity"))
    plan(project, "items")
    script = project.ecm("upgrade", "--sql", env=NO_REPORTERS)
    assert script.returncode == 0, script.stderr[-3000:]
    assert "CALL" in script.stdout
    ran = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", database_url],
        input=script.stdout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    for table, column in (("items", "id"), ("children", "item id"), ("others", "ref")):
        assert type_of(db, table, column) == "bigint", (table, column)
    db.execute("ALTER TABLE items ALTER COLUMN id RESTART WITH 3000000001")
    assert parent_insert(db, "identity", "items") == 3_000_000_001


def test_ecm_backfill_and_verify_cover_every_table(tmp_path: Path, database_url: str, db: DB) -> None:
    """`ecm backfill PLAN` fills the referencing tables' shadows too, and `ecm verify PLAN` reads
    them: a child row put out of step behind the trigger's back fails it (exit 1)."""
    project = new_project(tmp_path, database_url, db, setup_sql("serial"))
    doc = plan(project, "items")
    ok(project, "upgrade", "--phase", "expand")
    ok(project, "backfill", doc["plan_id"])
    ok(project, "verify", doc["plan_id"])
    (shadow,) = rows(
        db,
        "SELECT attname FROM pg_attribute WHERE attrelid = 'children'::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attname NOT IN ('id', 'item id')",
    )[0]
    assert rows(db, f'SELECT count(*) FROM children WHERE "{shadow}" IS NULL') == [(0,)]
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")  # no trigger: out of step on purpose
        db.execute(f'UPDATE children SET "{shadow}" = "{shadow}" + 1000 WHERE id = 7')
    result = project.ecm("verify", doc["plan_id"])
    assert result.returncode == 1, result.stderr[-2000:]
    assert "id=7" in result.stderr, result.stderr[-2000:]
