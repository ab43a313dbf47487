"""change-type end to end: the real CLI, a stock Alembic project, a real PostgreSQL.

What a user sees: which pairs change only the catalog (measured here with pg_class.relfilenode),
the same-name shadow swapped in with everything the column had, --rename-to with conversions that
can fail (old code's writes never do; the rows are reported and hold the contract), refusals at
plan time, the rollback, and names that need quoting through the live and the psql paths.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from expandcontract.plan import types

from .conformance.harness import snapshot
from .project import Project, columns, constraints, indexes, make_project, triggers

NO_REPORTERS = {"ECM_ALLOW_NO_REPORTERS": "1"}
DB = psycopg.Connection[tuple[object, ...]]


def new_project(tmp_path: Path, url: str, db: DB, setup: str) -> Project:
    db.execute(setup)
    project = make_project(tmp_path / "app", url)
    assert project.alembic("revision", "-m", "base").returncode == 0
    return project


def plan(project: Project, *args: str) -> dict[str, Any]:
    result = project.ecm("plan", "change-type", *args, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def ok(project: Project, *args: str, env: dict[str, str] | None = None) -> str:
    result = project.ecm(*args, env={**NO_REPORTERS, **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ecm: error:")]


def said(stderr: str) -> list[str]:
    """What ecm told the user on stderr (the JSON log events left out)."""
    return [line for line in stderr.splitlines() if line and not line.startswith(("{", "INFO  ["))]


def relfilenodes(db: DB, table: str = "items") -> dict[str, int]:
    """The storage of a table and of each of its indexes: a rewrite or a rebuild changes it."""
    rows = db.execute(
        "SELECT c.relname, c.relfilenode FROM pg_class c WHERE c.oid = to_regclass(%s) "
        "UNION ALL SELECT i.relname, i.relfilenode FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = to_regclass(%s)",
        (table, table),
    ).fetchall()
    return {str(r[0]): int(str(r[1])) for r in rows}


def type_of(db: DB, column: str, table: str = "items") -> str:
    row = db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname = %s AND NOT attisdropped",
        (table, column),
    ).fetchone()
    assert row is not None, f"no column {column}"
    return str(row[0])


def rows(db: DB, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in db.execute(sql).fetchall()]


def leftovers(db: DB) -> list[str]:
    """Objects of ecm's plans still in the user's schemas: shadow columns, triggers, functions."""
    found = rows(
        db,
        "SELECT 'column ' || attrelid::regclass || '.' || attname FROM pg_attribute "
        "WHERE attname ~ '_ecm_(new|old)' AND attnum > 0 AND NOT attisdropped "
        "AND attrelid IN (SELECT oid FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace <> 'ecm'::regnamespace "
        "                 AND relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema')) "
        "UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE 'ecm%' "
        "UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p "
        "WHERE p.proname LIKE 'ecm%' AND p.pronamespace <> 'ecm'::regnamespace",
    )
    return sorted(str(r[0]) for r in found)


def files(project: Project) -> set[str]:
    return {str(p.relative_to(project.root)) for p in (project.root / "migrations").rglob("*.py")}


def schemas(db: DB) -> list[str]:
    return sorted(str(r[0]) for r in rows(db, "SELECT nspname FROM pg_namespace"))


# -- the in-place list, measured --------------------------------------------------------------------

#: (old type, new type, a value): every pair the lists name, and pairs next to them.
PAIRS = [
    ("varchar(20)", "varchar(40)", "'v' || g"),
    ("varchar(20)", "varchar", "'v' || g"),
    ("varchar(20)", "text", "'v' || g"),
    ("varchar", "text", "'v' || g"),
    ("varbit(8)", "varbit(16)", "B'1011'"),
    ("varbit(8)", "varbit", "B'1011'"),
    ("numeric(10,2)", "numeric(12,2)", "g / 3.0"),
    ("numeric(10,2)", "numeric", "g / 3.0"),
    ("timestamp", "timestamptz", "'2024-03-31 00:30'::timestamp + g * interval '7 minutes'"),
    ("timestamp(3)", "timestamptz", "'2024-03-31 00:30:00.123'::timestamp"),
    ("timestamp(3)", "timestamptz(6)", "'2024-03-31 00:30:00.123'::timestamp"),
    # pairs that rewrite, none of them in place: a precision below 6 rounds every value (even
    # the precision the values already have), arrays coerce element by element
    ("timestamp", "timestamptz(3)", "'2024-03-31 00:30:00.123456'::timestamp"),
    ("timestamp(3)", "timestamptz(5)", "'2024-03-31 00:30:00.123'::timestamp"),
    ("timestamp(3)", "timestamptz(3)", "'2024-03-31 00:30:00.123'::timestamp"),
    ("integer", "bigint", "g"),
    ("smallint", "integer", "g"),
    ("real", "double precision", "g / 3.0"),
    ("text", "varchar(20)", "'v' || g"),
    ("varchar(20)", "varchar(10)", "'v' || g"),
    ("numeric(10,2)", "numeric(12,4)", "g / 3.0"),
    ("numeric(10,2)", "numeric(10)", "g / 3.0"),
    ("varchar(20)[]", "varchar(40)[]", "ARRAY['v' || g]"),
    ("varchar[]", "text[]", "ARRAY['v' || g]"),
    ("numeric(10,2)[]", "numeric(12,2)[]", "ARRAY[g / 3.0]"),
    ("timestamp[]", "timestamptz[]", "ARRAY['2024-03-31'::timestamp]"),
]


def test_the_in_place_list_is_what_the_server_does(db: DB) -> None:
    """A plain ALTER COLUMN TYPE on a table with rows (TimeZone UTC, as the contract pins it): every pair
    `in_place()` names keeps the table's storage and scans nothing; pairs next to them rewrite."""
    version = int(str(rows(db, "SHOW server_version_num")[0][0]))
    heard: list[str] = []
    db.add_notice_handler(lambda d: heard.append(str(d.message_primary)))
    db.execute("SET TimeZone = 'UTC'")
    wrong = []
    for n, (old, new, value) in enumerate(PAIRS):
        table = f"pair_{n}"
        db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v {old})")
        db.execute(f"INSERT INTO {table} SELECT g, {value} FROM generate_series(1, 300) g")
        before = relfilenodes(db, table)
        heard.clear()
        db.execute("SET client_min_messages = debug1")
        db.execute(f"ALTER TABLE {table} ALTER COLUMN v TYPE {new}")
        db.execute("RESET client_min_messages")
        rewrote = relfilenodes(db, table)[table] != before[table]
        scanned = any("verifying table" in m for m in heard)
        claimed = types.in_place(types.parse(old), types.parse(new), version)
        if claimed and (rewrote or scanned):
            wrong.append(f"{old} -> {new}: in_place() says catalog-only, the server rewrote or scanned")
        if not claimed and not rewrote:
            wrong.append(f"{old} -> {new}: the server did not rewrite; measure again before listing it")
    assert wrong == []


def test_timestamptz_rewrites_when_the_zone_is_not_utc(db: DB) -> None:
    """Why the contract pins TimeZone to UTC: in any other zone the same ALTER rewrites every row."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, at timestamp)")
    db.execute(
        "INSERT INTO t SELECT g, '2024-01-01'::timestamp + g * interval '1 hour' FROM generate_series(1, 100) g"
    )
    before = relfilenodes(db, "t")["t"]
    db.execute("SET TimeZone = 'Europe/Paris'")
    db.execute("ALTER TABLE t ALTER COLUMN at TYPE timestamptz")
    assert relfilenodes(db, "t")["t"] != before


IN_PLACE = [
    ("varchar(20)", "varchar(40)", "character varying(40)", "'v' || g"),
    ("varchar(20)", "varchar", "character varying", "'v' || g"),
    ("varchar(20)", "text", "text", "'v' || g"),
    ("varchar", "text", "text", "'v' || g"),
    ("varbit(8)", "varbit(16)", "bit varying(16)", "(g % 256)::bit(8)::varbit"),
    ("numeric(10,2)", "numeric(12,2)", "numeric(12,2)", "g / 3.0"),
    ("numeric(10,2)", "numeric", "numeric", "g / 3.0"),
]


@pytest.mark.parametrize(
    ("old", "new", "shown", "value"), IN_PLACE, ids=[f"{o}->{n}" for o, n, _, _ in IN_PLACE]
)
def test_in_place_contract_keeps_the_table_and_its_values(
    tmp_path: Path, database_url: str, db: DB, old: str, new: str, shown: str, value: str
) -> None:
    setup = f"""
    CREATE TABLE items (id bigint PRIMARY KEY, v {old} NOT NULL, other text);
    CREATE INDEX items_v_idx ON items (v);
    CREATE INDEX items_v_id_idx ON items (v, id);
    INSERT INTO items SELECT g, {value}, 'o' || g FROM generate_series(1, 300) g;
    """
    project = new_project(tmp_path, database_url, db, setup)
    original = snapshot(db, ("items",))
    values = rows(db, "SELECT id, v::text FROM items ORDER BY id")
    storage = relfilenodes(db)
    doc = plan(project, "items", "v", new)
    assert [p["name"] for p in doc["phases"]] == ["contract"]
    assert doc["title"].endswith("(in place)")
    ok(project, "upgrade")
    assert type_of(db, "v") == shown
    assert relfilenodes(db) == storage  # neither the table nor its indexes were rewritten
    assert rows(db, "SELECT id, v::text FROM items ORDER BY id") == values
    assert columns(db, "items")["v"][1:] == (False, None, None)  # still NOT NULL, no default
    assert leftovers(db) == []
    # The rollback changes the type back (narrowing back scans, and the values fit).
    aborted = project.ecm("abort", doc["plan_id"], "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr[-3000:]
    assert snapshot(db, ("items",)) == original
    assert rows(db, "SELECT id, v::text FROM items ORDER BY id") == values


TIMESTAMPS = """
CREATE TABLE events (id bigint PRIMARY KEY, at timestamp NOT NULL, at_copy timestamp NOT NULL);
INSERT INTO events
SELECT g, t, t FROM generate_series(1, 300) g,
     LATERAL (SELECT '2024-03-30 22:00'::timestamp + g * interval '17 minutes' AS t) s;
"""


def utc_mismatches(db: DB) -> list[tuple[object, ...]]:
    """Rows whose new timestamptz is not the old wall-clock value read as UTC."""
    return rows(
        db, "SELECT id, at, at_copy FROM events WHERE at IS DISTINCT FROM (at_copy AT TIME ZONE 'UTC')"
    )


@pytest.mark.parametrize("offline", [False, True], ids=["live", "psql"])
def test_timestamp_to_timestamptz_reads_the_values_as_utc_in_any_session_zone(
    tmp_path: Path, database_url: str, db: DB, offline: bool
) -> None:
    """The database's default zone and the ecm (or psql) process's own (PGTZ) are neither UTC: the
    contract's set_config pins UTC inside its own transaction, so no rewrite and no shifted instant."""
    dbname = db.info.dbname  # the URL may carry the host as a query parameter (embedded server)
    db.execute(f"ALTER DATABASE \"{dbname}\" SET TimeZone = 'Asia/Kolkata'")
    project = new_project(tmp_path, database_url, db, TIMESTAMPS)
    storage = relfilenodes(db, "events")
    zone = {"PGTZ": "America/New_York"}
    doc = plan(project, "events", "at", "timestamptz")
    assert [p["name"] for p in doc["phases"]] == ["contract"]
    if offline:
        psql = shutil.which("psql")
        if psql is None:
            pytest.skip("psql is not installed")
        ok(project, "init")
        script = project.ecm("upgrade", "--sql", env={**NO_REPORTERS, **zone})
        assert script.returncode == 0, script.stderr[-3000:]
        ran = subprocess.run(
            [psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-", database_url],
            input=script.stdout,
            capture_output=True,
            text=True,
            env={**os.environ, **zone},
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
    else:
        ok(project, "upgrade", env=zone)
    assert type_of(db, "at", "events") == "timestamp with time zone"
    assert relfilenodes(db, "events") == storage
    assert utc_mismatches(db) == []
    first = rows(db, "SELECT at FROM events WHERE id = 1")[0][0]
    assert first == dt.datetime(2024, 3, 30, 22, 17, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("setup", "column", "new", "what"),
    [
        (
            "CREATE TABLE items (id bigint PRIMARY KEY, v varchar(20) NOT NULL CONSTRAINT items_v_check "
            "CHECK (length(v) > 1));"
            "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 300) g;",
            "v",
            "text",
            "a CHECK constraint (ALTER TYPE would scan the table to check it again)",
        ),
        (
            "CREATE TABLE items (id bigint PRIMARY KEY, v varchar(20));"
            "CREATE INDEX items_lower_v_idx ON items (lower(v));"
            "CREATE INDEX items_v_part_idx ON items (id) WHERE v <> '';"
            "INSERT INTO items SELECT g, 'V' || g FROM generate_series(1, 300) g;",
            "v",
            "text",
            "an expression and a partial index (ALTER TYPE would rebuild them)",
        ),
        (
            "CREATE TABLE items (id bigint PRIMARY KEY, v timestamp NOT NULL, v_copy timestamp);"
            "CREATE INDEX items_v_idx ON items (v);"
            "INSERT INTO items SELECT g, t, t FROM generate_series(1, 300) g, "
            "LATERAL (SELECT '2024-10-27 00:00'::timestamp + g * interval '5 minutes' AS t) s;",
            "v",
            "timestamptz",
            "an index on a timestamp column (another operator class: ALTER TYPE would rebuild it)",
        ),
    ],
    ids=["check", "expression-index", "timestamp-index"],
)
def test_in_place_pairs_that_would_scan_go_through_a_shadow(
    tmp_path: Path, database_url: str, db: DB, setup: str, column: str, new: str, what: str
) -> None:
    project = new_project(tmp_path, database_url, db, setup)
    original = snapshot(db, ("items",))
    values = rows(db, f"SELECT id, {column}::text FROM items ORDER BY id")
    doc = plan(project, "items", column, new)
    assert [p["name"] for p in doc["phases"]] == ["expand", "backfill", "contract"], what
    # ecm's own session and old code's are in another zone: the backfill and the trigger still read UTC.
    ok(project, "upgrade", "--phase", "backfill", env={"PGTZ": "America/New_York"})
    with psycopg.connect(database_url, autocommit=True) as old_code:
        old_code.execute("SET TimeZone = 'America/New_York'")
        value = "now()::timestamp" if new == "timestamptz" else "'late'"
        old_code.execute(f"INSERT INTO items (id, {column}) VALUES (1000, {value})")
        if new == "timestamptz":
            old_code.execute("UPDATE items SET v_copy = v WHERE id = 1000")
    ok(project, "upgrade")
    assert type_of(db, column) == {"text": "text", "timestamptz": "timestamp with time zone"}[new]
    after = snapshot(db, ("items",))
    # The same constraints (validated) and indexes by name, on the new type; no ecm leftover.
    assert set(after["items"]["constraints"]) == set(original["items"]["constraints"])
    assert all(valid for _, valid in after["items"]["constraints"].values())
    assert set(after["items"]["indexes"]) == set(original["items"]["indexes"])
    assert after["items"]["columns"][column][1:] == original["items"]["columns"][column][1:]
    assert leftovers(db) == []
    if new == "timestamptz":
        assert rows(
            db, "SELECT count(*) FROM items WHERE v IS DISTINCT FROM (v_copy AT TIME ZONE 'UTC')"
        ) == [(0,)]
    else:
        assert rows(db, f"SELECT id, {column}::text FROM items WHERE id < 1000 ORDER BY id") == values


# -- same name through a shadow: integer -> bigint ----------------------------------------------------

SAME_NAME = """
CREATE TABLE items (
    id bigint PRIMARY KEY,
    qty integer NOT NULL DEFAULT 7 CONSTRAINT items_qty_check CHECK (qty >= 0),
    n serial,
    k integer GENERATED BY DEFAULT AS IDENTITY,
    note text
);
CREATE INDEX items_qty_idx ON items (qty);
CREATE UNIQUE INDEX items_note_qty_key ON items (note, qty);
COMMENT ON COLUMN items.qty IS 'how many';
INSERT INTO items (id, qty, note) SELECT g, g * 3, 'note ' || g FROM generate_series(1, 300) g;
"""


@pytest.fixture
def same_name(tmp_path: Path, database_url: str, db: DB) -> Project:
    return new_project(tmp_path, database_url, db, SAME_NAME)


def test_same_name_integer_to_bigint_carries_everything_over(same_name: Project, db: DB) -> None:
    project = same_name
    original = snapshot(db, ("items",))
    docs = [plan(project, "items", c, "bigint") for c in ("qty", "n", "k")]
    assert [p["name"] for p in docs[0]["phases"]] == ["expand", "backfill", "contract"]
    ok(project, "upgrade", "--phase", "expand")
    # Old code (integer) writes the column itself; the shadow follows at once.
    db.execute("INSERT INTO items (id, qty, note) VALUES (1001, 5, 'old insert')")
    db.execute("INSERT INTO items (id, note) VALUES (1002, 'old default')")
    db.execute("UPDATE items SET qty = 11 WHERE id = 1")
    assert rows(db, "SELECT id, qty, qty_ecm_new FROM items WHERE id IN (1, 1001, 1002) ORDER BY id") == [
        (1, 11, 11),
        (1001, 5, 5),
        (1002, 7, 7),
    ]
    ok(project, "upgrade", "--phase", "backfill")
    assert rows(db, "SELECT count(*) FROM items WHERE qty_ecm_new IS DISTINCT FROM qty") == [(0,)]
    verified = project.ecm("verify", docs[0]["plan_id"])
    assert verified.returncode == 0, verified.stderr[-2000:]
    values = rows(db, "SELECT id, qty, n, k FROM items ORDER BY id")
    ok(project, "upgrade")
    for c in ("qty", "n", "k"):
        assert type_of(db, c) == "bigint"
    cols = columns(db, "items")
    assert cols["qty"] == ("bigint", False, "7", None)
    assert cols["n"] == ("bigint", False, "nextval('items_n_seq'::regclass)", None)
    assert cols["k"][:2] == ("bigint", False)
    assert rows(db, "SELECT id, qty, n, k FROM items ORDER BY id") == values
    after = snapshot(db, ("items",))
    assert after["items"]["constraints"] == original["items"]["constraints"]
    assert after["items"]["indexes"] == original["items"]["indexes"]
    assert after["items"]["triggers"] == []
    assert leftovers(db) == []
    assert rows(
        db,
        "SELECT col_description('items'::regclass, attnum) FROM pg_attribute "
        "WHERE attrelid = 'items'::regclass AND attname = 'qty'",
    ) == [("how many",)]
    # The serial's sequence follows the column (owned by it, and as wide), the identity continues.
    assert rows(
        db, "SELECT pg_get_serial_sequence('items', 'n'), pg_get_serial_sequence('items', 'k') IS NOT NULL"
    ) == [("public.items_n_seq", True)]
    assert rows(
        db, "SELECT format_type(seqtypid, NULL) FROM pg_sequence WHERE seqrelid = 'items_n_seq'::regclass"
    ) == [("bigint",)]
    assert rows(
        db, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'k'"
    ) == [("d",)]
    db.execute("INSERT INTO items (id, note) VALUES (2000, 'new code')")
    qty, n, k = (int(str(v)) for v in rows(db, "SELECT qty, n, k FROM items WHERE id = 2000")[0])
    assert (
        qty == 7 and n == max(int(str(v[2])) for v in values) + 1 and k > max(int(str(v[3])) for v in values)
    )
    db.execute("UPDATE items SET qty = 3000000000 WHERE id = 2000")  # beyond integer: the point of it
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE items SET qty = -1 WHERE id = 2000")


def test_abort_after_the_same_name_contract_brings_the_old_type_back(same_name: Project, db: DB) -> None:
    project = same_name
    original = snapshot(db, ("items",))
    values = rows(db, "SELECT id, qty, note FROM items ORDER BY id")
    doc = plan(project, "items", "qty", "bigint")
    ok(project, "upgrade")
    assert type_of(db, "qty") == "bigint"
    aborted = project.ecm("abort", doc["plan_id"], "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr[-3000:]
    assert json.loads(aborted.stdout)["state"] == "aborted"
    assert type_of(db, "qty") == "integer"
    assert snapshot(db, ("items",)) == original  # type, default, NOT NULL, check, indexes; no trigger
    assert rows(db, "SELECT id, qty, note FROM items ORDER BY id") == values
    assert leftovers(db) == []


# -- same-name pairs outside the lists --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("qty", "text"),
        ("qty", "text", "--using", "qty::text"),
        ("qty", "smallint"),
        ("note", "varchar(20)"),
        ("note", "integer"),
    ],
    ids=lambda a: " ".join(a),
)
def test_same_name_outside_the_lists_is_refused(same_name: Project, db: DB, args: tuple[str, ...]) -> None:
    before, before_files = snapshot(db, ("items",)), files(same_name)
    before_schemas = schemas(db)
    result = same_name.ecm("plan", "change-type", "items", *args)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and said(result.stderr) == lines, result.stderr
    assert "is not a change old and new code can both read and write under one name" in lines[0]
    assert lines[0].endswith("use --rename-to NEW"), lines[0]
    assert files(same_name) == before_files
    assert snapshot(db, ("items",)) == before and schemas(db) == before_schemas


# -- --rename-to with a conversion that can fail ----------------------------------------------------

CODES = """
CREATE TABLE items (
    id bigint PRIMARY KEY,
    code text DEFAULT '0',
    name text
);
INSERT INTO items SELECT g, CASE WHEN g % 100 = 0 THEN 'x' || g WHEN g % 60 = 0 THEN '  ' ELSE ' ' || g END, 'n' || g
  FROM generate_series(1, 300) g;
"""


def test_rename_to_with_unconvertible_values(tmp_path: Path, database_url: str, db: DB) -> None:
    project = new_project(tmp_path, database_url, db, CODES)
    doc = plan(
        project,
        "items",
        "code",
        "integer",
        "--rename-to",
        "code_num",
        "--using",
        "nullif(trim(code), '')::int",
    )
    plan_id = doc["plan_id"]
    assert plan_id == "change_type_items_code_code_num"
    ok(project, "upgrade", "--phase", "expand")
    # Old code writes code; code_num follows. A value that does not convert fails nothing: NULL.
    db.execute("INSERT INTO items (id, code) VALUES (1001, ' 42 '), (1002, 'abc'), (1003, '')")
    db.execute("UPDATE items SET code = '7' WHERE id = 7")
    # New code writes code_num; code follows through the cast back.
    db.execute("INSERT INTO items (id, code_num) VALUES (1004, 99)")
    db.execute("UPDATE items SET code_num = 5 WHERE id = 5")
    assert rows(
        db, "SELECT id, code, code_num FROM items WHERE id IN (5, 7, 1001, 1002, 1003, 1004) ORDER BY id"
    ) == [
        (5, "5", 5),
        (7, "7", 7),
        (1001, " 42 ", 42),
        (1002, "abc", None),
        (1003, "", None),
        (1004, "99", 99),
    ]
    # The backfill converts the rest; '  ' becomes NULL as --using says, 'x100' cannot convert.
    backfill = project.ecm("upgrade", "--phase", "backfill")
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    bad = "4 rows of public.items hold a value of code that does not convert to integer"
    keys = "(first keys: id=100, id=200, id=300, id=1002)"
    assert any(bad in line and keys in line for line in said(backfill.stderr)), backfill.stderr[-3000:]
    assert rows(db, "SELECT code_num FROM items WHERE id IN (60, 61) ORDER BY id") == [(None,), (61,)]
    # ecm verify: exit 1, the count and the first keys, one error line.
    verify = project.ecm("verify", plan_id, "--json")
    assert verify.returncode == 1, verify.stderr[-3000:]
    lines = error_lines(verify.stderr)
    assert lines == [f"ecm: error: verify {plan_id}: {bad} {keys}"], verify.stderr[-3000:]
    report = json.loads(verify.stdout)
    assert report["mismatch_count"] == 4 and report["mismatches"][0] == {"id": "100"}
    # The contract is held (exit 3) with the same reason; nothing changes.
    before = snapshot(db, ("items",))
    held = project.ecm("upgrade", env=NO_REPORTERS)
    assert held.returncode == 3, held.stderr[-3000:]
    reasons = [line.strip() for line in said(held.stderr) if line.strip().startswith("- ")]
    assert reasons == [
        f"- {bad} {keys}: update them to values that convert (any UPDATE of the row converts it again), "
        "then run the contract again"
    ], held.stderr[-3000:]
    assert snapshot(db, ("items",)) == before
    # Fixed by old code (the old column), the backfill run again, the contract applies.
    db.execute("UPDATE items SET code = '0' WHERE id IN (100, 200, 300, 1002)")
    ok(project, "backfill", plan_id)
    assert project.ecm("verify", plan_id).returncode == 0
    ok(project, "upgrade")
    cols = columns(db, "items")
    assert "code" not in cols and cols["code_num"] == ("integer", True, "('0'::text)::integer", None)
    assert rows(
        db, "SELECT count(*) FROM items WHERE code_num IS NULL AND id NOT IN (60, 120, 180, 240, 1003)"
    ) == [(0,)]
    assert rows(db, "SELECT code_num FROM items WHERE id IN (1, 100, 1001) ORDER BY id") == [
        (1,),
        (0,),
        (42,),
    ]
    assert leftovers(db) == []
    db.execute("INSERT INTO items (id) VALUES (3000)")
    assert rows(db, "SELECT code_num FROM items WHERE id = 3000") == [(0,)]


def test_rename_to_with_the_default_cast(tmp_path: Path, database_url: str, db: DB) -> None:
    """text -> integer without --using: the cast itself; 'abc' from old code is NULL, never an error."""
    project = new_project(tmp_path, database_url, db, CODES.replace("'  '", "'60'"))
    doc = plan(project, "items", "code", "integer", "--rename-to", "code_num")
    ok(project, "upgrade", "--phase", "backfill")
    db.execute("INSERT INTO items (id, code) VALUES (1001, 'abc')")
    assert rows(db, "SELECT code_num FROM items WHERE id = 1001") == [(None,)]
    verify = project.ecm("verify", doc["plan_id"])
    assert verify.returncode == 1
    assert error_lines(verify.stderr) == [
        f"ecm: error: verify {doc['plan_id']}: 4 rows of public.items hold a value of code that does not convert "
        "to integer (first keys: id=100, id=200, id=300, id=1001)"
    ]
    db.execute("DELETE FROM items WHERE id IN (100, 200, 300, 1001)")
    ok(project, "upgrade")
    assert type_of(db, "code_num") == "integer" and "code" not in columns(db, "items")


def test_rename_to_a_shorter_varchar_never_cuts_a_value_short(
    tmp_path: Path, database_url: str, db: DB
) -> None:
    """varchar(100) -> varchar(5): PostgreSQL's explicit cast truncates without a word, so a long value
    would arrive shortened and verify as in step. It counts as not convertible instead (found through
    autogenerate: a rename to a narrower column)."""
    project = new_project(
        tmp_path,
        database_url,
        db,
        "CREATE TABLE items (id bigint PRIMARY KEY, code varchar(100));"
        "INSERT INTO items SELECT g, CASE WHEN g % 100 = 0 THEN repeat('x', 80) ELSE 'c' || g END "
        "FROM generate_series(1, 300) g;",
    )
    doc = plan(project, "items", "code", "varchar(5)", "--rename-to", "short")
    ok(project, "upgrade", "--phase", "backfill")
    db.execute("INSERT INTO items (id, code) VALUES (1001, 'toolong')")
    assert rows(db, "SELECT short FROM items WHERE id IN (1, 100, 1001) ORDER BY id") == [
        ("c1",),
        (None,),
        (None,),
    ]
    verify = project.ecm("verify", doc["plan_id"])
    assert verify.returncode == 1
    assert error_lines(verify.stderr) == [
        f"ecm: error: verify {doc['plan_id']}: 4 rows of public.items hold a value of code that does not convert "
        "to varchar(5) (first keys: id=100, id=200, id=300, id=1001)"
    ]
    db.execute("UPDATE items SET code = 'ok' WHERE id IN (100, 200, 300, 1001)")
    ok(project, "upgrade")
    assert type_of(db, "short") == "character varying(5)" and "code" not in columns(db, "items")


def test_rename_to_a_wider_type_keeps_what_only_the_new_column_can_hold(
    tmp_path: Path, database_url: str, db: DB
) -> None:
    """varchar(10) -> text --rename-to: new code writes 20 characters. Old code's NOT NULL column shows
    them shortened (never NULL, which would fail new code's insert), and a later UPDATE of another
    column never recomputes the new column from the shortened old one."""
    project = new_project(
        tmp_path,
        database_url,
        db,
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name varchar(10) NOT NULL, "
        "other int); INSERT INTO items (name) SELECT 'n' || g FROM generate_series(1, 50) g;",
    )
    plan(project, "items", "name", "text", "--rename-to", "full_name")
    ok(project, "upgrade", "--phase", "expand")
    long = "y" * 20
    db.execute(f"INSERT INTO items (full_name) VALUES ('{long}')")
    assert rows(db, "SELECT name, full_name FROM items WHERE id = 51") == [("y" * 10, long)]
    db.execute("UPDATE items SET other = 2 WHERE id = 51")
    assert rows(db, "SELECT name, full_name FROM items WHERE id = 51") == [("y" * 10, long)]
    db.execute("UPDATE items SET other = 3 WHERE id = 1")
    assert rows(db, "SELECT full_name FROM items WHERE id = 1") == [("n1",)]


# -- unique columns -----------------------------------------------------------------------------------

UNIQUE = """
CREATE TABLE items (id bigint PRIMARY KEY, code text CONSTRAINT items_code_key UNIQUE, num integer UNIQUE);
INSERT INTO items SELECT g, g::text, g FROM generate_series(1, 300) g;
"""


def test_unique_column_needs_assume_injective(tmp_path: Path, database_url: str, db: DB) -> None:
    project = new_project(tmp_path, database_url, db, UNIQUE)
    before, before_files = snapshot(db, ("items",)), files(project)
    for args in (
        ("code", "integer", "--rename-to", "code_num"),  # ' 1' and '1' are both 1
        ("code", "varchar(100)", "--rename-to", "code2", "--using", "lower(code)"),
        ("num", "bigint", "--using", "num::bigint"),
    ):
        refused = project.ecm("plan", "change-type", "items", *args)
        assert refused.returncode == 2, refused.stderr
        lines = error_lines(refused.stderr)
        assert len(lines) == 1 and said(refused.stderr) == lines, refused.stderr
        assert "is unique" in lines[0] and "--assume-injective" in lines[0], lines[0]
    assert lines[0] == (  # the last refusal's
        "ecm: error: column public.items.num is unique and --using may map two values to one; "
        "pass --assume-injective if it cannot"
    )
    first = project.ecm("plan", "change-type", "items", "code", "integer", "--rename-to", "code_num")
    assert error_lines(first.stderr) == [
        "ecm: error: column public.items.code is unique and the cast text -> integer may map two values to one; "
        "pass --assume-injective if it cannot"
    ]
    assert files(project) == before_files and snapshot(db, ("items",)) == before
    # One-to-one conversions need no flag; with the flag the fallible one goes through and stays unique.
    plan(project, "items", "num", "text", "--rename-to", "num_text", "--dry-run")
    plan(project, "items", "code", "integer", "--rename-to", "code_num", "--assume-injective")
    ok(project, "upgrade")
    assert constraints(db, "items")["items_code_num_key"] == ("UNIQUE (code_num)", True)
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("INSERT INTO items (id, code_num) VALUES (1000, 1)")


# -- refused at plan time -----------------------------------------------------------------------------

REFUSALS = """
CREATE TABLE items (
    id integer PRIMARY KEY,
    code integer UNIQUE,
    viewed integer,
    src integer,
    doubled integer GENERATED ALWAYS AS (src * 2) STORED,
    trig integer
);
CREATE TABLE children (id int PRIMARY KEY, item_code integer REFERENCES items (code));
CREATE MATERIALIZED VIEW item_views AS SELECT viewed FROM items;
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER on_trig BEFORE UPDATE OF trig ON items FOR EACH ROW EXECUTE FUNCTION noop();
INSERT INTO items (id, code, viewed, src, trig) SELECT g, g, g, g, g FROM generate_series(1, 100) g;
"""


@pytest.mark.parametrize(
    ("column", "fragment"),
    [
        ("viewed", "column public.items.viewed is used by materialized view(s) public.item_views"),
        (
            "code",
            "column public.items.code is referenced by foreign key(s) children_item_code_fkey on children",
        ),
        ("doubled", "column public.items.doubled is a generated column"),
        ("src", "generated column(s) doubled of public.items depend on public.items.src"),
        ("id", "column public.items.id is part of the primary key"),
        ("trig", "column public.items.trig is used by trigger(s) (UPDATE OF or WHEN) on_trig"),
    ],
)
def test_refused_at_plan_time(tmp_path: Path, database_url: str, db: DB, column: str, fragment: str) -> None:
    project = new_project(tmp_path, database_url, db, REFUSALS)
    before, before_files, before_schemas = snapshot(db, ("items", "children")), files(project), schemas(db)
    result = project.ecm("plan", "change-type", "items", column, "bigint")
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and said(result.stderr) == lines, result.stderr
    assert fragment in lines[0], lines[0]
    assert files(project) == before_files
    assert snapshot(db, ("items", "children")) == before and schemas(db) == before_schemas


# -- names that need quoting --------------------------------------------------------------------------

HOSTILE_TABLE, HOSTILE_COLUMN = 'It\'s "items"', "Qty %s $ecm$"
HOSTILE = '''
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."It's ""items""" (
    "Key" bigint PRIMARY KEY,
    "Qty %s $ecm$" integer NOT NULL DEFAULT 1 CONSTRAINT "Qty check; --" CHECK ("Qty %s $ecm$" >= 0),
    other text
);
CREATE INDEX "Qty idx $ecm$" ON "Odd Schema"."It's ""items""" ("Qty %s $ecm$");
INSERT INTO "Odd Schema"."It's ""items""" SELECT g, g, 'o' || g FROM generate_series(1, 200) g;
'''
T = '"Odd Schema"."It\'s ""items"""'
C = '"Qty %s $ecm$"'


@pytest.mark.parametrize("offline", [False, True], ids=["live", "psql"])
def test_hostile_identifiers(tmp_path: Path, database_url: str, offline: bool) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(HOSTILE)
        original = {
            "constraints": constraints(conn, HOSTILE_TABLE, "Odd Schema"),
            "indexes": indexes(conn, HOSTILE_TABLE, "Odd Schema"),
        }
    project = make_project(tmp_path / "app", database_url)
    result = project.ecm(
        "plan", "change-type", HOSTILE_TABLE, HOSTILE_COLUMN, "bigint", "--schema", "Odd Schema"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if offline:
        psql = shutil.which("psql")
        if psql is None:
            pytest.skip("psql is not installed")
        ok(project, "init")
        script = project.ecm("upgrade", "--sql", "--phase", "contract", env=NO_REPORTERS)
        assert script.returncode == 0, script.stderr[-3000:]
        ran = subprocess.run(
            [
                psql,
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                "SET client_min_messages = warning",
                "-f",
                "-",
                database_url,
            ],
            input=script.stdout,
            capture_output=True,
            text=True,
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
    else:
        ok(project, "upgrade", "--phase", "expand")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'INSERT INTO {T} ("Key", {C}) VALUES (1000, 41)')
        ok(project, "upgrade", "--phase", "backfill")
        ok(project, "upgrade")
    with psycopg.connect(database_url, autocommit=True) as conn:
        cols = columns(conn, HOSTILE_TABLE, "Odd Schema")
        assert cols[HOSTILE_COLUMN] == ("bigint", False, "1", None)
        assert list(cols) == ["Key", "other", HOSTILE_COLUMN]
        assert constraints(conn, HOSTILE_TABLE, "Odd Schema") == original["constraints"]
        assert set(indexes(conn, HOSTILE_TABLE, "Odd Schema")) == set(original["indexes"])
        assert triggers(conn, HOSTILE_TABLE, "Odd Schema") == []
        assert rows(conn, f'SELECT sum({C}) FROM {T} WHERE "Key" <= 200') == [(20100,)]
        assert leftovers(conn) == []


def test_not_null_column_whose_conversion_gives_null(tmp_path: Path, database_url: str, db: DB) -> None:
    """code is NOT NULL, so code_num will be: a value --using turns into NULL holds the contract like
    one that does not convert, before any DDL, with the count and the keys."""
    project = new_project(
        tmp_path, database_url, db, CODES.replace("code text DEFAULT '0'", "code text NOT NULL")
    )
    doc = plan(
        project,
        "items",
        "code",
        "integer",
        "--rename-to",
        "code_num",
        "--using",
        "nullif(trim(code), '')::int",
    )
    ok(project, "upgrade", "--phase", "backfill")
    before = snapshot(db, ("items",))
    held = project.ecm("upgrade", env=NO_REPORTERS)
    assert held.returncode == 3, held.stderr[-3000:]
    assert (
        "7 rows of public.items hold a value of code that does not convert to integer NOT NULL "
        "(first keys: id=60, id=100, id=120, id=180, id=200)" in held.stderr
    ), held.stderr[-3000:]
    assert snapshot(db, ("items",)) == before
    db.execute("UPDATE items SET code = '0' WHERE nullif(trim(code), '') IS NULL OR code LIKE 'x%'")
    ok(project, "upgrade")
    assert columns(db, "items")["code_num"][:2] == ("integer", False)
    assert leftovers(db) == [] and doc["plan_id"] == "change_type_items_code_code_num"


def test_offline_script_stops_psql_at_unconvertible_values(tmp_path: Path, database_url: str, db: DB) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    project = new_project(tmp_path, database_url, db, CODES)
    plan(project, "items", "code", "integer", "--rename-to", "code_num")
    ok(project, "init")
    script = project.ecm("upgrade", "--sql", env=NO_REPORTERS)
    assert script.returncode == 0, script.stderr[-3000:]
    ran = subprocess.run(
        [psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-", database_url],
        input=script.stdout,
        capture_output=True,
        text=True,
    )
    assert ran.returncode != 0
    assert (
        "ecm: contract change_type_items_code_code_num refused: rows of public.items hold a value of code that "
        "does not convert to integer; update them to values that convert" in ran.stderr
    ), ran.stderr[-3000:]
    assert "code" in columns(db, "items") and rows(db, "SELECT code_num FROM items WHERE id = 100") == [
        (None,)
    ]
