"""`ecm guard check`, `ecm instances` and `ecm check-app` with real application processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .apps.harness import instance_row, running, wait_for
from .conftest import run_ecm

INTERVAL = 0.2
OLD = ("--app", "web", "--version", "1.0", "--maps", "public.users:id,name", "--interval", str(INTERVAL))
NEW = ("--app", "web", "--version", "2.0", "--maps", "public.users:id,full_name", "--interval", str(INTERVAL))


@pytest.fixture
def planned(database_url: str, db: psycopg.Connection) -> str:
    """An initialized control schema with one pending contract that removes users.name."""
    result = run_ecm("init", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    db.execute("CREATE TABLE users (id int PRIMARY KEY, name text, full_name text)")
    insert_plan(db, "rename_users_name", "backfilled", {"public.users": ["name"]})
    return database_url


def insert_plan(
    db: psycopg.Connection, plan_id: str, phase: str, removes: dict[str, list[str]] | None
) -> None:
    spec = {"adds": {"public.users": ["full_name"]}}
    if removes is not None:
        spec["removes"] = removes
    db.execute(
        "INSERT INTO ecm.plans (plan_id, operation, table_schema, table_name, spec, phase) "
        "VALUES (%s, 'rename-column', 'public', 'users', %s::jsonb, %s)",
        (plan_id, json.dumps(spec), phase),
    )


def guard(url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, object], str]:
    result = run_ecm("guard", "check", *args, "--database-url", url, "--json", env=env)
    doc = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, doc, result.stderr


def test_old_code_holds_the_contract_until_sigterm(planned: str) -> None:
    with running(planned, *NEW) as new_app, running(planned, *OLD) as old_app:
        new_app.ready()
        old_id, old_pid = old_app.ready()
        code, doc, stderr = guard(planned)
        assert code == 3, stderr
        assert doc["allowed"] is False
        (plan,) = doc["plans"]  # type: ignore[misc]
        assert plan["plan_id"] == "rename_users_name" and plan["allowed"] is False
        (reason,) = plan["reasons"]
        assert reason.startswith("1 instance of web 1.0 still maps public.users.name; last seen ")
        assert f"pid {old_pid})" in reason
        assert "ecm: error: 1 of 1 pending contract(s) refused" in stderr
        assert f"  - rename_users_name: {reason[:40]}" in stderr

        old_app.signal(signal.SIGTERM)
        assert old_app.wait() == -signal.SIGTERM
        assert instance_row(planned, old_id)["deregistered_at"] is not None
        code, doc, stderr = guard(planned)
        assert code == 0, stderr
        assert doc["plans"][0]["allowed"] is True  # type: ignore[index]


def test_sigkilled_old_code_holds_the_contract_until_its_ttl(planned: str) -> None:
    # The old instance's interval is long enough (TTL 3 x 3 s) for a CLI run inside it, even
    # on a loaded machine where starting `ecm` takes seconds.
    slow_old = (*OLD[:-1], "3")
    with running(planned, *NEW) as new_app, running(planned, *slow_old) as old_app:
        new_app.ready()
        old_id, _ = old_app.ready()
        old_app.signal(signal.SIGKILL)
        old_app.wait()
        code, _, stderr = guard(planned)
        assert instance_row(planned, old_id)["deregistered_at"] is None  # it could not deregister
        assert code == 3 and "web 1.0 still maps public.users.name" in stderr
        # Its TTL passes: allowed, while the new version keeps reporting...
        wait_for(lambda: instance_row(planned, old_id)["age"] > 3 * 3, 20, "TTL")
        code, _, stderr = guard(planned)
        assert code == 0, stderr
        # ...unless ECM_LIVE_TTL stretches every instance's TTL.
        code, _, stderr = guard(planned, env={"ECM_LIVE_TTL": "3600"})
        assert code == 3 and "web 1.0 still maps public.users.name" in stderr


def test_new_version_alone_never_blocks(planned: str) -> None:
    with running(planned, *NEW) as new_app:
        new_app.ready()
        code, doc, stderr = guard(planned, "rename_users_name")
        assert code == 0, stderr
        assert doc["plans"][0]["live"][0]["version"] == "2.0"  # type: ignore[index]


def test_empty_registry_refuses_unless_the_flag_is_given(planned: str) -> None:
    code, doc, stderr = guard(planned)
    assert code == 3
    assert "no instance of any application reported within its TTL" in stderr
    assert doc["plans"][0]["no_reporters"] is True  # type: ignore[index]
    code, doc, stderr = guard(planned, "--allow-no-reporters")
    assert code == 0, stderr
    assert doc["allow_no_reporters"] is True and doc["plans"][0]["no_reporters"] is True  # type: ignore[index]


def test_guard_check_selects_pending_contracts(planned: str, db: psycopg.Connection) -> None:
    insert_plan(db, "done_already", "contracted", {"public.users": ["name"]})
    insert_plan(db, "gave_up", "aborted", {"public.users": ["name"]})
    insert_plan(db, "no_removes", "expanded", None)
    code, doc, _ = guard(planned)
    assert code == 3
    assert [p["plan_id"] for p in doc["plans"]] == ["rename_users_name"]  # type: ignore[attr-defined]
    # A finished plan has nothing pending; an unknown one is bad input.
    assert guard(planned, "done_already")[0] == 0
    code, _, stderr = guard(planned, "no_such_plan")
    assert code == 2 and "unknown plan 'no_such_plan'" in stderr


def test_guard_check_with_nothing_pending_or_no_control_schema(database_url: str) -> None:
    code, doc, stderr = guard(database_url)
    assert code == 0, stderr
    assert doc == {"allowed": True, "allow_no_reporters": False, "plans": []}
    assert guard(database_url, "some_plan")[0] == 2


def test_guard_check_fails_closed_on_an_unreadable_registry(planned: str, db: psycopg.Connection) -> None:
    db.execute("ALTER TABLE ecm.instances RENAME COLUMN uses TO used")
    code, doc, stderr = guard(planned, "--allow-no-reporters")
    assert code == 3
    assert doc["plans"][0]["unknown"] is True  # type: ignore[index]
    assert "cannot read the live-instance registry" in stderr


def test_instances_lists_live_expired_and_deregistered(planned: str) -> None:
    with (
        running(planned, *NEW) as new_app,
        running(planned, *OLD) as old_app,
        running(
            planned,
            "--app",
            "worker",
            "--version",
            "3",
            "--uses",
            "jobs:id,state",
            "--interval",
            str(INTERVAL),
        ) as worker,
    ):
        new_id, _ = new_app.ready()
        old_id, _ = old_app.ready()
        worker_id, worker_pid = worker.ready()
        old_app.signal(signal.SIGTERM)
        old_app.wait()
        worker.signal(signal.SIGKILL)
        worker.wait()
        wait_for(lambda: instance_row(planned, worker_id)["age"] > 3 * INTERVAL, 10, "worker expiry")
        result = run_ecm("instances", "--database-url", planned, "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        states = {i["id"]: i["state"] for i in doc["instances"]}
        assert states == {new_id: "live", worker_id: "expired", old_id: "deregistered"}
        assert [i["state"] for i in doc["instances"]] == ["live", "expired", "deregistered"]
        worker_doc = next(i for i in doc["instances"] if i["id"] == worker_id)
        assert worker_doc["pid"] == worker_pid and worker_doc["uses"] == {"public.jobs": ["id", "state"]}
        assert worker_doc["ttl_s"] == pytest.approx(3 * INTERVAL)
        assert worker_doc["seconds_since_heartbeat"] > 3 * INTERVAL

        text = run_ecm("instances", "--database-url", planned)
        assert text.returncode == 0 and text.stdout == ""
        assert "deregistered" in text.stderr and "worker" in text.stderr


def test_instances_recent_window_and_all(planned: str, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO ecm.instances (id, app, version, host, pid, last_heartbeat, interval_s) "
        "VALUES (gen_random_uuid(), 'ancient', '0.1', 'h', 1, now() - interval '3 hours', 10)"
    )
    recent = json.loads(run_ecm("instances", "--database-url", planned, "--json").stdout)
    assert recent["instances"] == []
    everything = json.loads(run_ecm("instances", "--database-url", planned, "--json", "--all").stdout)
    assert [(i["app"], i["state"]) for i in everything["instances"]] == [("ancient", "expired")]


def test_instances_without_control_schema(database_url: str) -> None:
    result = run_ecm("instances", "--database-url", database_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["initialized"] is False


def test_check_app(database_url: str, db: psycopg.Connection, tmp_path: Path) -> None:
    (tmp_path / "shop_models.py").write_text(
        textwrap.dedent(
            """
            from sqlalchemy import Integer, Text
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(Integer, primary_key=True)
                full_name: Mapped[str] = mapped_column(Text)

            NOT_METADATA = 42
            """
        )
    )

    def check(target: str) -> tuple[int, str, str]:
        result = run_ecm("check-app", target, "--database-url", database_url, "--json", cwd=tmp_path)
        return result.returncode, result.stdout, result.stderr

    code, out, _ = check("shop_models:Base")
    assert code == 3 and json.loads(out) == {
        "target": "shop_models:Base",
        "ready": False,
        "missing": ["table public.users"],
    }
    db.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
    code, out, err = check("shop_models:Base.metadata")
    assert code == 3 and json.loads(out)["missing"] == ["column public.users.full_name"]
    db.execute("ALTER TABLE users ADD COLUMN full_name text")
    code, out, err = check("shop_models:Base")
    assert code == 0, err
    assert json.loads(out)["ready"] is True

    for bad, message in (
        ("no_such_module:Base", "cannot import no_such_module"),
        ("shop_models:Nope", "has no attribute Nope"),
        ("shop_models:NOT_METADATA", "expected a SQLAlchemy MetaData"),
        ("shop_models", "expected module:attribute"),
    ):
        code, out, err = check(bad)
        assert code == 2 and message in err and out == "", (bad, err)


def test_check_app_reports_a_mapped_type_the_database_lacks(
    database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "typed_models.py").write_text(
        textwrap.dedent(
            """
            from sqlalchemy import BigInteger, Integer, String
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Item(Base):
                __tablename__ = "items"
                id: Mapped[int] = mapped_column(Integer, primary_key=True)
                qty: Mapped[int] = mapped_column(BigInteger)
                label: Mapped[str] = mapped_column(String)
            """
        )
    )
    db.execute("CREATE TABLE items (id int PRIMARY KEY, qty integer, label text)")

    def check(*args: str) -> tuple[int, dict[str, Any], str]:
        result = run_ecm(
            "check-app", "typed_models:Base", *args, "--database-url", database_url, "--json", cwd=tmp_path
        )
        return result.returncode, json.loads(result.stdout or "{}"), result.stderr

    code, doc, err = check()
    assert code == 3, err
    assert doc["missing"] == ["type public.items.qty: bigint (database: integer)"]
    assert "  - type public.items.qty: bigint (database: integer)" in err
    code, doc, err = check("--no-check-types")
    assert code == 0 and doc["ready"] is True, err
    db.execute("ALTER TABLE items ALTER COLUMN qty TYPE bigint")
    code, doc, err = check()
    assert code == 0 and doc == {"target": "typed_models:Base", "ready": True, "missing": []}, err


def test_check_app_on_an_async_applications_models(
    database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    """The models module of an asyncio app: AsyncAttrs, an AsyncEngine made at import, an asyncpg URL."""
    (tmp_path / "async_models.py").write_text(
        textwrap.dedent(
            """
            import os

            from sqlalchemy import BigInteger, Text
            from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=5)
            Session = async_sessionmaker(engine, expire_on_commit=False)

            class Base(AsyncAttrs, DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
                full_name: Mapped[str] = mapped_column(Text)
            """
        )
    )
    asyncpg = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)

    def check(target: str) -> tuple[int, str, str]:
        # The deploy gives the app's own asyncpg URL to both: ecm connects with psycopg 3 anyway.
        result = run_ecm(
            "check-app",
            target,
            "--json",
            cwd=tmp_path,
            env={"DATABASE_URL": asyncpg, "ECM_DATABASE_URL": asyncpg},
        )
        return result.returncode, result.stdout, result.stderr

    code, out, err = check("async_models:Base")
    assert code == 3, err
    assert json.loads(out) == {
        "target": "async_models:Base",
        "ready": False,
        "missing": ["table public.users"],
    }
    db.execute("CREATE TABLE users (id bigint PRIMARY KEY, full_name text)")
    code, out, err = check("async_models:Base.metadata")
    assert code == 0, err
    assert json.loads(out)["ready"] is True
    code, out, err = check("async_models:engine")
    assert code == 2 and "expected a SQLAlchemy MetaData or declarative Base, got AsyncEngine" in err


# -- processes that never served: the ecm process itself, CLI runs -----------------------------

MICROBLOG = '''
"""A Flask app whose create_app starts its reporter (so it also starts in `flask db ...`)."""
import os
import time

import click
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from expandcontract import LiveReporter

db = SQLAlchemy()


class User(db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)


def create_app():
    app = Flask(__name__)
    # psycopg2, the driver Flask projects usually have: the reporter still heartbeats on psycopg 3.
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    Migrate(app, db)
    with app.app_context():
        # A long interval: its deregistration stays "recent" for the whole test.
        reporter = LiveReporter(db.engine, app="microblog", version="v1", metadata=db.metadata, interval=30)
        reporter.start()

    @app.cli.command("linger")
    @click.argument("seconds", type=float)
    def linger(seconds):
        print("READY", reporter.id, os.getpid(), reporter.role, flush=True)
        time.sleep(seconds)

    return app
'''


def flask(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "microblog", *args],
        cwd=tmp_path,
        env={**os.environ, "DATABASE_URL": url.replace("postgresql://", "postgresql+psycopg2://", 1)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def instances_doc(url: str) -> list[dict[str, Any]]:
    result = run_ecm("instances", "--database-url", url, "--json")
    assert result.returncode == 0, result.stderr
    docs: list[dict[str, Any]] = json.loads(result.stdout)["instances"]
    return docs


def test_flask_cli_runs_register_as_cli_and_prove_nothing(planned: str, tmp_path: Path) -> None:
    (tmp_path / "microblog.py").write_text(MICROBLOG)
    for args in (("db", "init"), ("db", "current")):
        run = flask(tmp_path, planned, *args)
        assert run.returncode == 0, run.stderr
    runs = instances_doc(planned)
    assert [(i["app"], i["role"], i["state"]) for i in runs] == [("microblog", "cli", "deregistered")] * 2
    assert all(i["ttl_s"] == 90 for i in runs)  # deregistered within their TTL: "recent"

    # Two deregistered CLI runs, and no server anywhere: no evidence that the fleet reports.
    code, doc, stderr = guard(planned)
    assert code == 3, stderr
    (reason,) = doc["plans"][0]["reasons"]  # type: ignore[index]
    assert reason.startswith(
        "no instance of any application reported within its TTL (3x its interval) other than "
        "command-line runs (2 of microblog v1), which prove nothing about the serving fleet"
    )
    assert doc["plans"][0]["no_reporters"] is True  # type: ignore[index]

    text = run_ecm("instances", "--database-url", planned)
    assert "cli" in text.stderr and "deregistered" in text.stderr


def test_a_running_cli_process_still_holds_the_contract(planned: str, tmp_path: Path) -> None:
    (tmp_path / "microblog.py").write_text(MICROBLOG)
    with running(planned, *NEW) as server:
        server.ready()
        linger = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "microblog", "linger", "60"],
            cwd=tmp_path,
            env={**os.environ, "DATABASE_URL": planned.replace("postgresql://", "postgresql+psycopg2://", 1)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert linger.stdout is not None
            _, instance_id, pid, role = linger.stdout.readline().split()
            assert role == "cli"
            code, doc, stderr = guard(planned)
            assert code == 3, stderr
            (reason,) = doc["plans"][0]["reasons"]  # type: ignore[index]
            assert reason.startswith(
                "1 cli instance of microblog v1 still maps public.users.name; last seen "
            )
            assert reason.endswith(f"pid {pid})")
            assert doc["plans"][0]["blocking"][0]["role"] == "cli"  # type: ignore[index]
            linger.send_signal(signal.SIGTERM)  # its code stops: the reporter deregisters
            assert linger.wait(30) == -signal.SIGTERM
        finally:
            if linger.poll() is None:
                linger.kill()
                linger.wait(10)
        assert instance_row(planned, instance_id)["deregistered_at"] is not None
        code, doc, stderr = guard(planned)
        assert code == 0, stderr  # the v2 server is the evidence


SHOP_ENV_LINES = """
# The project's env.py imports the application, which starts its reporter at import time: under
# `ecm upgrade` that reporter runs inside the ecm process itself.
import shop  # noqa: E402

target_metadata = shop.metadata
"""

SHOP = """
import os

from sqlalchemy import Column, Integer, MetaData, Table, Text

from expandcontract import LiveReporter

metadata = MetaData()
Table("users", metadata, Column("id", Integer, primary_key=True), Column("name", Text), Column("full_name", Text))
reporter = LiveReporter(
    os.environ["ECM_DATABASE_URL"], app="shop", version="1", metadata=metadata, interval=30
).start()
"""


def test_the_ecm_process_does_not_hold_its_own_contract(
    tmp_path: Path, database_url: str, db: psycopg.Connection
) -> None:
    from .project import make_project

    db.execute("CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL)")
    db.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 50) g")
    project = make_project(tmp_path / "shop", database_url)
    env_py = project.root / "migrations" / "env.py"
    text = env_py.read_text()
    env_py.write_text(text.replace("target_metadata = None\n", SHOP_ENV_LINES, 1))
    (project.root / "shop.py").write_text(SHOP)
    result = project.ecm("plan", "rename-column", "users", "name", "full_name")
    assert result.returncode == 0, result.stderr

    with running(database_url, *NEW) as server:  # new code serves: the evidence
        server.ready()
        # expand, backfill and contract in one run: env.py (and so the reporter) loads first.
        result = project.ecm("upgrade", "--json")
        assert result.returncode == 0, result.stderr
        assert (
            json.loads(result.stdout)["contracts"]["applied"][0]["plan_id"] == "rename_users_name_full_name"
        )
    # Each ecm run that loaded env.py reported, as a CLI run, and went away at its end.
    shop = [i for i in instances_doc(database_url) if i["app"] == "shop"]
    assert shop and {(i["role"], i["state"]) for i in shop} == {("cli", "deregistered")}
    assert shop[0]["uses"] == {"public.users": ["full_name", "id", "name"]}
