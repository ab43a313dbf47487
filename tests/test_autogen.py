"""expandcontract.autogen: what autogenerate may not propose while a plan is in flight.

Pure tests on in-memory schema objects, then Alembic's own comparison (compare_metadata)
against a real database holding a rename in flight, before and after its contract.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    func,
    pool,
    text,
)
from sqlalchemy.engine import Connection

from expandcontract import autogen
from expandcontract.autogen import InFlight, ManagedPlan, combine, created_names, in_flight
from expandcontract.db import control, ledger

PLAN = {
    "plan_id": "rename_accounts_name_full_name",
    "removes": {"public.accounts": ["name"]},
    "adds": {"public.accounts": ["full_name"]},
}
NAMES = {"accounts_full_name_key", "orders_account_full_name_fkey", "ecm_rename_accounts_name_full_name_nn"}


def flight(*plans: dict[str, Any], names: set[str] = NAMES) -> InFlight:
    return InFlight(
        tuple(
            ManagedPlan.from_plan(p, phase="backfilled", default_schema="public", names=names) for p in plans
        ),
        default_schema="public",
        control_schema="ecm",
    )


def tables(schema: str | None = None) -> tuple[Table, Table]:
    md = MetaData(schema=schema)
    accounts = Table(
        "accounts",
        md,
        Column("id", BigInteger, primary_key=True),
        Column("name", String(200)),
        Column("full_name", String(200)),
        Column("email", String(200)),
    )
    orders = Table(
        "orders",
        md,
        Column("id", BigInteger, primary_key=True),
        Column("account_name", String(200)),
        Column("note", String(200)),
    )
    return accounts, orders


def kept(state: InFlight, obj: Any, name: str | None, type_: str, reflected: bool = True) -> bool:
    return state.include_object(obj, name, type_, reflected, None)


# -- pure ------------------------------------------------------------------------------------


def test_the_plans_columns_are_hidden_in_every_direction() -> None:
    state = flight(PLAN)
    accounts, _ = tables()
    for column in ("name", "full_name"):
        col = accounts.c[column]
        assert not kept(state, col, column, "column", reflected=True)  # would be dropped
        assert not kept(state, col, column, "column", reflected=False)  # would be added
        assert not state.include_object(col, column, "column", False, col)  # would be altered
    assert kept(state, accounts.c.email, "email", "column")
    assert kept(state, accounts, "accounts", "table")
    # Another table's column of the same name is not the plan's.
    other = Table("people", MetaData(), Column("name", String))
    assert kept(state, other.c.name, "name", "column")


def test_indexes_and_constraints_on_the_plans_columns_are_hidden() -> None:
    state = flight(PLAN, names=set())  # by the columns they cover alone, without the names
    accounts, _ = tables()
    assert not kept(state, Index("accounts_full_name_key", accounts.c.full_name, unique=True), "x", "index")
    assert not kept(state, Index("accounts_name_email", accounts.c.email, accounts.c.name), "x", "index")
    assert not kept(state, Index("accounts_lower_name", func.lower(accounts.c.name)), "x", "index")
    # Reflection gives expressions and partial predicates back as SQL text.
    assert not kept(state, Index("by_text", text("lower((full_name)::text)"), _table=accounts), "x", "index")
    partial = Index("partial", accounts.c.email, postgresql_where=text("(name)::text <> 'anon'::text"))
    assert not kept(state, partial, "partial", "index")
    assert kept(state, Index("accounts_email", accounts.c.email), "accounts_email", "index")
    assert kept(state, Index("by_surname", text("lower(surname)"), _table=accounts), "by_surname", "index")

    unique = UniqueConstraint(accounts.c.full_name, name="accounts_full_name_key")
    assert not kept(state, unique, "accounts_full_name_key", "unique_constraint")
    assert not kept(state, UniqueConstraint(accounts.c.full_name), None, "unique_constraint", reflected=False)
    assert kept(state, UniqueConstraint(accounts.c.email, name="uq_email"), "uq_email", "unique_constraint")

    check = CheckConstraint("char_length(full_name) > 0", name="len")
    accounts.append_constraint(check)
    assert not kept(state, check, "len", "check_constraint")


def test_foreign_keys_on_other_tables_that_reference_the_plans_columns_are_hidden() -> None:
    state = flight(PLAN, names=set())
    _, orders = tables()
    to_new = ForeignKeyConstraint(
        ["account_name"], ["accounts.full_name"], name="orders_account_full_name_fkey"
    )
    orders.append_constraint(to_new)
    to_old = ForeignKeyConstraint(["account_name"], ["accounts.name"])
    orders.append_constraint(to_old)
    to_id = ForeignKeyConstraint(["note"], ["accounts.id"], name="orders_note_fkey")
    orders.append_constraint(to_id)
    assert not kept(state, to_new, "orders_account_full_name_fkey", "foreign_key_constraint")
    assert not kept(state, to_old, None, "foreign_key_constraint", reflected=False)
    assert kept(state, to_id, "orders_note_fkey", "foreign_key_constraint")
    # Schema-qualified: the reference to public.accounts matches the plan's "public.accounts".
    _, orders_s = tables(schema="public")
    fk = ForeignKeyConstraint(["account_name"], ["public.accounts.name"])
    orders_s.append_constraint(fk)
    assert not kept(state, fk, None, "foreign_key_constraint")


def test_objects_the_plan_created_are_hidden_by_name() -> None:
    state = flight(PLAN)
    _, orders = tables()
    # A partial index whose predicate the filter could not attribute to a column: its name is enough.
    ix = Index("accounts_email_partial_idx_full_name", orders.c.note)
    assert kept(state, ix, ix.name, "index")
    state = flight(PLAN, names={"accounts_email_partial_idx_full_name"})
    assert not kept(state, ix, ix.name, "index")
    # Alembic plugins that compare triggers or functions pass their name the same way.
    state = flight(PLAN, names={"ecm_rename_accounts_name_full_name_sync"})
    assert state.manages(object(), "ecm_rename_accounts_name_full_name_sync", "trigger")
    assert state.manages(object(), "public.ecm_rename_accounts_name_full_name_sync()", "function")
    assert not state.manages(object(), "public.audit_sync()", "function")


def test_whole_tables_and_the_control_schema() -> None:
    state = flight({"plan_id": "drop_legacy", "removes": {"public.legacy": ["*"]}, "adds": {}})
    legacy = Table("legacy", MetaData(), Column("id", BigInteger))
    assert not kept(state, legacy, "legacy", "table")
    assert not kept(state, legacy.c.id, "id", "column")
    plans = Table("plans", MetaData(), Column("plan_id", String), schema="ecm")
    assert not kept(InFlight(), plans, "plans", "table")  # include_schemas=True would propose dropping it


def test_nothing_in_flight_hides_nothing() -> None:
    state = InFlight()
    accounts, _ = tables()
    assert kept(state, accounts.c.name, "name", "column")
    assert kept(
        state, Index("accounts_full_name_key", accounts.c.full_name), "accounts_full_name_key", "index"
    )


def test_created_names_from_frozen_step_sql() -> None:
    sql = [
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS accounts_full_name_key ON public.accounts USING btree (full_name)",
        'ALTER TABLE public.orders ADD CONSTRAINT "Orders ""fk""" FOREIGN KEY (a) REFERENCES public.accounts (full_name) NOT VALID',
        "CREATE OR REPLACE TRIGGER ecm_x_sync BEFORE INSERT OR UPDATE ON public.accounts",
        'CREATE OR REPLACE FUNCTION "My Schema".ecm_x_sync() RETURNS trigger',
        "ALTER TABLE public.accounts ADD COLUMN IF NOT EXISTS full_name text",
    ]
    assert set().union(*(created_names(s) for s in sql)) == {
        "accounts_full_name_key",
        'Orders "fk"',
        "ecm_x_sync",
    }


def test_include_object_outside_alembic_keeps_everything() -> None:
    accounts, _ = tables()
    assert autogen.include_object(accounts.c.name, "name", "column", True, None) is True


def test_combine_keeps_an_object_only_when_every_filter_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autogen, "_current", lambda: flight(PLAN))
    accounts, _ = tables()
    seen: list[str | None] = []

    def mine(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        seen.append(name)
        return name != "email"

    both = combine(mine)
    assert both(accounts.c.name, "name", "column", True, None) is False  # ours says no; yours not asked
    assert both(accounts.c.email, "email", "column", True, None) is False  # yours says no
    assert both(accounts.c.id, "id", "column", True, None) is True
    assert seen == ["email", "id"]
    assert combine(autogen.include_object, mine)(accounts.c.id, "id", "column", True, None) is True


# -- against a real database -------------------------------------------------------------------

SCHEMA = """
CREATE TABLE accounts (id bigint PRIMARY KEY, name varchar(200) NOT NULL UNIQUE, full_name varchar(200));
CREATE UNIQUE INDEX CONCURRENTLY accounts_full_name_key ON accounts (full_name);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    account_name varchar(200) REFERENCES accounts (name) ON UPDATE CASCADE
);
ALTER TABLE orders ADD CONSTRAINT orders_account_full_name_fkey
    FOREIGN KEY (account_name) REFERENCES accounts (full_name) ON UPDATE CASCADE NOT VALID;
ALTER TABLE accounts ADD CONSTRAINT ecm_rename_accounts_name_full_name_nn CHECK (full_name IS NOT NULL) NOT VALID;
"""


def v1_models() -> MetaData:
    md = MetaData()
    Table(
        "accounts",
        md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("name", String(200), nullable=False, unique=True),
    )
    Table(
        "orders",
        md,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("account_name", String(200), ForeignKey("accounts.name", onupdate="CASCADE")),
    )
    return md


@pytest.fixture
def conn(database_url: str, db: psycopg.Connection[tuple[object, ...]]) -> Iterator[Connection]:
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            db.execute(statement)
    engine = create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def record(conn: Connection, phase: str) -> None:
    control.ensure(conn)
    ledger.upsert_plan(
        conn,
        plan_id=PLAN["plan_id"],
        operation="rename-column",
        schema="public",
        table="accounts",
        spec={"old": "name", "new": "full_name", "removes": PLAN["removes"], "adds": PLAN["adds"]},
    )
    ledger.set_phase(conn, PLAN["plan_id"], phase)
    conn.commit()


def removes_column(found: list[Any], table: str, column: str) -> bool:
    return any(
        isinstance(d, tuple) and d[0] == "remove_column" and d[2] == table and d[3].name == column
        for d in found
    )


def diffs(conn: Connection, *, include_schemas: bool = False) -> list[Any]:
    opts = {"include_object": autogen.include_object_for(conn), "include_schemas": include_schemas}
    with conn.begin():
        return compare_metadata(MigrationContext.configure(conn, opts=opts), v1_models())


def test_without_a_control_schema_nothing_is_in_flight(conn: Connection) -> None:
    state = in_flight(conn)
    assert state.plans == () and state.fallback is None
    assert removes_column(diffs(conn), "accounts", "full_name")


def test_compare_metadata_in_flight_and_after_the_contract(conn: Connection) -> None:
    record(conn, "backfilled")
    state = in_flight(conn)
    assert [(p.plan_id, p.phase) for p in state.plans] == [(PLAN["plan_id"], "backfilled")]
    assert diffs(conn) == []
    # The control schema's own tables stay out of it too.
    assert diffs(conn, include_schemas=True) == []

    record(conn, "contracted")
    found = diffs(conn)
    assert removes_column(found, "accounts", "full_name")
    assert any(
        d[0] == "remove_index" and d[1].name == "accounts_full_name_key"
        for d in found
        if isinstance(d, tuple)
    )

    record(conn, "aborted")
    assert in_flight(conn).plans == ()


def test_an_unreadable_ledger_falls_back_to_the_applied_revision_files(
    conn: Connection, database_url: str, tmp_path: Path
) -> None:
    record(conn, "contracted")
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a1_base.py").write_text("revision = 'a1'\ndown_revision = None\n")
    (versions / "b2_expand.py").write_text(
        "revision = 'b2'\ndown_revision = 'a1'\nPLAN_ID = 'rename_accounts_name_full_name'\n"
        f"PLAN = {dict(PLAN, revisions={'expand': 'b2'})!r}\n"
        "class S:\n    sql = 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS accounts_full_name_key ON t (x)'\n"
        "    index = 'public.accounts_full_name_key'\n"
        "UPGRADE = [S()]\n"
    )
    script = ScriptDirectory(str(tmp_path), version_locations=[str(versions)])
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS ecm_autogen_nobody")
        admin.execute("CREATE ROLE ecm_autogen_nobody")
        admin.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ecm_autogen_nobody")
    try:
        conn.execute(text("SET ROLE ecm_autogen_nobody"))
        conn.commit()
        with conn.begin():
            # The ledger is readable in principle: this role just may not read it.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                state = in_flight(conn, script, current_heads=("b2",))
            assert state.fallback is not None and "permission denied" in state.fallback
            assert [(p.plan_id, p.phase) for p in state.plans] == [(PLAN["plan_id"], "unknown")]
            assert "accounts_full_name_key" in state.plans[0].names
            assert any(
                "treating rename_accounts_name_full_name as in flight" in str(w.message) for w in caught
            )
            # The failed read did not break the transaction autogenerate compares in.
            assert conn.execute(text("SELECT 1")).scalar() == 1
            # A database that has not applied the expand has nothing in flight.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert in_flight(conn, script, current_heads=("a1",)).plans == ()
    finally:
        conn.execute(text("RESET ROLE"))
        conn.commit()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("DROP OWNED BY ecm_autogen_nobody")
            admin.execute("DROP ROLE ecm_autogen_nobody")


def test_the_ledger_wins_over_the_files(conn: Connection, tmp_path: Path) -> None:
    """An applied expand whose contract ran too is not in flight: only the database knows that."""
    record(conn, "contracted")
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "b2_expand.py").write_text(
        f"revision = 'b2'\ndown_revision = None\nPLAN = {dict(PLAN, revisions={'expand': 'b2'})!r}\n"
    )
    script = ScriptDirectory(str(tmp_path), version_locations=[str(versions)])
    with conn.begin():
        assert in_flight(conn, script, current_heads=("b2",)).plans == ()


def test_names_come_from_the_example_revision_files(conn: Connection) -> None:
    """The frozen SQL of the committed example names everything the expand created."""
    example = Path(__file__).resolve().parent.parent / "examples" / "accounts-app"
    script = ScriptDirectory(str(example / "migrations"))
    head = script.get_current_head()
    assert head is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no control schema here: the files are the fallback
        state = in_flight(conn, script, current_heads=(head,))
    (plan,) = state.plans
    assert plan.plan_id == PLAN["plan_id"]
    assert dict(plan.columns) == {("public", "accounts"): frozenset({"name", "full_name"})}
    assert plan.names == {
        "accounts_full_name_key",
        "orders_account_full_name_fkey",
        "ecm_rename_accounts_name_full_name_nn",
        "ecm_rename_accounts_name_full_name_sync",
    }


def test_no_sqlalchemy_warning_for_an_in_flight_not_valid_check(database_url: str) -> None:
    """Reflecting a plan's NOT VALID check made SQLAlchemy warn on every autogenerate run."""
    import subprocess
    import sys

    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t (a int); ALTER TABLE t ADD CONSTRAINT t_a_nn CHECK (a IS NOT NULL) NOT VALID"
        )
    code = (
        "import expandcontract.autogen\n"
        "from alembic.runtime.migration import MigrationContext\n"
        "from alembic.autogenerate import compare_metadata\n"
        "from sqlalchemy import MetaData, create_engine\n"
        f"engine = create_engine({database_url.replace('postgresql://', 'postgresql+psycopg://', 1)!r})\n"
        "with engine.connect() as conn:\n"
        "    compare_metadata(MigrationContext.configure(conn), MetaData())\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
