"""A Flask-Migrate project in microblog's shape, driven the way its developers drive it.

An ``app`` package with a ``create_app`` factory, Flask-SQLAlchemy's ``db`` and
Flask-Migrate's ``Migrate``; ``FLASK_APP`` names ``microblog.py``; ``flask db init``
writes ``migrations/`` with an ``alembic.ini`` that has no ``script_location`` and an
``env.py`` that needs the application context. Everything runs as real processes:
``flask db …``, ``flask ecm …`` (the ``flask.commands`` entry point), plain ``ecm`` and
a serving process that starts its LiveReporter the documented way.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import psycopg
import pytest

from .conftest import Result
from .project import columns
from .shapes import clean_env, driver_url

PLAN = "rename_users_name_full_name"

APP_INIT = '''"""The application package: extensions at module level, the app from a factory."""

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

import expandcontract.autogen

db = SQLAlchemy()
migrate = Migrate()


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    migrate.init_app(app, db, include_object=expandcontract.autogen.include_object)
    from app import models  # noqa: F401
    return app
'''

MODELS = """from app import db


class User(db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    {column} = db.Column(db.String(64), nullable=False)
    email = db.Column(db.String(120), index=True, unique=True)
"""

MICROBLOG = """from app import create_app, db

app = create_app()
"""

# The serving process's entry point (what gunicorn imports): the only place a reporter starts.
WSGI = """import os
import signal

from expandcontract import LiveReporter

from app import create_app, db

app = create_app()
with app.app_context():
    reporter = LiveReporter(
        db.engine, app="microblog", version=os.environ["APP_VERSION"], metadata=db.metadata, interval=1
    ).start()

if __name__ == "__main__":
    print("serving", flush=True)
    signal.pause()
"""


class FlaskProject:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.env = {
            "FLASK_APP": "microblog.py",
            "DATABASE_URL": driver_url(url, "psycopg2"),
            "PYTHONDONTWRITEBYTECODE": "1",  # models.py changes between versions within a second
        }
        self.servers: list[subprocess.Popen[str]] = []

    def run(self, *argv: str, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=clean_env({**self.env, **(env or {})}),
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def flask(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.run("-m", "flask", *args, env=env)

    def ecm(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """Plain ``ecm``, without Flask."""
        return self.run("-m", "expandcontract", *args, env=env)

    def models(self, column: str) -> None:
        (self.root / "app" / "models.py").write_text(MODELS.format(column=column))

    def serve(self, version: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "wsgi.py"],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=clean_env({**self.env, "APP_VERSION": version}),
        )
        self.servers.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "serving"  # registered: start() registers before returning
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGTERM)  # the reporter deregisters, then the process ends
        proc.wait(timeout=30)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)


def ok(result: Result) -> Result:
    assert result.returncode == 0, result.stderr
    return result


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("ecm: error:")]


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[FlaskProject]:
    """microblog's shape after `flask db init`, a first migration and `flask db upgrade`, with rows."""
    root = tmp_path / "microblog"
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text(APP_INIT)
    (root / "microblog.py").write_text(MICROBLOG)
    (root / "wsgi.py").write_text(WSGI)
    fp = FlaskProject(root, database_url)
    fp.models("name")
    if not any(ep.name == "ecm" for ep in entry_points(group="flask.commands")):
        pytest.fail("`flask ecm` is not registered: pip install -e . again (flask.commands entry point)")
    ok(fp.flask("db", "init"))
    assert "script_location" not in (root / "migrations" / "alembic.ini").read_text()
    ok(fp.flask("db", "migrate", "-m", "users"))
    ok(fp.flask("db", "upgrade"))
    with fp.connect() as conn:
        conn.execute(
            "INSERT INTO users (name, email) SELECT 'user ' || g, 'u' || g || '@example.com' "
            "FROM generate_series(1, 300) g"
        )
    try:
        yield fp
    finally:
        for proc in fp.servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_rename_column_end_to_end(project: FlaskProject) -> None:
    fp = project
    versions = fp.root / "migrations" / "versions"
    before = set(versions.glob("*.py"))

    ok(fp.flask("ecm", "plan", "rename-column", "users", "name", "full_name"))
    written = sorted(p.name for p in set(versions.glob("*.py")) - before)
    assert sorted(n.split("_ecm_")[1] for n in written) == [f"backfill_{PLAN}.py", f"expand_{PLAN}.py"]
    contracts = list((fp.root / "migrations" / "contracts" / "versions").glob("*.py"))
    assert [p.name.split("_ecm_")[1] for p in contracts] == [f"contract_{PLAN}.py"]
    assert "[ecm_contracts]" in (fp.root / "migrations" / "alembic.ini").read_text()

    # Plain `ecm` cannot run this env.py: one line naming `flask ecm`, exit 2.
    plain = fp.ecm("upgrade", "--phase", "expand", "-c", "migrations/alembic.ini")
    assert plain.returncode == 2, plain.stderr
    assert len(error_lines(plain)) == 1 and "flask ecm" in error_lines(plain)[0], plain.stderr
    assert "Traceback" not in plain.stderr
    with fp.connect() as conn:
        assert "full_name" not in columns(conn, "users")

    v1 = fp.serve("1.0")  # the old version keeps serving through the deploy

    # v2's models map full_name; its readiness check fails until the expand ran.
    fp.models("full_name")
    not_ready = fp.flask("ecm", "check-app", "--json")
    assert not_ready.returncode == 3, not_ready.stderr
    doc = json.loads(not_ready.stdout)
    assert doc["target"] == "app:db" and doc["missing"] == ["column public.users.full_name"]

    # Pre-deploy: Flask-Migrate's own upgrade runs the expand and the backfill.
    ok(fp.flask("db", "upgrade"))
    with fp.connect() as conn:
        assert {"name", "full_name"} <= set(columns(conn, "users"))
        assert conn.execute(
            "SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name"
        ).fetchone() == (0,)

    # Autogenerate sees both shapes but proposes nothing: Migrate(include_object=…) hides the plan's.
    autogen = ok(fp.flask("db", "migrate", "-m", "nothing"))
    assert "No changes in schema detected" in autogen.stderr
    assert len(list(versions.glob("*.py"))) == len(before) + 2

    v2 = fp.serve("2.0")
    held = fp.flask("ecm", "upgrade", "--phase", "contract")
    assert held.returncode == 3, held.stderr
    assert f"contract {PLAN} held" in held.stderr
    assert "1 instance of microblog 1.0 still maps public.users.name" in held.stderr
    with fp.connect() as conn:
        assert "name" in columns(conn, "users")

    fp.stop(v1)  # rollout done: v1 deregisters on SIGTERM
    applied = ok(fp.flask("ecm", "upgrade", "--phase", "contract", "--json"))
    doc = json.loads(applied.stdout)
    assert [c["plan_id"] for c in doc["contracts"]["applied"]] == [PLAN]
    assert doc["contracts"]["held"] == []
    with fp.connect() as conn:
        cols = columns(conn, "users")
        assert "name" not in cols
        assert cols["full_name"][:2] == ("character varying(64)", False)
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (300,)

    # A second plan, from the application's metadata (`db`: no import path), expanded, then aborted.
    second = "rename_users_email_email_address"
    planned = ok(fp.flask("ecm", "plan", "rename-column", "users", "email", "email_address",
                          "--from-metadata", "db", "--json"))  # fmt: skip
    assert json.loads(planned.stdout)["plan_id"] == second
    expanded = ok(fp.flask("ecm", "upgrade", "--phase", "expand", "--json"))
    assert [r["phase"] for r in json.loads(expanded.stdout)["applied"]] == ["expand", "backfill"]
    with fp.connect() as conn:
        assert "email_address" in columns(conn, "users")

    # With a database URL the probe is skipped, and env.py fails when the downgrade runs it.
    plain = fp.ecm("abort", second, "-c", "migrations/alembic.ini", env={"ECM_DATABASE_URL": fp.url})
    assert plain.returncode == 2, plain.stderr
    assert len(error_lines(plain)) == 1 and "flask ecm" in error_lines(plain)[0], plain.stderr
    with fp.connect() as conn:
        assert "email_address" in columns(conn, "users")

    aborted = ok(fp.flask("ecm", "abort", second, "--json"))  # v2 reports, and maps no email_address
    assert json.loads(aborted.stdout)["state"] == "aborted"
    with fp.connect() as conn:
        assert "email_address" not in columns(conn, "users")
    fp.stop(v2)


def test_flask_ecm_without_an_application(tmp_path: Path) -> None:
    env = {k: v for k, v in clean_env().items() if not k.startswith("FLASK_")}
    help_ = subprocess.run(
        [sys.executable, "-m", "flask", "ecm", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert help_.returncode == 0 and "flask ecm" in help_.stdout, help_.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "flask", "ecm", "status"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("ecm: error: cannot load the Flask application:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_multidb_repository_is_refused_before_any_file(tmp_path: Path, database_url: str) -> None:
    root = tmp_path / "microblog"
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text(APP_INIT)
    (root / "microblog.py").write_text(MICROBLOG)
    fp = FlaskProject(root, database_url)
    fp.models("name")
    ok(fp.flask("db", "init", "--multidb"))
    result = fp.flask("ecm", "plan", "rename-column", "users", "name", "full_name")
    assert result.returncode == 2, result.stderr
    assert len(error_lines(result)) == 1 and "multidb" in error_lines(result)[0], result.stderr
    assert list((root / "migrations" / "versions").glob("*.py")) == []
    assert not (root / "migrations" / "contracts").exists()


#: Project shapes, drivers and frameworks: the same on every server version (.ci/run runs them once).
pytestmark = pytest.mark.server_independent
