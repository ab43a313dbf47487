"""examples/async-app: an asyncio service (AsyncEngine on asyncpg, AsyncSession) renamed under traffic.

Version 1 (maps ``accounts.name``) and version 2 (maps ``accounts.full_name``) run as real
processes. HTTP clients (threads here) read, insert and update through each version, half
of the time through the ORM (AsyncSession) and half through Core, while `ecm` runs the
expand, the backfill, a contract refused while version 1 is live, and the applied contract
after version 1 got SIGTERM. Every row has one writer, so every row's final value is known:
nothing may be lost, and no request may fail.

The `ecm` commands find the database only through ``ECM_DATABASE_URL`` (a plain
``postgresql://`` URL); the project's alembic.ini names another database, and its env.py is
Alembic's stock async template, which reads ``sqlalchemy.url``.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import Result, run_ecm
from .project import columns

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "async-app"
PLAN = "rename_accounts_name_full_name"
ROWS = 20_000
PAUSE = 2.0  # seconds of traffic in each phase
APP = "async-accounts"


def base_revision() -> str:
    """The example's revision before the plan (the one `alembic revision --autogenerate` wrote)."""
    for path in (EXAMPLE / "migrations" / "versions").glob("*.py"):
        text = path.read_text()
        if "PLAN_ID" not in text:
            found = re.search(r"^revision: str = '(\w+)'", text, flags=re.M)
            assert found is not None, path
            return found.group(1)
    raise AssertionError("no base revision in examples/async-app")


@dataclass
class Project:
    root: Path
    url: str  # plain postgresql:// URL of the test database

    def ecm(self, *args: str, timeout: float = 300) -> Result:
        return run_ecm(*args, cwd=self.root, env={"ECM_DATABASE_URL": self.url}, timeout=timeout)

    def alembic_base(self) -> None:
        """`alembic upgrade <base>` as a developer would, with an ini naming the test database."""
        ini = self.root / "alembic-test.ini"
        asyncpg_url = self.url.replace("postgresql://", "postgresql+asyncpg://", 1)
        ini.write_text(
            re.sub(
                r"^sqlalchemy\.url = .*$",
                lambda _: "sqlalchemy.url = " + asyncpg_url.replace("%", "%%"),
                (self.root / "alembic.ini").read_text(),
                flags=re.M,
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", base_revision()],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        ini.unlink()


def copy_example(dest: Path, url: str) -> Project:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    ini = dest / "alembic.ini"
    # A database that does not exist: only ECM_DATABASE_URL may lead `ecm` to the test database.
    text = re.sub(
        r"^sqlalchemy\.url = .*$",
        "sqlalchemy.url = postgresql+asyncpg://postgres@127.0.0.1:5432/ecm_no_such_database",
        ini.read_text(),
        flags=re.M,
    )
    ini.write_text(text)
    return Project(dest, url)


# -- the application processes ---------------------------------------------------------------


class App:
    """One `python -m async_accounts` process of one version."""

    def __init__(self, project: Project, version: str) -> None:
        self.version = version
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "async_accounts", "--port", "0", "--heartbeat", "1"],
            cwd=project.root / version,
            env={**os.environ, "DATABASE_URL": project.url, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
        for line in self.proc.stdout:
            if line.startswith("LISTENING "):
                self.port = int(line.split()[1])
                break
        else:
            raise AssertionError(
                f"{version} did not start (exit {self.proc.wait(10)}): {''.join(self.stderr)}"
            )
        threading.Thread(target=self._drain, args=(self.proc.stdout, False), daemon=True).start()

    def _drain(self, stream: Any, keep: bool = True) -> None:
        for line in stream:
            if keep:
                self.stderr.append(line)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            return call(conn, method, path, body)
        finally:
            conn.close()

    def terminate(self) -> int:
        """SIGTERM, as Kubernetes stops a pod: it drains, deregisters, then exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def call(
    conn: http.client.HTTPConnection, method: str, path: str, body: dict[str, Any] | None
) -> tuple[int, Any]:
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@contextmanager
def running(project: Project, version: str) -> Iterator[App]:
    app = App(project, version)
    try:
        yield app
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait(10)


# -- traffic ----------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Client threads for one version: writers own disjoint rows, so the oracle is exact."""

    app: App
    column: str
    owned: list[int]
    label: str
    writers: int = 2
    stop_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    expected: dict[int, str] = field(default_factory=dict)
    inserted: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        chunks = [self.owned[i :: self.writers] for i in range(self.writers)]
        bodies: list[Callable[[http.client.HTTPConnection, int], None]] = [
            *(self._writer(chunk) for chunk in chunks),
            self._inserter,
            self._reader,
        ]
        self.threads = [threading.Thread(target=self._loop, args=(b,), daemon=True) for b in bodies]
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> Traffic:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)
        return self

    def _count(self, op: str) -> None:
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1

    def _error(self, message: str) -> None:
        with self.lock:
            self.errors.append(f"{self.label}: {message}")

    def _loop(self, body: Callable[[http.client.HTTPConnection, int], None]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.app.port, timeout=30)
        n = 0
        while not self.stop_event.is_set():
            n += 1
            try:
                body(conn, n)
            except Exception as exc:
                self._error(f"{type(exc).__name__}: {exc}".splitlines()[0])
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.app.port, timeout=30)
            time.sleep(0.002)
        conn.close()

    def _expect(self, op: str, got: tuple[int, Any], status: int) -> Any:
        self._count(op)
        if got[0] != status:
            raise AssertionError(f"{op} answered {got[0]} {got[1]}")
        return got[1]

    def _writer(self, ids: list[int]) -> Callable[[http.client.HTTPConnection, int], None]:
        rng = random.Random(self.label)

        def body(conn: http.client.HTTPConnection, n: int) -> None:
            row_id = rng.choice(ids)
            via, check = ("orm", "core") if n % 2 else ("core", "orm")
            value = f"{self.label}-{threading.get_ident() % 1000}-{n}"
            doc = self._expect(
                f"update {via}", call(conn, "PUT", f"/accounts/{row_id}?via={via}", {self.column: value}), 200
            )
            assert doc == {"updated": 1}, doc
            with self.lock:
                self.expected[row_id] = value
            # Read your own write through the other path.
            read = self._expect(
                f"read {check}", call(conn, "GET", f"/accounts/{row_id}?via={check}", None), 200
            )
            if read[self.column] != value:
                self._error(f"row {row_id} read {read[self.column]!r} after writing {value!r}")

        return body

    def _inserter(self, conn: http.client.HTTPConnection, n: int) -> None:
        via = "orm" if n % 2 else "core"
        value = f"{self.label}-new-{n}"
        doc = self._expect(
            f"insert {via}", call(conn, "POST", f"/accounts?via={via}", {self.column: value}), 201
        )
        with self.lock:
            self.expected[int(doc["id"])] = value
            self.inserted.append(int(doc["id"]))

    def _reader(self, conn: http.client.HTTPConnection, n: int) -> None:
        after = random.randint(0, ROWS)
        doc = self._expect("list core", call(conn, "GET", f"/accounts?after={after}&limit=20", None), 200)
        if doc["accounts"] and any(a[self.column] is None for a in doc["accounts"]):
            self._error(f"a row after id {after} has no {self.column}")


def instances(url: str) -> list[tuple[str, str, int, bool]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT version, role, pid, deregistered_at IS NOT NULL FROM ecm.instances WHERE app = %s "
            "ORDER BY started_at",
            (APP,),
        ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2]), bool(r[3])) for r in rows]


def test_async_app_renames_under_traffic_with_zero_errors(tmp_path: Path, database_url: str) -> None:
    project = copy_example(tmp_path / "app", database_url)
    project.alembic_base()
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO accounts (name, email) "
            f"SELECT 'seed-' || g, 'seed' || g || '@example.com' FROM generate_series(1, {ROWS}) g"
        )
        db.execute("ANALYZE accounts")
    ids = list(range(1, ROWS + 1))
    timings: dict[str, float] = {}

    def timed(step: str, *args: str) -> Result:
        started = time.monotonic()
        result = project.ecm(*args)
        timings[step] = round(time.monotonic() - started, 2)
        return result

    with running(project, "v1") as v1, running(project, "v2") as v2:
        missing = ["column public.accounts.full_name"]
        assert v1.request("GET", "/healthz") == (200, {"ready": True, "version": "1", "missing": []})
        # Readiness through `await schema_ready(AsyncEngine, ...)`: v2 takes no traffic before the expand.
        assert v2.request("GET", "/healthz") == (503, {"ready": False, "version": "2", "missing": missing})
        check = run_ecm(
            "check-app",
            "async_accounts.models:Base",
            "--json",
            cwd=project.root / "v2",
            env={"ECM_DATABASE_URL": database_url},
        )
        assert check.returncode == 3 and json.loads(check.stdout)["missing"] == missing, check.stderr
        # Both versions registered through the AsyncEngine, as servers.
        assert sorted(v[:2] for v in instances(database_url)) == [("1", "server"), ("2", "server")]

        old = Traffic(v1, "name", ids[0::2], "v1").start()
        time.sleep(PAUSE)
        result = timed("expand", "upgrade", "--phase", "expand")
        assert result.returncode == 0, result.stderr
        assert v2.request("GET", "/healthz") == (200, {"ready": True, "version": "2", "missing": []})
        time.sleep(PAUSE)
        result = timed("backfill", "upgrade", "--phase", "backfill")
        assert result.returncode == 0, result.stderr

        new = Traffic(v2, "full_name", ids[1::2], "v2").start()  # v2 rolls out
        time.sleep(PAUSE)
        held = timed("contract held", "upgrade", "--phase", "contract")
        assert held.returncode == 3, held.stderr
        assert f"1 instance of {APP} 1 still maps public.accounts.name" in held.stderr, held.stderr
        assert f"{APP} 2" not in held.stderr
        with psycopg.connect(database_url, autocommit=True) as db:
            assert "name" in columns(db, "accounts")

        # v1 leaves the load balancer, then gets SIGTERM: it drains and deregisters.
        old.stop()
        assert v1.terminate() == 0, "".join(v1.stderr)
        assert [i[3] for i in instances(database_url) if i[0] == "1"] == [True]
        result = timed("contract", "upgrade", "--phase", "contract")
        assert result.returncode == 0, result.stderr
        time.sleep(PAUSE)  # v2 keeps serving on the contracted table
        new.stop()
        assert v2.request("GET", "/healthz") == (200, {"ready": True, "version": "2", "missing": []})
        assert v2.terminate() == 0, "".join(v2.stderr)

    assert old.errors == [] and new.errors == [], (old.errors[:5], new.errors[:5])
    assert not [line for line in v1.stderr + v2.stderr if line.startswith("ERROR")]
    with psycopg.connect(database_url, autocommit=True) as db:
        assert "name" not in columns(db, "accounts")
        assert db.execute("SELECT phase FROM ecm.plans").fetchall() == [("contracted",)]
        rows = dict(db.execute("SELECT id, full_name FROM accounts").fetchall())
        total = db.execute("SELECT count(*) FROM accounts").fetchone()
    expected = {**old.expected, **new.expected}
    lost = {i: (v, rows.get(i)) for i, v in expected.items() if rows.get(i) != v}
    assert not lost, f"{len(lost)} writes lost, e.g. {list(lost.items())[:5]}"
    assert total == (ROWS + len(old.inserted) + len(new.inserted),)
    assert all(v is not None for v in rows.values())
    for traffic in (old, new):
        assert {op.split()[0] for op in traffic.ops} == {"update", "read", "insert", "list"}
        assert {op.split()[1] for op in traffic.ops} == {"orm", "core"}
    print(
        f"\nasync-app: rows={ROWS} v1 ops={sum(old.ops.values())} {old.ops} v2 ops={sum(new.ops.values())} "
        f"{new.ops} errors={len(old.errors) + len(new.errors)} lost writes={len(lost)} "
        f"rows checked={len(expected)} inserted v1={len(old.inserted)} v2={len(new.inserted)} "
        f"final rows={total[0] if total else None} ecm seconds={timings}"
    )


#: Project shapes, drivers and frameworks: the same on every server version (.ci/run runs them once).
pytestmark = pytest.mark.server_independent
