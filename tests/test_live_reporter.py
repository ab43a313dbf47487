"""LiveReporter and schema_ready against a real server; signals and fork in real processes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import structlog
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Enum,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from expandcontract import LiveReporter, schema_ready
from expandcontract.db.control import head_revision
from expandcontract.live import reporter as reporter_module
from expandcontract.live.usage import schema_usage
from expandcontract.urls import normalize

from .apps.harness import instance_row, kill_pid, running, wait_for

INTERVAL = 0.2


def users_metadata(*columns: str, schema: str | None = None) -> MetaData:
    metadata = MetaData()
    Table(
        "users",
        metadata,
        Column("id", Integer, primary_key=True),
        *[Column(c, Text) for c in columns],
        schema=schema,
    )
    return metadata


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_engine(normalize(database_url))
    try:
        yield eng
    finally:
        eng.dispose()


def rows(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT id::text, app, version, pid, deregistered_at IS NOT NULL, uses FROM ecm.instances ORDER BY started_at"
    ).fetchall()


# -- usage -------------------------------------------------------------------------------


def test_schema_usage_merges_metadata_and_uses() -> None:
    metadata = users_metadata("name")
    Table("events", metadata, Column("id", Integer, primary_key=True), Column("kind", Text), schema="audit")
    usage = schema_usage(
        metadata, {"orders": ["total", "id"], "audit.events": "payload", "users": ["email"]}, "app"
    )
    assert usage == {
        "app.orders": ["id", "total"],
        "app.users": ["email", "id", "name"],
        "audit.events": ["id", "kind", "payload"],
    }


def test_schema_usage_uses_database_column_names() -> None:
    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        display: Mapped[str] = mapped_column("name")

    assert schema_usage(Base.metadata, None, "public") == {"public.users": ["id", "name"]}


# -- in-process reporter --------------------------------------------------------------------


def test_start_registers_before_ecm_init_heartbeats_and_stop_deregisters(
    engine: Engine, db: psycopg.Connection
) -> None:
    reporter = LiveReporter(
        engine,
        app="web",
        version="1.4.2",
        metadata=users_metadata("name"),
        uses={"audit.log": ["line"]},
        interval=INTERVAL,
        handle_signals=False,
    )
    reporter.start()
    try:
        assert reporter.registered and reporter.started is not None
        row = instance_row(
            engine.url.render_as_string(hide_password=False).replace("+psycopg", ""), reporter.id
        )
        assert (row["app"], row["version"], row["pid"], row["interval_s"]) == (
            "web",
            "1.4.2",
            reporter.pid,
            INTERVAL,
        )
        assert row["uses"] == {"audit.log": ["line"], "public.users": ["id", "name"]}
        assert row["deregistered_at"] is None
        first = row["last_heartbeat"]
        wait_for(
            lambda: db.execute("SELECT last_heartbeat FROM ecm.instances").fetchone()[0] > first,
            5,
            "heartbeat",
        )
    finally:
        reporter.stop()
    assert not reporter.running and not reporter.registered
    assert rows(db)[0][4] is True  # deregistered, row kept
    reporter.stop()  # idempotent


def test_context_manager_and_url_bind(database_url: str, db: psycopg.Connection) -> None:
    url = database_url.replace("postgresql://", "postgres://", 1)  # taken as psycopg 3 too
    with LiveReporter(url, app="worker", version="7", interval=INTERVAL, handle_signals=False) as reporter:
        assert reporter.registered
        assert rows(db)[0][1:5] == ("worker", "7", reporter.pid, False)
    assert rows(db)[0][4] is True


def test_signal_handler_installed_in_main_thread_and_restored(engine: Engine) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with LiveReporter(engine, app="web", version="1", interval=INTERVAL) as reporter:
        assert signal.getsignal(signal.SIGTERM) == reporter._on_sigterm
    assert signal.getsignal(signal.SIGTERM) == before


def test_unreachable_database_never_raises_into_the_app() -> None:
    reporter = LiveReporter(
        "postgresql://nobody@127.0.0.1:1/nowhere",
        app="web",
        version="1",
        interval=INTERVAL,
        handle_signals=False,
    )
    with structlog.testing.capture_logs() as logs:
        reporter.start()
        time.sleep(3 * INTERVAL)
        started = time.monotonic()
        reporter.stop()
        assert time.monotonic() - started < reporter_module.DEREGISTER_TIMEOUT + 2
    events = [e["event"] for e in logs]
    assert "live_register_failed" in events
    assert events.count("live_heartbeat_failed") >= 1
    assert not reporter.registered


def test_heartbeat_failure_is_retried_and_recovers(engine: Engine, db: psycopg.Connection) -> None:
    with structlog.testing.capture_logs() as logs:
        reporter = LiveReporter(
            engine, app="web", version="1", interval=INTERVAL, handle_signals=False
        ).start()
        try:
            db.execute("ALTER TABLE ecm.instances RENAME TO instances_away")
            wait_for(
                lambda: any(e["event"] == "live_heartbeat_failed" for e in logs), 5, "a failed heartbeat"
            )
            assert reporter.running
            db.execute("ALTER TABLE ecm.instances_away RENAME TO instances")
            wait_for(lambda: any(e["event"] == "live_heartbeat_recovered" for e in logs), 10, "recovery")
            row = db.execute(
                "SELECT extract(epoch FROM clock_timestamp() - last_heartbeat) FROM ecm.instances"
            ).fetchone()
            assert row is not None and float(row[0]) < 3 * INTERVAL + 1
        finally:
            reporter.stop()
    failed = [e for e in logs if e["event"] == "live_heartbeat_failed"]
    assert all(e["retry_in"] <= INTERVAL for e in failed)


def test_wiped_row_is_registered_again(engine: Engine, db: psycopg.Connection) -> None:
    with LiveReporter(engine, app="web", version="1", interval=INTERVAL, handle_signals=False) as reporter:
        db.execute("DELETE FROM ecm.instances")
        wait_for(
            lambda: db.execute("SELECT count(*) FROM ecm.instances").fetchone() == (1,), 5, "re-registration"
        )
        assert rows(db)[0][0] == reporter.id


# -- real processes -------------------------------------------------------------------------


def test_sigterm_deregisters_then_default_action(database_url: str, db: psycopg.Connection) -> None:
    with running(database_url, "--maps", "public.users:id,name", "--interval", str(INTERVAL)) as app:
        instance_id, pid = app.ready()
        row = instance_row(database_url, instance_id)
        assert row["pid"] == pid and row["deregistered_at"] is None
        app.signal(signal.SIGTERM)
        assert app.wait() == -signal.SIGTERM  # the default action still happens, after deregistering
    assert instance_row(database_url, instance_id)["deregistered_at"] is not None


def test_sigterm_chains_to_the_applications_own_handler(database_url: str) -> None:
    with running(database_url, "--mode", "chain", "--interval", str(INTERVAL)) as app:
        instance_id, _ = app.ready()
        app.signal(signal.SIGTERM)
        app.expect("APP-HANDLER")
        assert app.wait() == 0
    assert instance_row(database_url, instance_id)["deregistered_at"] is not None


def test_interpreter_exit_deregisters(database_url: str) -> None:
    with running(database_url, "--interval", str(INTERVAL), "--exit-after", "0.3") as app:
        instance_id, _ = app.ready()
        assert app.wait() == 0
    assert instance_row(database_url, instance_id)["deregistered_at"] is not None


def test_sigkill_leaves_the_row_to_expire(database_url: str) -> None:
    with running(database_url, "--interval", str(INTERVAL)) as app:
        instance_id, _ = app.ready()
        app.signal(signal.SIGKILL)
        app.wait()
    row = instance_row(database_url, instance_id)
    assert row["deregistered_at"] is None
    wait_for(lambda: instance_row(database_url, instance_id)["age"] > 3 * INTERVAL, 5, "expiry")


def test_non_main_thread_warns_once_and_installs_no_handler(
    database_url: str, db: psycopg.Connection
) -> None:
    with running(database_url, "--mode", "thread", "--interval", str(INTERVAL)) as app:
        assert app.expect("WARNINGS") == ["WARNINGS", "1", "HANDLER", "default"]
        instance_id, _ = app.ready()
        assert instance_row(database_url, instance_id)["deregistered_at"] is None
        # Without a handler, SIGTERM kills at once: the instance is left to expire.
        app.signal(signal.SIGTERM)
        assert app.wait() == -signal.SIGTERM
    assert instance_row(database_url, instance_id)["deregistered_at"] is None


def test_forked_child_registers_its_own_instance(database_url: str, db: psycopg.Connection) -> None:
    with running(
        database_url, "--mode", "fork", "--maps", "public.users:id,name", "--interval", str(INTERVAL)
    ) as app:
        parent_id, parent_pid = app.ready()
        _, child_id, child_pid_text = app.expect("CHILD")
        child_pid = int(child_pid_text)
        try:
            assert child_id != parent_id and child_pid != parent_pid
            parent, child = instance_row(database_url, parent_id), instance_row(database_url, child_id)
            assert (parent["pid"], child["pid"]) == (parent_pid, child_pid)
            assert child["uses"] == parent["uses"] == {"public.users": ["id", "name"]}
            # Both heartbeat on their own threads.
            beat = child["last_heartbeat"]
            wait_for(
                lambda: instance_row(database_url, child_id)["last_heartbeat"] > beat, 5, "child heartbeat"
            )
            beat = parent["last_heartbeat"]
            wait_for(
                lambda: instance_row(database_url, parent_id)["last_heartbeat"] > beat, 5, "parent heartbeat"
            )
            # SIGTERM to the child deregisters the child only (handlers survive fork).
            kill_pid(child_pid, signal.SIGTERM)
            wait_for(
                lambda: instance_row(database_url, child_id)["deregistered_at"] is not None, 10, "child dereg"
            )
            assert instance_row(database_url, parent_id)["deregistered_at"] is None
        finally:
            kill_pid(child_pid)


# -- schema_ready ----------------------------------------------------------------------------


def test_schema_ready_before_and_after_expand(
    engine: Engine, db: psycopg.Connection, database_url: str
) -> None:
    metadata = users_metadata("name", "full_name")
    assert schema_ready(engine, metadata) == ["table public.users"]
    db.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
    assert schema_ready(engine, metadata) == ["column public.users.full_name"]
    assert schema_ready(database_url, metadata, uses={"audit.log": ["line"]}) == [
        "table audit.log",
        "column public.users.full_name",
    ]
    db.execute("ALTER TABLE users ADD COLUMN full_name text")
    assert schema_ready(engine, metadata) == []
    with engine.connect() as conn:
        assert schema_ready(conn, metadata) == []

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str]

    assert schema_ready(engine, Base) == ["column public.users.email"]


def test_schema_ready_honours_schemas_and_views(engine: Engine, db: psycopg.Connection) -> None:
    db.execute("CREATE SCHEMA app")
    db.execute("CREATE TABLE app.users (id int PRIMARY KEY, name text)")
    db.execute("CREATE VIEW app.user_names AS SELECT id, name FROM app.users")
    metadata = users_metadata("name", schema="app")
    Table("user_names", metadata, Column("id", Integer), Column("name", Text), schema="app")
    assert schema_ready(engine, metadata) == []
    assert schema_ready(engine, users_metadata("name")) == ["table public.users"]


def items_metadata(**types: Any) -> MetaData:
    metadata = MetaData()
    Table(
        "items", metadata, Column("id", Integer, primary_key=True), *[Column(c, t) for c, t in types.items()]
    )
    return metadata


def test_schema_ready_reports_a_type_the_database_lacks(engine: Engine, db: psycopg.Connection) -> None:
    db.execute("CREATE DOMAIN positive AS integer CHECK (VALUE > 0)")
    db.execute(
        "CREATE TABLE items (id int PRIMARY KEY, qty integer, note text, code varchar(50), tags text[], "
        "stamp timestamp(3), n positive)"
    )
    # As the server sees them: String() reads text, Text reads varchar(50), VARCHAR[] reads text[],
    # no typmods (timestamp(3)), a domain's base type.
    alike = {"note": String(), "code": Text(), "tags": ARRAY(String()), "stamp": DateTime(), "n": Integer()}
    assert schema_ready(engine, items_metadata(qty=Integer(), **alike)) == []
    newer = items_metadata(qty=BigInteger(), **alike)
    assert schema_ready(engine, newer) == ["type public.items.qty: bigint (database: integer)"]
    assert schema_ready(engine, newer, check_types=False) == []
    assert schema_ready(engine, items_metadata(note=Enum("a", "b", name="mood"))) == [
        "type public.items.note: mood (database: text; the database has no such type)"
    ]
    # A missing column is reported as missing, not as a type.
    assert schema_ready(engine, items_metadata(price=Numeric(10, 2))) == ["column public.items.price"]


def test_schema_ready_accepts_the_new_type_of_a_plan_in_flight(
    engine: Engine, db: psycopg.Connection, database_url: str
) -> None:
    """New code maps the new type before the contract swaps it: the probe must not hold that rollout."""
    import json
    import uuid

    from sqlalchemy.engine import make_url

    from expandcontract.db import control

    db.execute("CREATE TABLE items (id int PRIMARY KEY, qty integer)")
    newer = items_metadata(qty=BigInteger())
    with engine.connect() as conn:
        control.ensure(conn)
    retype = {
        "table": "public.items",
        "column": "qty",
        "kind": "retype",
        "old_type": "integer",
        "new_type": "int8",
    }
    db.execute(
        "INSERT INTO ecm.plans (plan_id, operation, table_schema, table_name, spec, phase) "
        "VALUES ('retype_items_qty', 'change-type', 'public', 'items', %s::jsonb, 'expanded')",
        (json.dumps({"removes": {}, "adds": {}, "breaks": [retype]}),),
    )
    assert schema_ready(engine, newer) == []
    assert schema_ready(engine, items_metadata(qty=Numeric())) == [
        "type public.items.qty: numeric (database: integer)"  # the plan makes it bigint, not numeric
    ]
    # An application role without SELECT on the plans cannot see the excuse, and is told so.
    role = f"ecm_app_{uuid.uuid4().hex[:8]}"
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        db.execute(f'GRANT USAGE ON SCHEMA ecm TO "{role}"')
        url = make_url(normalize(database_url)).set(username=role).render_as_string(hide_password=False)
        assert schema_ready(url, newer) == [
            "type public.items.qty: bigint (database: integer; ecm.plans is not readable, so a plan in "
            "flight cannot excuse it)"
        ]
        db.execute(f'GRANT SELECT ON ecm.plans TO "{role}"')
        assert schema_ready(url, newer) == []
    finally:
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')
    for done in ("contracted", "aborted"):
        db.execute("UPDATE ecm.plans SET phase = %s", (done,))
        assert schema_ready(engine, newer) == ["type public.items.qty: bigint (database: integer)"], done
    db.execute("ALTER TABLE items ALTER COLUMN qty TYPE bigint")  # what the contract does
    assert schema_ready(engine, newer) == []


def test_a_least_privilege_application_role_can_report(
    engine: Engine, db: psycopg.Connection, database_url: str
) -> None:
    """The grants docs/live.md lists are enough (no DELETE: pruning is skipped, not fatal)."""
    import uuid

    from sqlalchemy.engine import make_url

    from expandcontract.db import control

    with engine.connect() as conn:
        control.ensure(conn)
    role = f"ecm_app_{uuid.uuid4().hex[:8]}"
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        db.execute(f'GRANT USAGE ON SCHEMA ecm TO "{role}"')
        db.execute(f'GRANT SELECT ON ecm.schema_version TO "{role}"')
        db.execute(f'GRANT SELECT, INSERT, UPDATE ON ecm.instances TO "{role}"')
        url = make_url(normalize(database_url)).set(username=role).render_as_string(hide_password=False)
        with LiveReporter(url, app="web", version="1", interval=INTERVAL, handle_signals=False) as reporter:
            assert reporter.registered
            assert rows(db)[0][0] == reporter.id
        assert rows(db)[0][4] is True
    finally:
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')


# -- any driver, AsyncEngine: the heartbeat is ecm's own psycopg 3 connection ------------------


def reporter_backends(db: psycopg.Connection) -> list[tuple[str, str]]:
    """(application_name, backend_type) of the reporters' own connections to this database."""
    rows = db.execute(
        "SELECT application_name, backend_type FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'ecm-live %%'"
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def asyncpg_url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+asyncpg://", 1)


def test_async_engine_reporter_heartbeats_on_its_own_connection(
    database_url: str, db: psycopg.Connection
) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def app() -> tuple[str, list[tuple[str, str]], int]:
        engine = create_async_engine(asyncpg_url(database_url), pool_size=2)
        try:
            async with LiveReporter(
                engine, app="shop", version="3", metadata=users_metadata("name"), interval=INTERVAL
            ) as reporter:
                assert reporter.registered and reporter.role == "server"
                first = instance_row(database_url, reporter.id)["last_heartbeat"]
                deadline = time.monotonic() + 5
                while instance_row(database_url, reporter.id)["last_heartbeat"] <= first:
                    assert time.monotonic() < deadline, "no heartbeat"
                    await asyncio.sleep(0.05)  # the loop stays free: heartbeats run on their thread
                backends = reporter_backends(db)
                checked_out = engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]
            return reporter.id, backends, checked_out
        finally:
            await engine.dispose()

    instance_id, backends, checked_out = asyncio.run(app())
    assert backends == [("ecm-live shop", "client backend")]  # psycopg 3, not the app's asyncpg pool
    assert checked_out == 0
    row = instance_row(database_url, instance_id)
    assert row["deregistered_at"] is not None and row["uses"] == {"public.users": ["id", "name"]}
    assert reporter_backends(db) == []  # closed at stop


def test_async_engine_with_plain_start_and_stop(database_url: str, db: psycopg.Connection) -> None:
    """start()/stop() take an AsyncEngine too (e.g. before the event loop runs)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(asyncpg_url(database_url))
    reporter = LiveReporter(engine, app="shop", version="3", interval=INTERVAL, handle_signals=False).start()
    try:
        assert reporter.registered
        assert rows(db)[0][1:5] == ("shop", "3", reporter.pid, False)
    finally:
        reporter.stop()
    assert rows(db)[0][4] is True


def test_an_engine_of_another_driver_reports_through_psycopg3(
    database_url: str, db: psycopg.Connection
) -> None:
    """psycopg2 here; the application's search_path (set in connect_args) still resolves its tables."""
    db.execute("CREATE SCHEMA app")
    engine = create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        connect_args={"options": "-csearch_path=app"},
    )
    try:
        with LiveReporter(
            engine,
            app="legacy",
            version="9",
            metadata=users_metadata("name"),
            interval=INTERVAL,
            handle_signals=False,
        ) as reporter:
            assert reporter_backends(db) == [("ecm-live legacy", "client backend")]
            assert instance_row(database_url, reporter.id)["uses"] == {"app.users": ["id", "name"]}
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_astart_asks_the_async_engine_for_its_search_path(database_url: str, db: psycopg.Connection) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    db.execute("CREATE SCHEMA app")

    async def app() -> str:
        engine = create_async_engine(
            asyncpg_url(database_url), connect_args={"server_settings": {"search_path": "app"}}
        )
        try:
            async with LiveReporter(engine, app="shop", version="3", metadata=users_metadata("name")) as r:
                return r.id
        finally:
            await engine.dispose()

    assert instance_row(database_url, asyncio.run(app()))["uses"] == {"app.users": ["id", "name"]}


def test_bind_must_be_an_engine_or_a_url(engine: Engine) -> None:
    from sqlalchemy.orm import Session

    with pytest.raises(TypeError, match="Engine, an AsyncEngine or a database URL, not Session"):
        LiveReporter(Session(engine), app="web", version="1")  # type: ignore[arg-type]


# -- roles ---------------------------------------------------------------------------------


def test_role_is_registered(engine: Engine, db: psycopg.Connection) -> None:
    with (
        LiveReporter(engine, app="web", version="1", interval=INTERVAL, handle_signals=False) as server,
        LiveReporter(engine, app="jobs", version="1", interval=INTERVAL, handle_signals=False, role="worker"),
        LiveReporter(engine, app="ops", version="1", interval=INTERVAL, handle_signals=False, role="cli"),
    ):
        assert server.role == "server"  # pytest is no command-line run of the application
        roles = db.execute("SELECT app, role FROM ecm.instances ORDER BY app").fetchall()
        assert roles == [("jobs", "worker"), ("ops", "cli"), ("web", "server")]
    with pytest.raises(ValueError, match="role must be one of server, worker, cli"):
        LiveReporter(engine, app="web", version="1", role="daemon")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "main_module", "expected"),
    [
        (["/venv/bin/ecm", "upgrade"], "", "cli"),
        (["/x/expandcontract/__main__.py", "upgrade"], "expandcontract.__main__", "cli"),
        (["/venv/bin/alembic", "upgrade", "head"], "", "cli"),
        (["/x/alembic/__main__.py", "upgrade", "head"], "alembic.__main__", "cli"),
        (["/venv/bin/flask", "db", "upgrade"], "", "cli"),
        (["/venv/bin/flask", "--app", "microblog", "db", "current"], "", "cli"),
        (["/x/flask/__main__.py", "shell"], "flask.__main__", "cli"),
        (["C:\\venv\\Scripts\\alembic.exe", "current"], "", "cli"),
        (["/venv/bin/flask", "--app", "microblog", "run"], "", "server"),
        (["/venv/bin/gunicorn", "app:wsgi"], "", "server"),
        (["/x/myapp/__main__.py"], "myapp.__main__", "server"),
        (["/x/expandcontract/demo/app.py"], "expandcontract.demo.app", "server"),
        ([], "", "server"),
    ],
)
def test_process_role_detection(argv: list[str], main_module: str, expected: str) -> None:
    assert reporter_module.process_role(argv, main_module) == expected


def test_set_process_role_wins_and_is_per_process(engine: Engine, db: psycopg.Connection) -> None:
    from expandcontract import set_process_role

    set_process_role("cli")
    try:
        assert reporter_module.process_role(["/venv/bin/gunicorn"], "") == "cli"
        with LiveReporter(engine, app="manage", version="1", interval=INTERVAL, handle_signals=False) as r:
            assert r.role == "cli"
        # An explicit role still wins over the process's.
        assert LiveReporter(engine, app="web", version="1", role="server").role == "server"
    finally:
        set_process_role(None)
    assert db.execute("SELECT role FROM ecm.instances").fetchall() == [("cli",)]
    with pytest.raises(ValueError, match="role must be one of"):
        set_process_role("batch")  # type: ignore[arg-type]


# -- the control schema before roles (revision 0001) ------------------------------------------


def control_at(engine: Engine, revision: str) -> None:
    from alembic import command

    from expandcontract.db import control

    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS ecm")
        command.upgrade(control.alembic_config(conn, "ecm"), revision)
        conn.commit()


def test_a_registry_at_revision_0001_upgrades_in_place(engine: Engine, db: psycopg.Connection) -> None:
    control_at(engine, "0001")
    db.execute(
        "INSERT INTO ecm.instances (id, app, version, host, pid, interval_s, uses) "
        "VALUES (gen_random_uuid(), 'web', '1.0', 'h1', 77, 10, '{}')"
    )
    with LiveReporter(engine, app="ops", version="2", interval=INTERVAL, handle_signals=False, role="cli"):
        assert db.execute("SELECT version_num FROM ecm.schema_version").fetchall() == [(head_revision(),)]
        roles = db.execute("SELECT app, role FROM ecm.instances ORDER BY app").fetchall()
        assert roles == [("ops", "cli"), ("web", "server")]  # the old row became a server


def test_an_application_role_that_cannot_upgrade_the_registry_still_reports(
    engine: Engine, db: psycopg.Connection, database_url: str
) -> None:
    """The library is newer than the control schema and the app may not ALTER it: it reports anyway."""
    import uuid

    from sqlalchemy.engine import make_url

    control_at(engine, "0001")
    role = f"ecm_app_{uuid.uuid4().hex[:8]}"
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        db.execute(f'GRANT USAGE ON SCHEMA ecm TO "{role}"')
        db.execute(f'GRANT SELECT ON ecm.schema_version TO "{role}"')
        db.execute(f'GRANT SELECT, INSERT, UPDATE ON ecm.instances TO "{role}"')
        url = make_url(normalize(database_url)).set(username=role).render_as_string(hide_password=False)
        with (
            structlog.testing.capture_logs() as logs,
            LiveReporter(url, app="web", version="1", interval=INTERVAL, handle_signals=False) as reporter,
        ):
            assert reporter.registered
            assert rows(db)[0][0] == reporter.id
        assert any(e["event"] == "live_control_upgrade_skipped" for e in logs)
        assert db.execute("SELECT version_num FROM ecm.schema_version").fetchall() == [("0001",)]
        assert rows(db)[0][4] is True
    finally:
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')


# -- schema_ready, awaited -------------------------------------------------------------------


def test_schema_ready_is_awaitable_with_an_async_engine_or_connection(
    database_url: str, db: psycopg.Connection
) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    metadata = users_metadata("name", "full_name")
    db.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")

    async def probe() -> tuple[list[str], list[str], list[str]]:
        engine = create_async_engine(asyncpg_url(database_url))
        try:
            before = await schema_ready(engine, metadata)
            async with engine.connect() as conn:
                on_conn = await schema_ready(conn, metadata, uses={"audit.log": ["line"]})
            db.execute("ALTER TABLE users ADD COLUMN full_name text")
            after = await schema_ready(engine, metadata)
            return before, on_conn, after
        finally:
            await engine.dispose()

    before, on_conn, after = asyncio.run(probe())
    assert before == ["column public.users.full_name"]
    assert on_conn == ["table audit.log", "column public.users.full_name"]
    assert after == []


def test_an_unreachable_async_engine_never_raises_into_the_app() -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def app() -> LiveReporter:
        engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nowhere")
        try:
            async with LiveReporter(engine, app="shop", version="3", interval=INTERVAL) as reporter:
                await asyncio.sleep(3 * INTERVAL)
            return reporter
        finally:
            await engine.dispose()

    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        reporter = asyncio.run(app())
        assert time.monotonic() - started < reporter_module.PROBE_TIMEOUT + reporter_module.DEREGISTER_TIMEOUT
    events = [e["event"] for e in logs]
    assert "live_probe_failed" in events and "live_register_failed" in events
    assert not reporter.registered and not reporter.running


def test_a_sync_application_without_greenlet(database_url: str) -> None:
    """greenlet is optional (SQLAlchemy's asyncio needs it); a sync app must not need it to report."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['greenlet'] = None  # as if not installed\n"
        "from sqlalchemy import Column, Integer, MetaData, Table, create_engine\n"
        "from expandcontract import LiveReporter, schema_ready\n"
        "md = MetaData()\n"
        "Table('nosuch', md, Column('id', Integer, primary_key=True))\n"
        f"engine = create_engine({normalize(database_url)!r})\n"
        "print(schema_ready(engine, md))\n"
        "r = LiveReporter(engine, app='web', version='1', metadata=md, handle_signals=False).start()\n"
        "assert r.registered, 'not registered'\n"
        "r.stop()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['table public.nosuch']"
