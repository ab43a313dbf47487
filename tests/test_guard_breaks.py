"""What a contract breaks beyond removals, against a real server: types registered by real
reporters, resolved by PostgreSQL, judged live (check_contract, `ecm guard check`, `ecm upgrade`,
the contract revision itself) and offline (the DO block, run by psql), with the same verdicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, Numeric, Table, Text, create_engine
from sqlalchemy.engine import Engine

from expandcontract import LiveReporter
from expandcontract.db import control
from expandcontract.guard import Decision
from expandcontract.live.guard_check import check_contract
from expandcontract.live.types import resolve
from expandcontract.revisions.offline import guard_sql, terminated
from expandcontract.urls import normalize

from .conftest import Server, run_ecm
from .project import Project, columns, make_project
from .test_guard import TYPES

PSQL = shutil.which("psql")
SQUAWK = Path(sys.executable).parent / "squawk"
RETYPE = {
    "table": "public.items",
    "column": "qty",
    "kind": "retype",
    "old_type": "integer",
    "new_type": "bigint",
}
NOT_NULL = {"table": "public.items", "column": "note", "kind": "not-null"}
#: Typmods are no part of a type: this retype changes nothing the guard can see.
WIDEN = {
    "table": "public.items",
    "column": "code",
    "kind": "retype",
    "old_type": "character varying(100)",
    "new_type": "character varying(200)",
}
BREAKS = [RETYPE, NOT_NULL, WIDEN]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_engine(normalize(database_url))
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def initialized(engine: Engine) -> Engine:
    with engine.connect() as conn:
        control.ensure(conn)
    return engine


def add_row(
    db: psycopg.Connection[Any],
    *,
    types: object,
    uses: list[str] | None = None,
    version: str = "1",
    age: float = 0.0,
    role: str = "server",
    pid: int = 77,
) -> None:
    """An instance of web mapping public.items, written as a reporter would (or an older one)."""
    mapped = uses if uses is not None else sorted(["id", *(types or {})])  # type: ignore[arg-type]
    db.execute(
        "INSERT INTO ecm.instances (id, app, version, host, pid, last_heartbeat, interval_s, uses, types, role) "
        "VALUES (%s, 'web', %s, 'h1', %s, now() - make_interval(secs => %s), 10, %s::jsonb, %s::jsonb, %s)",
        (
            str(uuid.uuid4()),
            version,
            pid,
            age,
            json.dumps({"public.items": mapped}),
            None if types is None else json.dumps({"public.items": types}),
            role,
        ),
    )


def t(type_: str | None, nullable: bool | None = True) -> dict[str, Any]:
    return {"type": type_, "nullable": nullable}


def check(engine: Engine, breaks: list[dict[str, Any]] = BREAKS, **kwargs: Any) -> Decision:
    with engine.connect() as conn:
        return check_contract(conn, removes=kwargs.pop("removes", {}), breaks=breaks, **kwargs)


# -- the server's view of type names --------------------------------------------------------


def test_the_server_resolves_names_as_the_pure_tests_assume(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin():
        resolved = resolve(conn, [*TYPES, "foo(", "VARCHAR[]", "text[]", "TIMESTAMP WITHOUT TIME ZONE"])
        conn.exec_driver_sql("SELECT 1")  # a name it cannot parse left the transaction usable
    for name, expected in TYPES.items():
        got = resolved[name]
        if expected is None:
            assert got is None, name
            continue
        assert got is not None and got.name == expected.name, name
        assert expected.same <= got.same, name  # what the pure tests rely on, at least
    assert resolved["foo("] is None
    assert resolved["VARCHAR"] is not None and resolved["text"] is not None
    assert resolved["VARCHAR"].equivalent(resolved["text"])  # String() reads a text column as itself
    assert resolved["VARCHAR[]"] is not None and resolved["text[]"] is not None
    assert resolved["VARCHAR[]"].equivalent(resolved["text[]"])
    assert resolved["INTEGER"] is not None and resolved["bigint"] is not None
    assert not resolved["INTEGER"].equivalent(resolved["bigint"])
    assert resolved["TIMESTAMP WITHOUT TIME ZONE"] == resolved["TIMESTAMP WITHOUT TIME ZONE"]


def test_check_contract_judges_registered_types_through_the_server(
    initialized: Engine, db: psycopg.Connection[Any]
) -> None:
    add_row(db, types={"qty": t("INTEGER"), "note": t("TEXT", False)}, version="1")
    add_row(db, types={"qty": t("BIGINT"), "note": t("TEXT", False), "code": t("TEXT")}, version="2")
    add_row(db, types={"qty": t("int8"), "note": t("TEXT", False), "code": t("NUMERIC(4, 1)")}, version="3")
    d = check(initialized)
    assert not d.allowed and not d.unknown and not d.cannot_tell
    assert len(d.reasons) == 1
    assert d.reasons[0].startswith(
        "1 instance of web 1 maps public.items.qty as integer; the contract makes it bigint; last seen "
    )
    assert d.reasons[0].endswith("(host h1 pid 77)")
    db.execute("DELETE FROM ecm.instances WHERE version = '1'")
    assert check(initialized).allowed


@pytest.mark.parametrize(
    ("types", "uses", "clause"),
    [
        (None, ["id", "qty"], "but its type is unknown (its reporter registers no column types)"),
        ({}, ["id", "qty"], "but its type is unknown (listed in uses=, which carries no types)"),
        ({"qty": t("NUMERIC(10, 2)")}, None, "as numeric"),
        ({"qty": t("foo(")}, None, "but its type is unknown ('foo(' is not a type this database knows)"),
        ({"qty": t("mood")}, None, "but its type is unknown ('mood' is not a type this database knows)"),
    ],
    ids=["old reporter", "uses only", "third type", "unparseable", "unknown"],
)
def test_cannot_tell_holds_the_contract(
    initialized: Engine,
    db: psycopg.Connection[Any],
    types: dict[str, Any] | None,
    uses: list[str] | None,
    clause: str,
) -> None:
    add_row(db, types=types, uses=uses)
    with initialized.connect() as conn, conn.begin():
        d = check_contract(conn, removes={}, breaks=[RETYPE])
        conn.exec_driver_sql("SELECT 1")  # the caller's transaction survived a bad type name
    assert not d.allowed and d.cannot_tell and not d.unknown
    assert d.reasons == [
        f"1 instance of web 1 maps public.items.qty {clause}: cannot tell whether it reads public.items.qty "
        f"safely once the contract makes it bigint (from integer); last seen {d.reasons[0].split('last seen ')[1]}"
    ]


def test_not_null_holds_while_mapped_as_nullable(initialized: Engine, db: psycopg.Connection[Any]) -> None:
    add_row(db, types={"note": t("TEXT", True)}, version="1")
    add_row(db, types={"note": t("TEXT", False)}, version="2")
    d = check(initialized, breaks=[NOT_NULL])
    assert [r.split("; last seen")[0] for r in d.reasons] == [
        "1 instance of web 1 maps public.items.note as nullable; the contract makes it NOT NULL"
    ]
    add_row(db, types=None, uses=["note"], version="0.9")
    d = check(initialized, breaks=[NOT_NULL])
    assert d.cannot_tell and "web 0.9 maps public.items.note but its nullability is unknown" in d.reasons[0]


def test_a_typmod_change_needs_nothing(initialized: Engine, db: psycopg.Connection[Any]) -> None:
    assert check(initialized, breaks=[WIDEN]).allowed  # no evidence needed: it breaks nothing
    add_row(db, types={"code": t("NUMERIC(10, 2)")})
    assert check(initialized, breaks=[WIDEN]).allowed


def test_a_registry_without_types_still_reads_names(initialized: Engine, db: psycopg.Connection[Any]) -> None:
    """A control schema at 0002 (no types column): removals are judged, retypes cannot tell."""
    db.execute("ALTER TABLE ecm.instances DROP COLUMN types")
    db.execute(
        "INSERT INTO ecm.instances (id, app, version, host, pid, interval_s, uses) VALUES "
        "(gen_random_uuid(), 'web', '1', 'h1', 77, 10, '{\"public.items\": [\"id\", \"qty\"]}')"
    )
    d = check(initialized, breaks=[RETYPE], removes={"public.items": ["qty"]})
    assert not d.allowed and not d.unknown
    assert d.reasons[0].startswith("1 instance of web 1 still maps public.items.qty; ")
    assert "its reporter registers no column types" in d.reasons[1]


def test_malformed_registered_types_cannot_tell_for_that_instance_only(
    initialized: Engine, db: psycopg.Connection[Any]
) -> None:
    add_row(db, types={"qty": t("BIGINT")}, version="2")
    db.execute(
        "INSERT INTO ecm.instances (id, app, version, host, pid, interval_s, uses, types) VALUES "
        "(gen_random_uuid(), 'web', '1', 'h1', 78, 10, '{\"public.items\": [\"qty\"]}', '[1, 2]')"
    )
    d = check(initialized, breaks=[RETYPE])
    assert not d.unknown and d.cannot_tell and len(d.reasons) == 1
    assert "web 1 maps public.items.qty but its type is unknown" in d.reasons[0]


# -- real reporters, real commands ------------------------------------------------------------


def items(*cols: Column[Any]) -> MetaData:
    md = MetaData()
    Table("items", md, Column("id", Integer, primary_key=True), *cols)
    return md


def reporter(url: str, version: str, md: MetaData, **kwargs: Any) -> LiveReporter:
    return LiveReporter(
        url, app="web", version=version, metadata=md, interval=0.5, handle_signals=False, **kwargs
    )


def insert_plan(
    db: psycopg.Connection[Any], plan_id: str, spec: dict[str, Any], phase: str = "backfilled"
) -> None:
    db.execute(
        "INSERT INTO ecm.plans (plan_id, operation, table_schema, table_name, spec, phase) "
        "VALUES (%s, 'change-type', 'public', 'items', %s::jsonb, %s)",
        (plan_id, json.dumps(spec), phase),
    )


def guard_json(url: str, *args: str) -> tuple[int, dict[str, Any], str]:
    result = run_ecm("guard", "check", *args, "--database-url", url, "--json")
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else {}), result.stderr


def test_reporters_register_types_and_ecm_guard_check_judges_them(
    initialized: Engine, db: psycopg.Connection[Any], database_url: str
) -> None:
    db.execute("CREATE TABLE items (id int PRIMARY KEY, qty int, note text)")
    insert_plan(db, "retype_items_qty", {"removes": {}, "adds": {}, "breaks": [RETYPE, NOT_NULL]})
    insert_plan(db, "rename_items_old", {"removes": {"public.items": ["old"]}, "adds": {}})  # before breaks
    v1 = items(Column("qty", Integer), Column("note", Text))
    v2 = items(Column("qty", BigInteger), Column("note", Text, nullable=False))
    with reporter(database_url, "2", v2) as new, reporter(database_url, "1", v1, uses={"items": ["extra"]}):
        row = db.execute("SELECT types FROM ecm.instances WHERE id = %s", (new.id,)).fetchone()
        assert row is not None and row[0] == {
            "public.items": {
                "id": {"type": "INTEGER", "nullable": False, "unique": []},
                "note": {"type": "TEXT", "nullable": False, "unique": []},
                "qty": {"type": "BIGINT", "nullable": True, "unique": []},
            }
        }
        assert new.column_types == row[0]
        code, doc, stderr = guard_json(database_url)
        assert code == 3, stderr
        by_plan = {p["plan_id"]: p for p in doc["plans"]}
        assert by_plan["rename_items_old"]["allowed"] is True and by_plan["rename_items_old"]["breaks"] == []
        plan = by_plan["retype_items_qty"]
        assert plan["breaks"] == [RETYPE, NOT_NULL] and plan["removes"] == {}
        assert plan["allowed"] is False and plan["cannot_tell"] is False
        assert [r.split("; last seen")[0] for r in plan["reasons"]] == [
            "1 instance of web 1 maps public.items.note as nullable; the contract makes it NOT NULL",
            "1 instance of web 1 maps public.items.qty as integer; the contract makes it bigint",
        ]
        (blocker,) = plan["blocking"]
        assert blocker["version"] == "1" and blocker["maps"] == []
        assert [(f["column"], f["verdict"]) for f in blocker["breaks"]] == [
            ("public.items.note", "nullable"),
            ("public.items.qty", "old-type"),
        ]
        assert "retype_items_qty: 1 instance of web 1 maps public.items.note as nullable" in stderr
        listed = json.loads(run_ecm("instances", "--database-url", database_url, "--json").stdout)
        types = {i["version"]: i["types"] for i in listed["instances"]}
        assert types["1"]["public.items"]["qty"] == {"type": "INTEGER", "nullable": True, "unique": []}
        assert "extra" not in types["1"]["public.items"]  # uses= carries no types
    code, doc, stderr = guard_json(database_url, "--allow-no-reporters")
    assert code == 0, stderr  # both deregistered: nothing maps the old shape any more


def test_a_registry_at_0002_upgrades_in_place(
    engine: Engine, db: psycopg.Connection[Any], database_url: str
) -> None:
    from alembic import command

    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE SCHEMA ecm")
        command.upgrade(control.alembic_config(conn, "ecm"), "0002")
        conn.commit()
    db.execute(
        "INSERT INTO ecm.instances (id, app, version, host, pid, interval_s, uses, role) VALUES "
        "(gen_random_uuid(), 'web', '0.9', 'h1', 77, 10, '{\"public.items\": [\"id\", \"qty\"]}', 'server')"
    )
    with reporter(database_url, "2", items(Column("qty", BigInteger))):
        assert db.execute("SELECT version_num FROM ecm.schema_version").fetchall() == [
            (control.head_revision(),)
        ]
        rows = db.execute("SELECT version, types IS NULL FROM ecm.instances ORDER BY version").fetchall()
        assert rows == [("0.9", True), ("2", False)]  # the old row kept, types unknown
        insert_plan(db, "retype_items_qty", {"removes": {}, "adds": {}, "breaks": [RETYPE]})
        code, doc, _ = guard_json(database_url)
        assert code == 3 and doc["plans"][0]["cannot_tell"] is True
        assert [r.split("; last seen")[0] for r in doc["plans"][0]["reasons"]] == [
            "1 instance of web 0.9 maps public.items.qty but its type is unknown (its reporter registers no "
            "column types): cannot tell whether it reads public.items.qty safely once the contract makes it "
            "bigint (from integer)"
        ]


# -- a contract revision whose plan breaks things: ecm upgrade, the revision, the script -----

PLAN = "rename_accounts_name_full_name"
ACCOUNT_BREAKS = [
    {
        "table": "public.accounts",
        "column": "qty",
        "kind": "retype",
        "old_type": "integer",
        "new_type": "bigint",
    },
    {"table": "public.accounts", "column": "note", "kind": "not-null"},
]


def accounts(qty: Any, note_nullable: bool) -> MetaData:
    md = MetaData()
    Table(
        "accounts",
        md,
        Column("id", Integer, primary_key=True),
        Column("full_name", Text),
        Column("qty", qty),
        Column("note", Text, nullable=note_nullable),
    )
    return md


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection[Any]) -> Project:
    """A rename plan whose frozen PLAN also declares breaks, as change-type and set-not-null plans do."""
    db.execute(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, qty int, note text);"
        "INSERT INTO accounts (name, qty, note) SELECT 'a' || g, g, 'n' FROM generate_series(1, 50) g"
    )
    p = make_project(tmp_path / "app", database_url)
    assert p.ecm("plan", "rename-column", "accounts", "name", "full_name").returncode == 0
    for path in [*p.versions(), *p.contracts()]:
        path.write_text(path.read_text() + f"\n\nPLAN = {{**PLAN, 'breaks': {ACCOUNT_BREAKS!r}}}\n")
    result = p.ecm("upgrade", "--phase", "backfill")
    assert result.returncode == 0, result.stderr
    return p


def held_reasons(result: Any) -> list[str]:
    doc = json.loads(result.stdout)
    return [r.split("; last seen")[0] for c in doc["contracts"]["held"] for r in c["reasons"]]


@pytest.mark.skipif(PSQL is None or not SQUAWK.exists(), reason="psql and squawk-cli are needed")
def test_contract_held_by_what_it_breaks_live_in_the_revision_and_offline(
    project: Project, db: psycopg.Connection[Any], tmp_path: Path, pg_server: Server
) -> None:
    assert (
        json.loads(db.execute("SELECT spec::text FROM ecm.plans").fetchone()[0])["breaks"] == ACCOUNT_BREAKS
    )  # type: ignore[index]
    old_type = accounts(Integer, note_nullable=False)
    with reporter(project.url, "2", old_type):
        held = project.ecm("upgrade", "--json")
        assert held.returncode == 3, held.stderr
        assert held_reasons(held) == [
            "1 instance of web 2 maps public.accounts.qty as integer; the contract makes it bigint"
        ]
        # The revision runs the same guard itself: alembic by hand is refused too.
        by_hand = project.alembic("-n", "ecm_contracts", "upgrade", "heads")
        assert by_hand.returncode != 0
        assert "maps public.accounts.qty as integer; the contract makes it bigint" in by_hand.stderr
        # And the script's DO block stops psql before any of the contract's DDL.
        script = tmp_path / "contract.sql"
        rendered = project.ecm("upgrade", "--sql", "--phase", "contract")
        assert rendered.returncode == 0, rendered.stderr
        script.write_text(rendered.stdout)
        assert "-- guard: retype public.accounts.qty" in rendered.stdout
        run = psql(project.url, script)
        assert run.returncode != 0
        assert f"ecm: contract of {PLAN} refused:" in run.stderr
        assert (
            "web 2 (host " in run.stderr
            and "maps public.accounts.qty as integer; the contract makes it bigint" in (run.stderr)
        )
        lint(script, pg_server.major)
    assert "name" in columns(db, "accounts")

    with reporter(project.url, "3", accounts(BigInteger, note_nullable=True)):
        held = project.ecm("upgrade", "--json")
        assert held.returncode == 3
        assert held_reasons(held) == [
            "1 instance of web 3 maps public.accounts.note as nullable; the contract makes it NOT NULL"
        ]
        run = psql(project.url, script)
        assert (
            run.returncode != 0
            and "maps public.accounts.note as nullable; the contract makes it NOT NULL" in (run.stderr)
        )

    # A third type: the guard cannot tell, holds, and --force-contract overrides it (recorded).
    with reporter(project.url, "4", accounts(Numeric(12, 2), note_nullable=False)):
        held = project.ecm("upgrade", "--json")
        assert held.returncode == 3
        assert held_reasons(held) == [
            "1 instance of web 4 maps public.accounts.qty as numeric: cannot tell whether it reads "
            "public.accounts.qty safely once the contract makes it bigint (from integer)"
        ]
        forced = project.ecm("upgrade", "--force-contract", PLAN, "--reason", "web 4 reads numbers", "--json")
        assert forced.returncode == 0, forced.stderr
    assert "name" not in columns(db, "accounts")
    ledger = db.execute(
        "SELECT outcome, detail->>'reason', detail->'blocking'->0->'breaks'->0->>'verdict' FROM ecm.ledger "
        "WHERE step = 'force-contract'"
    ).fetchall()
    assert ledger == [("forced", "web 4 reads numbers", "cannot-tell")]


def test_new_code_passes_a_contract_that_breaks_old_code(
    project: Project, db: psycopg.Connection[Any]
) -> None:
    with reporter(project.url, "5", accounts(BigInteger, note_nullable=False)):
        result = project.ecm("upgrade", "--json")
        assert result.returncode == 0, result.stderr
    assert "name" not in columns(db, "accounts")


# -- the offline DO block: the same verdicts, run by psql --------------------------------------


def psql(url: str, path: Path) -> subprocess.CompletedProcess[str]:
    assert PSQL is not None
    return subprocess.run(
        [PSQL, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-f", str(path), url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def lint(path: Path, major: int) -> None:
    proc = subprocess.run(
        [str(SQUAWK), "--pg-version", str(major), "--reporter", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    issues = json.loads(proc.stdout or "[]")
    assert not issues, issues
    assert proc.returncode == 0, proc.stdout + proc.stderr


NO_REPORTERS = "no evidence"
#: (rows as (types, uses, role, age), the clause each live/offline refusal must carry, or None: allowed).
SCENARIOS: list[tuple[str, list[tuple[Any, Any, str, float]], list[str] | None]] = [
    (
        "new code",
        [({"qty": t("BIGINT"), "note": t("TEXT", False), "code": t("NUMERIC")}, None, "server", 0)],
        None,
    ),
    ("new code, int8", [({"qty": t("int8"), "note": t("TEXT", False)}, None, "server", 0)], None),
    (
        "old type",
        [({"qty": t("int4"), "note": t("TEXT", False)}, None, "server", 0)],
        ["maps public.items.qty as integer; the contract makes it bigint"],
    ),
    (
        "nullable",
        [({"qty": t("BIGINT"), "note": t("TEXT", True)}, None, "server", 0)],
        ["maps public.items.note as nullable; the contract makes it NOT NULL"],
    ),
    (
        "third type",
        [({"qty": t("NUMERIC(10, 2)"), "note": t("TEXT", False)}, None, "server", 0)],
        [
            "maps public.items.qty as numeric: cannot tell whether it reads public.items.qty safely once the "
            "contract makes it bigint (from integer)"
        ],
    ),
    (
        "unparseable",
        [({"qty": t("foo("), "note": t("TEXT", False)}, None, "server", 0)],
        ["maps public.items.qty but its type is unknown ('foo(' is not a type this database knows)"],
    ),
    (
        "uncompilable",
        [({"qty": t(None), "note": t("TEXT", False)}, None, "server", 0)],
        [
            "maps public.items.qty but its type is unknown (SQLAlchemy could not compile its type for PostgreSQL)"
        ],
    ),
    (
        "old reporter",
        [(None, ["id", "qty", "note"], "server", 0)],
        [
            "maps public.items.note but its nullability is unknown (its reporter registers no nullability)",
            "maps public.items.qty but its type is unknown (its reporter registers no column types)",
        ],
    ),
    (
        "uses only",
        [({}, ["qty"], "server", 0)],
        ["maps public.items.qty but its type is unknown (listed in uses=, which carries no types)"],
    ),
    ("expired old code", [({"qty": t("INTEGER")}, None, "server", 100), ({}, ["other"], "server", 0)], None),
    ("no reporters", [], [NO_REPORTERS]),
    ("only a cli run", [({}, ["other"], "cli", 0)], [NO_REPORTERS]),
]


@pytest.mark.skipif(PSQL is None or not SQUAWK.exists(), reason="psql and squawk-cli are needed")
def test_the_offline_guard_block_gives_the_live_verdicts(
    initialized: Engine, db: psycopg.Connection[Any], database_url: str, tmp_path: Path, pg_server: Server
) -> None:
    plan = {"plan_id": "retype_items_qty", "removes": {}, "adds": {}, "breaks": BREAKS}
    script = tmp_path / "guard.sql"
    script.write_text(terminated(guard_sql(plan, contract=True)) + "\n")
    lint(script, pg_server.major)
    for name, rows, clauses in SCENARIOS:
        db.execute("DELETE FROM ecm.instances")
        for pid, (types, uses, role, age) in enumerate(rows, start=100):
            add_row(db, types=types, uses=uses, role=role, age=age, pid=pid)
        live = check(initialized)
        run = psql(database_url, script)
        assert live.allowed is (clauses is None), (name, live.reasons)
        assert (run.returncode == 0) is (clauses is None), (name, run.stderr)
        for clause in clauses or []:
            if clause == NO_REPORTERS:  # each side words it its own way
                assert live.no_reporters and "no application instance has reported recently" in run.stderr
                continue
            assert clause in run.stderr, (name, run.stderr)
            assert any(clause in reason for reason in live.reasons), (name, live.reasons)
    # An expand's rollback protects only what the expand added: the breaks are the contract's.
    rollback = tmp_path / "rollback.sql"
    rollback.write_text(terminated(guard_sql(plan, contract=False)) + "\n")
    assert "guard: retype" not in rollback.read_text()
    db.execute("DELETE FROM ecm.instances")
    add_row(db, types={"qty": t("INTEGER")})
    assert psql(database_url, rollback).returncode == 0
