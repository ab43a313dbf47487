"""The guard: pure decide() as tables, then check_contract() against a real server, failing closed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from expandcontract.db import control
from expandcontract.errors import BadInput
from expandcontract.guard import (
    WHOLE_TABLE,
    Break,
    Decision,
    GuardInput,
    Instance,
    MappedColumn,
    SqlType,
    decide,
    guard_input,
    parse_ttl,
    state,
    type_names,
)
from expandcontract.live.guard_check import check_contract, record_override
from expandcontract.urls import normalize

REMOVES = {"public.users": ["name"]}


def inst(
    app: str = "web",
    version: str = "1.4.2",
    *,
    host: str = "web-1",
    pid: int = 4242,
    age: float = 1.0,
    interval: float = 10.0,
    uses: dict[str, list[str]] | None = None,
    deregistered: float | None = None,
    role: str = "server",
    columns: dict[str, dict[str, MappedColumn]] | None = None,
) -> Instance:
    return Instance(
        id=str(uuid.uuid4()),
        app=app,
        version=version,
        host=host,
        pid=pid,
        seconds_since_heartbeat=age,
        interval_s=interval,
        uses={"public.users": ["id", "name"]} if uses is None else uses,
        seconds_since_deregistered=deregistered,
        role=role,
        columns=columns,
    )


NEW = {"public.users": ["full_name", "id"]}


# -- decide(): pure --------------------------------------------------------------------


def test_live_old_instance_refuses_and_names_it() -> None:
    d = decide(REMOVES, [inst(age=4.2)])
    assert not d.allowed
    assert d.reasons == [
        "1 instance of web 1.4.2 still maps public.users.name; last seen 4.2 s ago (host web-1 pid 4242)"
    ]
    assert [b.maps for b in d.blocking] == [("public.users.name",)]


def test_instances_of_one_version_are_grouped_into_one_reason() -> None:
    d = decide(
        REMOVES,
        [inst(host="web-2", pid=4343, age=7.0), inst(age=4.0), inst(version="2.0", uses=NEW, age=1.0)],
    )
    assert d.reasons == [
        "2 instances of web 1.4.2 still map public.users.name; last seen 4.0 s ago "
        "(host web-1 pid 4242 seen 4.0 s ago, host web-2 pid 4343 seen 7.0 s ago)"
    ]
    assert len(d.live) == 3 and len(d.blocking) == 2


def test_new_version_only_never_blocks() -> None:
    d = decide(REMOVES, [inst(version="2.0", uses=NEW)])
    assert d.allowed and d.reasons == [] and not d.no_reporters


@pytest.mark.parametrize(
    ("age", "interval", "ttl", "expected"),
    [
        (29.0, 10.0, None, "live"),  # within 3x its own interval
        (30.0, 10.0, None, "live"),  # the boundary still counts as live
        (30.5, 10.0, None, "expired"),
        (0.7, 0.2, None, "expired"),
        (0.7, 0.2, 5.0, "live"),  # ECM_LIVE_TTL overrides every instance's own TTL
        (6.0, 10.0, 5.0, "expired"),
    ],
)
def test_ttl_rule(age: float, interval: float, ttl: float | None, expected: str) -> None:
    i = inst(age=age, interval=interval)
    assert state(i, ttl) == expected
    d = decide(REMOVES, [i, inst("worker", "2.0", uses={}, age=0.1)], ttl=ttl)
    assert d.allowed is (expected == "expired")


def test_deregistered_instance_does_not_block_but_counts_as_evidence() -> None:
    gone = inst(age=0.5, deregistered=0.3)
    assert state(gone) == "deregistered"
    d = decide(REMOVES, [gone])
    assert d.allowed and not d.no_reporters
    # Long after its deregistration, it proves nothing any more.
    stale = decide(REMOVES, [inst(age=100, deregistered=99)])
    assert not stale.allowed and stale.no_reporters


def test_empty_registry_refuses_unless_allowed() -> None:
    d = decide(REMOVES, [])
    assert not d.allowed and d.no_reporters
    assert "no instance of any application reported within its TTL" in d.reasons[0]
    assert "--allow-no-reporters" in d.reasons[0]
    ok = decide(REMOVES, [], allow_no_reporters=True)
    assert ok.allowed and ok.no_reporters  # the caller records that in the ledger


def test_only_expired_instances_is_no_evidence() -> None:
    d = decide(REMOVES, [inst(age=100, interval=1)])
    assert not d.allowed and d.no_reporters and d.blocking == []


def test_allow_no_reporters_never_overrides_a_live_blocker() -> None:
    d = decide(REMOVES, [inst()], allow_no_reporters=True)
    assert not d.allowed and len(d.blocking) == 1


def test_backfill_problems_refuse_first() -> None:
    d = decide(REMOVES, [inst(version="2.0", uses=NEW)], backfill_problems=["12 rows out of step"])
    assert not d.allowed and d.reasons == ["12 rows out of step"]


def test_whole_table_removal_and_unqualified_names() -> None:
    mapping_only_id = inst(uses={"public.users": ["id"]})
    assert decide(REMOVES, [mapping_only_id]).allowed
    d = decide({"public.users": [WHOLE_TABLE]}, [mapping_only_id])
    assert not d.allowed and d.blocking[0].maps == ("public.users",)
    # An unqualified table in removes matches that table in any schema (the safe side).
    other_schema = inst(uses={"billing.users": ["name"]})
    assert not decide({"users": ["name"]}, [other_schema]).allowed
    assert decide({"public.users": ["name"]}, [other_schema, inst("x", "1", uses={})]).allowed


def test_several_columns_are_listed_together() -> None:
    d = decide({"public.users": ["name", "email"]}, [inst(uses={"public.users": ["email", "id", "name"]})])
    assert "still maps public.users.email, public.users.name;" in d.reasons[0]


def test_removing_nothing_needs_no_evidence() -> None:
    assert decide({}, []).allowed
    assert decide({"public.users": []}, []).allowed


def test_parse_ttl() -> None:
    assert parse_ttl("") is None and parse_ttl(None) is None
    assert parse_ttl("2.5") == 2.5
    for bad in ("abc", "0", "-1"):
        with pytest.raises(ValueError, match="ECM_LIVE_TTL"):
            parse_ttl(bad)


# -- processes that never served --------------------------------------------------------


def test_the_checking_process_never_holds_its_own_contract() -> None:
    """`ecm upgrade` loaded env.py, which started the application's reporter in ecm's own process."""
    itself = inst("microblog", "v1", host="deploy-1", pid=500, role="cli")
    server = inst("microblog", "v2", host="web-1", pid=42, uses=NEW)
    d = decide(REMOVES, [itself, server], current_process=("deploy-1", 500))
    assert d.allowed and d.reasons == [] and not d.no_reporters
    assert d.ignored == [itself] and d.live == [server]
    # The same pid on another host is another process, and holds the contract.
    elsewhere = inst("microblog", "v1", host="deploy-2", pid=500, role="cli")
    assert not decide(REMOVES, [elsewhere, server], current_process=("deploy-1", 500)).allowed
    # Without it (the pure function called by hand) nothing is left out.
    assert not decide(REMOVES, [itself, server]).allowed


def test_its_own_process_is_no_evidence_either() -> None:
    itself = inst("microblog", "v2", host="deploy-1", pid=500, uses=NEW)  # even as a server
    d = decide(REMOVES, [itself], current_process=("deploy-1", 500))
    assert not d.allowed and d.no_reporters
    assert d.reasons[0].startswith(
        "no instance of any application reported within its TTL (3x its interval):"
    )


@pytest.mark.parametrize(
    ("age", "deregistered"),
    [(0.1, None), (0.5, 0.2), (100.0, None)],
    ids=["live", "deregistered", "expired"],
)
def test_a_cli_run_is_no_evidence_that_the_fleet_reports(age: float, deregistered: float | None) -> None:
    cli = inst("microblog", "v2", uses=NEW, role="cli", age=age, deregistered=deregistered)
    d = decide(REMOVES, [cli])
    assert not d.allowed and d.no_reporters and d.blocking == []
    if deregistered is not None or age < 1:  # it reported recently, only it proves nothing
        assert d.reasons == [
            "no instance of any application reported within its TTL (3x its interval) other than "
            "command-line runs (1 of microblog v2), which prove nothing about the serving fleet: start "
            "LiveReporter in the serving processes, or pass --allow-no-reporters to accept that "
            "knowingly (recorded in the ledger)"
        ]
    assert decide(REMOVES, [cli], allow_no_reporters=True).allowed
    # A worker serves (a queue): its reports are evidence like a server's.
    assert decide(REMOVES, [cli, inst("jobs", "7", uses={}, role="worker")]).allowed


def test_a_live_cli_run_mapping_the_old_column_still_holds_the_contract() -> None:
    cli = inst("microblog", "v1", role="cli", age=0.4, host="ops-1", pid=9)
    server = inst("microblog", "v2", uses=NEW)
    d = decide(REMOVES, [cli, server])
    assert not d.allowed and not d.no_reporters
    assert d.reasons == [
        "1 cli instance of microblog v1 still maps public.users.name; last seen 0.4 s ago (host ops-1 pid 9)"
    ]
    # Grouped apart from servers of the same version.
    both = decide(REMOVES, [cli, inst("microblog", "v1", age=1.0), server])
    assert [r.split(" still")[0] for r in both.reasons] == [
        "1 cli instance of microblog v1",
        "1 instance of microblog v1",
    ]
    assert both.to_json()["blocking"][0]["role"] in ("cli", "server")


def test_decision_json_round_trips_through_json() -> None:
    d = decide(REMOVES, [inst()])
    doc = json.loads(json.dumps(d.to_json()))
    assert doc["allowed"] is False and doc["blocking"][0]["maps"] == ["public.users.name"]
    assert doc["blocking"][0]["pid"] == 4242 and doc["blocking"][0]["role"] == "server"
    assert doc["ignored"] == []


def test_guard_module_is_pure() -> None:
    import subprocess
    import sys

    code = (
        "import sys, expandcontract.guard; print([m for m in ('sqlalchemy', 'psycopg') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- what a contract breaks beyond removals: retyped columns, columns made NOT NULL ----------

RETYPE = Break("public.items", "qty", "retype", old_type="integer", new_type="bigint")
NOT_NULL = Break("public.items", "note", "not-null")
INT_LIKE = frozenset({"oid", "regclass"})  # what the server says integer converts to for free
#: What the server resolves names to (tests/test_guard_breaks.py checks these against a real one).
TYPES: dict[str, SqlType | None] = {
    "integer": SqlType("integer", INT_LIKE),
    "INTEGER": SqlType("integer", INT_LIKE),
    "int4": SqlType("integer", INT_LIKE),
    "bigint": SqlType("bigint"),
    "BIGINT": SqlType("bigint"),
    "int8": SqlType("bigint"),
    "text": SqlType("text", frozenset({"character varying"})),
    "TEXT": SqlType("text", frozenset({"character varying"})),
    "VARCHAR": SqlType("character varying", frozenset({"text"})),
    "VARCHAR(200)": SqlType("character varying", frozenset({"text"})),
    "character varying(100)": SqlType("character varying", frozenset({"text"})),
    "character varying(200)": SqlType("character varying", frozenset({"text"})),
    "NUMERIC(10, 2)": SqlType("numeric"),
    "MOOD": None,  # not a type this database knows
}


def typed(
    version: str,
    columns: dict[str, MappedColumn] | None,
    *,
    uses: list[str] | None = None,
    host: str = "web-1",
    pid: int = 4242,
    age: float = 1.0,
) -> Instance:
    """An instance of web mapping public.items (``columns``, or ``uses``) with those types."""
    mapped = ["id", *(columns or {})] if uses is None else uses
    return inst(
        "web",
        version,
        host=host,
        pid=pid,
        age=age,
        uses={"public.items": sorted(mapped)},
        columns=None if columns is None else {"public.items": columns},
    )


def col(type_: str | None, nullable: bool | None = True) -> MappedColumn:
    return MappedColumn(type_, nullable)


def test_a_live_instance_mapping_the_old_type_holds_a_retype() -> None:
    old = typed("1.0", {"qty": col("INTEGER", False)}, age=4.2)
    d = decide({}, [old], breaks=[RETYPE], types=TYPES)
    assert not d.allowed and not d.unknown and not d.cannot_tell
    assert d.reasons == [
        "1 instance of web 1.0 maps public.items.qty as integer; the contract makes it bigint; "
        "last seen 4.2 s ago (host web-1 pid 4242)"
    ]
    (blocker,) = d.blocking
    assert blocker.maps == () and [f.verdict for f in blocker.breaks] == ["old-type"]


def test_the_new_type_passes() -> None:
    new = typed("2.0", {"qty": col("BIGINT", False)})
    d = decide({}, [new], breaks=[RETYPE], types=TYPES)
    assert d.allowed and d.reasons == [] and d.blocking == [] and not d.no_reporters


@pytest.mark.parametrize(
    ("mapped", "old_type", "new_type", "verdict"),
    [
        ("int4", "integer", "bigint", "old"),  # Integer <-> int4: one type to the server
        ("INTEGER", "int4", "int8", "old"),
        ("BIGINT", "int4", "int8", "pass"),
        ("VARCHAR", "text", "bigint", "old"),  # String() <-> text: converted both ways for free
        ("TEXT", "character varying(100)", "bigint", "old"),
        ("VARCHAR", "bigint", "text", "pass"),  # new code mapping String() on the new text column
        ("VARCHAR(200)", "text", "character varying(100)", "pass"),  # exact new wins over "like old"
        ("TEXT", "text", "character varying(100)", "old"),
        ("NUMERIC(10, 2)", "integer", "bigint", "cannot tell"),  # a third type
        ("MOOD", "integer", "bigint", "cannot tell"),  # not a type the database knows
    ],
)
def test_types_compare_as_the_server_resolves_them(
    mapped: str, old_type: str, new_type: str, verdict: str
) -> None:
    brk = Break("public.items", "qty", "retype", old_type=old_type, new_type=new_type)
    d = decide({}, [typed("1.0", {"qty": col(mapped)})], breaks=[brk], types=TYPES)
    assert d.allowed is (verdict == "pass"), d.reasons
    if verdict == "old":
        shown = TYPES[mapped].name  # type: ignore[union-attr]
        assert f"maps public.items.qty as {shown}; the contract makes it " in d.reasons[0]
        assert not d.cannot_tell
    if verdict == "cannot tell":
        assert (
            ": cannot tell whether it reads public.items.qty safely once the contract makes it "
            in (d.reasons[0])
        )
        assert d.cannot_tell and not d.unknown  # an instance's mapping, not the registry, is unknown


@pytest.mark.parametrize(
    ("instance", "why"),
    [
        (typed("0.9", None, uses=["id", "qty"]), "its reporter registers no column types"),
        (typed("1.0", {}, uses=["id", "qty"]), "listed in uses=, which carries no types"),
        (typed("1.0", {"qty": col(None)}), "SQLAlchemy could not compile its type for PostgreSQL"),
        (typed("1.0", {"qty": col("MOOD")}), "'MOOD' is not a type this database knows"),
    ],
    ids=["old reporter", "uses only", "uncompilable", "unknown to the server"],
)
def test_an_unknown_type_cannot_tell_and_holds(instance: Instance, why: str) -> None:
    d = decide({}, [instance], breaks=[RETYPE], types=TYPES, allow_no_reporters=True)
    assert not d.allowed and d.cannot_tell
    assert d.reasons == [
        f"1 instance of web {instance.version} maps public.items.qty but its type is unknown ({why}): "
        "cannot tell whether it reads public.items.qty safely once the contract makes it bigint "
        "(from integer); last seen 1.0 s ago (host web-1 pid 4242)"
    ]
    assert d.to_json()["blocking"][0]["breaks"][0]["verdict"] == "cannot-tell"


def test_a_third_type_says_what_it_maps() -> None:
    d = decide({}, [typed("1.5", {"qty": col("NUMERIC(10, 2)")})], breaks=[RETYPE], types=TYPES)
    assert d.reasons == [
        "1 instance of web 1.5 maps public.items.qty as numeric: cannot tell whether it reads "
        "public.items.qty safely once the contract makes it bigint (from integer); last seen 1.0 s ago "
        "(host web-1 pid 4242)"
    ]


def test_a_column_made_not_null_holds_while_mapped_as_nullable() -> None:
    old = typed("1.0", {"note": col("TEXT", True)})
    new = typed("2.0", {"note": col("TEXT", False)}, host="web-2", pid=7)
    d = decide({}, [old, new], breaks=[NOT_NULL], types=TYPES)
    assert not d.allowed and not d.cannot_tell
    assert d.reasons == [
        "1 instance of web 1.0 maps public.items.note as nullable; the contract makes it NOT NULL; "
        "last seen 1.0 s ago (host web-1 pid 4242)"
    ]
    assert decide({}, [new], breaks=[NOT_NULL], types=TYPES).allowed
    # Nullability needs no server: it is the same without types.
    assert not decide({}, [old], breaks=[NOT_NULL]).allowed


def test_unknown_nullability_cannot_tell() -> None:
    d = decide({}, [typed("0.9", None, uses=["id", "note"])], breaks=[NOT_NULL], types=TYPES)
    assert not d.allowed and d.cannot_tell
    assert d.reasons[0].startswith(
        "1 instance of web 0.9 maps public.items.note but its nullability is unknown (its reporter "
        "registers no nullability): cannot tell whether it writes NULL, which fails once the contract "
        "makes it NOT NULL; last seen"
    )


def test_instances_that_do_not_map_the_column_are_not_hurt() -> None:
    elsewhere = typed("1.0", {"id": col("INTEGER", False)})  # maps public.items, not qty or note
    d = decide({}, [elsewhere], breaks=[RETYPE, NOT_NULL], types=TYPES)
    assert d.allowed and d.blocking == []
    old_reporter = typed("0.9", None, uses=["id"])
    assert decide({}, [old_reporter], breaks=[RETYPE, NOT_NULL], types=TYPES).allowed


def test_a_typmod_change_is_no_retype_for_the_guard() -> None:
    """regtype has no typmods: varchar(100) -> varchar(200) reads the same to every mapping."""
    widen = Break("public.items", "code", "retype", "character varying(100)", "character varying(200)")
    anything = typed("1.0", {"code": col("NUMERIC(10, 2)")})
    d = decide({}, [anything], breaks=[widen], types=TYPES)
    assert d.allowed and not d.no_reporters  # it breaks nothing, so it needs no evidence either


def test_breaks_need_evidence_like_removals() -> None:
    d = decide({}, [], breaks=[NOT_NULL], types=TYPES)
    assert not d.allowed and d.no_reporters
    assert decide({}, [], breaks=[NOT_NULL], types=TYPES, allow_no_reporters=True).allowed


def test_one_reason_per_thing_grouped_per_version() -> None:
    both = {"name": col("TEXT"), "qty": col("INTEGER"), "note": col("TEXT", True)}
    a = typed("1.0", both, age=2.0)
    b = typed("1.0", both, host="web-2", pid=4343, age=5.0)
    d = decide({"public.items": ["name"]}, [a, b], breaks=[RETYPE, NOT_NULL], types=TYPES)
    who = "last seen 2.0 s ago (host web-1 pid 4242 seen 2.0 s ago, host web-2 pid 4343 seen 5.0 s ago)"
    assert d.reasons == [
        f"2 instances of web 1.0 still map public.items.name; {who}",
        f"2 instances of web 1.0 map public.items.note as nullable; the contract makes it NOT NULL; {who}",
        f"2 instances of web 1.0 map public.items.qty as integer; the contract makes it bigint; {who}",
    ]


def test_without_resolved_types_names_compare_as_written() -> None:
    assert not decide({}, [typed("1.0", {"qty": col("INTEGER")})], breaks=[RETYPE]).allowed
    assert decide({}, [typed("2.0", {"qty": col("BigInt")})], breaks=[RETYPE]).allowed
    # Aliases need the server: without it, int8 is merely a third name.
    assert decide({}, [typed("2.0", {"qty": col("int8")})], breaks=[RETYPE]).cannot_tell


def test_an_unknown_kind_of_break_cannot_tell() -> None:
    odd = Break("public.items", "qty", "re-encode")
    d = decide({}, [typed("1.0", {"qty": col("INTEGER")})], breaks=[odd], types=TYPES)
    assert not d.allowed and d.cannot_tell
    assert (
        "maps public.items.qty: cannot tell whether it is safe once the contract changes it " in d.reasons[0]
    )


def test_breaks_in_json() -> None:
    d = decide({}, [typed("1.0", {"qty": col("INTEGER", False)})], breaks=[RETYPE], types=TYPES)
    doc = json.loads(json.dumps(d.to_json()))
    assert doc["cannot_tell"] is False
    (finding,) = doc["blocking"][0]["breaks"]
    assert finding == {
        "table": "public.items",
        "column": "public.items.qty",
        "kind": "retype",
        "old_type": "integer",
        "new_type": "bigint",
        "maps": "integer",
        "verdict": "old-type",
        "cannot_tell": False,
        "reason": "maps public.items.qty as integer; the contract makes it bigint",
    }
    assert doc["blocking"][0]["types"] == {"public.items": {"qty": {"type": "INTEGER", "nullable": False}}}


def test_guard_input_is_built_from_a_frozen_plan() -> None:
    plan = {
        "plan_id": "p",
        "removes": {"public.items": ["qty_old"]},
        "adds": {"public.items": ["qty_new"]},
        "breaks": [RETYPE.to_json(), NOT_NULL.to_json()],
    }
    assert guard_input(plan, contract=True) == GuardInput({"public.items": ["qty_old"]}, (RETYPE, NOT_NULL))
    # An expand's rollback drops what it added, and breaks nothing else.
    assert guard_input(plan, contract=False) == GuardInput({"public.items": ["qty_new"]}, ())
    # Plans frozen before breaks existed.
    old = {"plan_id": "p", "removes": {"public.users": ["name"]}, "adds": {}}
    assert guard_input(old, contract=True) == GuardInput({"public.users": ["name"]}, ())
    assert guard_input(plan, contract=True).to_json()["breaks"][0] == {
        "table": "public.items",
        "column": "qty",
        "kind": "retype",
        "old_type": "integer",
        "new_type": "bigint",
    }
    for bad in ([{"table": "public.items"}], [{"table": "t", "column": "c", "kind": "retype"}], "x"):
        with pytest.raises(BadInput, match="malformed"):
            guard_input({**plan, "breaks": bad}, contract=True)


def test_type_names_lists_what_the_server_must_resolve() -> None:
    instances = [
        typed("1.0", {"qty": col("INTEGER"), "note": col("TEXT")}),
        typed("0.9", None, uses=["qty"]),
    ]
    assert type_names(GuardInput({}, (RETYPE, NOT_NULL)), instances) == {"integer", "bigint", "INTEGER"}


# -- check_contract(): real server --------------------------------------------------------


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


def add_instance(
    db: psycopg.Connection,
    *,
    uses: object,
    age: float = 0.0,
    interval: float = 10.0,
    app: str = "web",
    version: str = "1.0",
    deregistered_ago: float | None = None,
    host: str = "h1",
    pid: int = 77,
    role: str = "server",
) -> str:
    instance_id = str(uuid.uuid4())
    db.execute(
        "INSERT INTO ecm.instances "
        "(id, app, version, host, pid, last_heartbeat, interval_s, uses, deregistered_at, role) "
        "VALUES (%s, %s, %s, %s, %s, now() - make_interval(secs => %s), %s, %s::jsonb, "
        "CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => %s::float8) END, %s)",
        (
            instance_id,
            app,
            version,
            host,
            pid,
            age,
            interval,
            json.dumps(uses),
            deregistered_ago,
            deregistered_ago,
            role,
        ),
    )
    return instance_id


def check(engine: Engine, **kwargs: object) -> Decision:
    with engine.connect() as conn:
        return check_contract(conn, removes=kwargs.pop("removes", REMOVES), **kwargs)  # type: ignore[arg-type]


def test_check_contract_reads_the_registry_with_the_db_clock(
    initialized: Engine, db: psycopg.Connection
) -> None:
    add_instance(db, uses={"public.users": ["id", "name"]}, age=5)
    add_instance(db, uses={"public.users": ["id", "full_name"]}, version="2.0")
    d = check(initialized)
    assert not d.allowed
    assert d.reasons[0].startswith("1 instance of web 1.0 still maps public.users.name; last seen 5.")
    assert "(host h1 pid 77)" in d.reasons[0]
    # Beyond 3x its interval by the database clock, it is gone.
    db.execute(
        "UPDATE ecm.instances SET last_heartbeat = now() - interval '31 seconds' WHERE version = '1.0'"
    )
    assert check(initialized).allowed


def test_ecm_live_ttl_overrides(
    initialized: Engine, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_instance(db, uses={"public.users": ["name"]}, age=40, interval=10)
    add_instance(db, uses={}, app="worker")
    assert check(initialized).allowed
    monkeypatch.setenv("ECM_LIVE_TTL", "60")
    assert not check(initialized).allowed
    monkeypatch.setenv("ECM_LIVE_TTL", "soon")
    d = check(initialized)
    assert not d.allowed and d.unknown and "ECM_LIVE_TTL" in d.reasons[0]


def test_empty_registry_refuses_unless_allowed_on_db(initialized: Engine) -> None:
    d = check(initialized)
    assert not d.allowed and d.no_reporters
    assert check(initialized, allow_no_reporters=True).allowed


def test_expand_downgrade_refused_while_new_code_is_live(initialized: Engine, db: psycopg.Connection) -> None:
    add_instance(db, uses={"public.users": ["full_name", "id"]}, version="2.0")
    d = check(initialized, removes={"public.users": ["full_name"]})
    assert not d.allowed and "web 2.0 still maps public.users.full_name" in d.reasons[0]


def test_check_contract_leaves_its_own_process_out(initialized: Engine, db: psycopg.Connection) -> None:
    import os
    import socket

    mine = add_instance(db, uses={"public.users": ["id", "name"]}, host=socket.gethostname(), pid=os.getpid())
    d = check(initialized)
    assert d.blocking == [] and [i.id for i in d.ignored] == [mine]
    assert not d.allowed and d.no_reporters  # and it is no evidence either
    # A live CLI run elsewhere holds it, and says so.
    add_instance(db, uses={"public.users": ["id", "name"]}, role="cli", app="microblog", version="v1")
    d = check(initialized, allow_no_reporters=True)
    assert not d.allowed
    assert d.reasons[0].startswith("1 cli instance of microblog v1 still maps public.users.name; ")
    assert d.to_json()["blocking"][0]["role"] == "cli"


def test_a_registry_from_before_roles_is_read_as_servers(initialized: Engine, db: psycopg.Connection) -> None:
    """An older control schema (no role column) is still read, not refused as unreadable."""
    db.execute("ALTER TABLE ecm.instances DROP COLUMN role")
    add_instance_sql = (
        "INSERT INTO ecm.instances (id, app, version, host, pid, interval_s, uses) "
        "VALUES (gen_random_uuid(), 'web', '1.0', 'h1', 77, 10, '{\"public.users\": [\"name\"]}')"
    )
    db.execute(add_instance_sql)
    d = check(initialized)
    assert not d.allowed and not d.unknown
    assert d.reasons[0].startswith("1 instance of web 1.0 still maps public.users.name")
    assert d.blocking[0].instance.role == "server"


def test_fail_closed_without_control_schema(engine: Engine) -> None:
    d = check(engine)
    assert not d.allowed and d.unknown
    assert "control schema ecm is missing" in d.reasons[0]
    # Even the no-reporters flag does not turn "cannot tell" into "allowed".
    assert not check(engine, allow_no_reporters=True).allowed


def test_fail_closed_registry_table_dropped(initialized: Engine, db: psycopg.Connection) -> None:
    db.execute("DROP TABLE ecm.instances")
    d = check(initialized, allow_no_reporters=True)
    assert not d.allowed and "registry ecm.instances is missing" in d.reasons[0]


def test_fail_closed_registry_table_renamed(initialized: Engine, db: psycopg.Connection) -> None:
    db.execute("ALTER TABLE ecm.instances RENAME TO instances_old")
    assert "is missing" in check(initialized, allow_no_reporters=True).reasons[0]


def test_fail_closed_registry_unreadable(initialized: Engine, db: psycopg.Connection) -> None:
    db.execute("ALTER TABLE ecm.instances RENAME COLUMN last_heartbeat TO beat")
    d = check(initialized, allow_no_reporters=True)
    assert not d.allowed and d.unknown
    assert d.reasons[0].startswith("cannot read the live-instance registry ecm.instances:")
    assert "last_heartbeat" in d.reasons[0]


def test_fail_closed_on_malformed_usage(initialized: Engine, db: psycopg.Connection) -> None:
    add_instance(db, uses=["public.users"])
    d = check(initialized, allow_no_reporters=True)
    assert not d.allowed and "uses is not a JSON object" in d.reasons[0]


def test_fail_closed_permission_denied(
    initialized: Engine, db: psycopg.Connection, database_url: str
) -> None:
    role = f"ecm_nobody_{uuid.uuid4().hex[:8]}"
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        url = make_url(normalize(database_url)).set(username=role, password=None)
        eng = create_engine(url)
        try:
            d = check(eng, allow_no_reporters=True)
        finally:
            eng.dispose()
        assert not d.allowed and "permission denied" in d.reasons[0]
    finally:
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')


def test_fail_closed_when_the_clock_query_fails(initialized: Engine) -> None:
    with initialized.connect() as conn:
        conn.begin()
        with pytest.raises(Exception, match="division by zero"):
            conn.execute(text("SELECT 1/0"))
        d = check_contract(conn, removes=REMOVES, allow_no_reporters=True)
        conn.rollback()
    assert not d.allowed and d.unknown
    assert d.reasons[0].startswith("cannot read")


def test_a_failed_read_leaves_the_callers_transaction_usable(
    initialized: Engine, db: psycopg.Connection
) -> None:
    db.execute("ALTER TABLE ecm.instances RENAME COLUMN uses TO used")
    with initialized.connect() as conn, conn.begin():
        conn.execute(text("CREATE TABLE t_in_tx (id int)"))
        assert not check_contract(conn, removes=REMOVES).allowed
        assert conn.in_transaction()
        conn.execute(text("INSERT INTO t_in_tx VALUES (1)"))
    assert db.execute("SELECT count(*) FROM t_in_tx").fetchone() == (1,)


def test_outside_a_transaction_it_leaves_none_open(initialized: Engine) -> None:
    with initialized.connect() as conn:
        check_contract(conn, removes=REMOVES)
        assert not conn.in_transaction()


def test_record_override_writes_the_ledger_in_the_callers_transaction(
    initialized: Engine, db: psycopg.Connection
) -> None:
    add_instance(db, uses={"public.users": ["name"]})
    decision = check(initialized)
    assert not decision.allowed
    with initialized.connect() as conn:
        record_override(
            conn, plan_id="p1", kind="force-contract", reason="old pods are drained", decision=decision
        )
        conn.rollback()  # it commits nothing itself
    assert db.execute("SELECT count(*) FROM ecm.ledger").fetchone() == (0,)
    with initialized.connect() as conn, conn.begin():
        record_override(
            conn, plan_id="p1", kind="force-contract", reason="old pods are drained", decision=decision
        )
        record_override(conn, plan_id="p2", kind="allow-no-reporters", reason=None, decision=decision)
    rows = db.execute(
        "SELECT plan_id, phase, step, outcome, actor, detail, finished_at IS NOT NULL FROM ecm.ledger ORDER BY id"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("p1", "contract", "force-contract", "forced"),
        ("p2", "contract", "allow-no-reporters", "allowed-no-reporters"),
    ]
    actor, detail = rows[0][4], rows[0][5]
    assert actor.startswith("postgres (") and "@" in actor
    assert detail["reason"] == "old pods are drained"
    assert detail["refused_reasons"] == decision.reasons
    assert detail["blocking"][0]["pid"] == 77
    assert rows[0][6] is True


def test_force_without_reason_is_bad_input(initialized: Engine) -> None:
    with initialized.connect() as conn, pytest.raises(BadInput, match="--reason"):
        record_override(conn, plan_id="p", kind="force-contract", reason="  ", decision=decide({}, []))


def test_fail_closed_when_the_connection_dies(initialized: Engine, db: psycopg.Connection) -> None:
    with initialized.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        conn.commit()
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        d = check_contract(conn, removes=REMOVES, allow_no_reporters=True)
    assert not d.allowed and d.unknown
    assert d.reasons[0].startswith("cannot read the database clock:"), d.reasons


def test_works_on_an_autocommit_connection_like_alembics_autocommit_block(
    initialized: Engine, db: psycopg.Connection
) -> None:
    add_instance(db, uses={"public.users": ["name"]})
    with initialized.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SELECT 1"))  # SQLAlchemy autobegins; the database is in autocommit
        assert conn.in_transaction()
        d = check_contract(conn, removes=REMOVES)
        assert not d.allowed and not d.unknown, d.reasons
        assert conn.in_transaction()  # the caller's (SQLAlchemy-level) transaction is untouched
        db.execute("ALTER TABLE ecm.instances RENAME COLUMN uses TO used")
        d = check_contract(conn, removes=REMOVES)
        assert d.unknown and "cannot read the live-instance registry" in d.reasons[0]
        assert conn.execute(text("SELECT 1")).scalar() == 1
