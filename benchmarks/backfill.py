"""What a deploy pipeline waits for: the whole ``ecm upgrade --phase backfill``, against a limit doing the same work.

One run, one server, one machine. Every measurement gets a freshly created database
(``ecm_bench``), a fresh table loaded with ``--rows`` rows and vacuumed, and a CHECKPOINT
just before the timed part. For ``rename-column`` (the default ``--operation``) the table is
``accounts(id bigint generated always as identity primary key, name text not null, email text)``
with an index on ``name``, and the approaches are:

* ``baseline``: the point-update workload alone;
* ``limit_same_indexes``: one ``UPDATE accounts SET full_name = name`` on an identical table
  (``full_name`` added, ``name`` and ``full_name`` both indexed before the UPDATE, no trigger);
* ``limit_index_after``: the same UPDATE with only ``name`` indexed, then
  ``CREATE INDEX CONCURRENTLY`` on ``full_name`` (both parts timed, the sum compared);
* ``peer_fixed_1000``: keyset batches of 1000 rows, one commit each, the dual-write trigger doing
  the copy (``SET name = name``: a GENERATED ALWAYS key refuses pgroll's ``SET id = id``), with
  ``full_name`` indexed before (pgroll builds it in its start phase);
* ``ecm_phase``: a real Alembic project (``alembic init`` + ``ecm init``), ``ecm plan rename-column
  accounts name full_name`` and ``ecm upgrade --phase expand`` applied untimed, then the timed
  process ``ecm upgrade --phase backfill`` with default options. Its JSON log events on stderr
  split it: the engine (``backfill_done``'s ``elapsed_s``; the copy is that minus the index
  builds logged inside it), the index builds (events named ``*index*``, such as ``index_built``,
  when the product logs them), the verification (``backfill_verified``, timed from the event
  before it), the start-up (spawn to the first event) and the rest;
* ``ecm_phase_workers2``: ``ecm backfill PLAN --workers 2`` then ``ecm upgrade --phase backfill``,
  both timed, summed;
* ``insert_heavy``: ``ecm_phase`` while 2 more clients insert rows as fast as they can.

While each runs, ``--clients`` threads update random rows by primary key, ``--think-ms``
apart, and record latency and errors. ``--operation`` runs ``ecm_phase`` and a ``limit`` (one
``UPDATE … SET <the plan's set_sql> WHERE <its pending_sql>`` in one transaction on the table
as the expand left it, the plan's triggers skipped as the engine skips them and the indexes the
backfill phase builds created first) for the other operations with a backfill, each on its own
table. The ecm processes' peak RSS comes from ``wait4``.

    python benchmarks/backfill.py --rows 1000000 --repeat 3
    python benchmarks/backfill.py --rows 1000000 --operation all
    python benchmarks/backfill.py --show benchmarks/results/backfill-1000000.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from expandcontract.sql import trigger

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "ecm_bench"
P99_ALLOWANCE_MS = 100.0  # target: ecm_phase p99 <= baseline p99 + this
RSS_LIMIT_MB = 200.0

RENAME_SCENARIOS = [
    "baseline",
    "limit_same_indexes",
    "limit_index_after",
    "peer_fixed_1000",
    "ecm_phase",
    "ecm_phase_workers2",
    "insert_heavy",
]
OTHER_SCENARIOS = ["limit", "ecm_phase"]
PHASE_SCENARIOS = ("ecm_phase", "ecm_phase_workers2", "insert_heavy")


@dataclass(frozen=True)
class Operation:
    """A table shape and the plan that backfills it."""

    name: str
    create: str  # CREATE TABLE accounts (...)
    load: str  # INSERT … SELECT … FROM generate_series(1, %s) g
    indexes: tuple[str, ...]
    plan: tuple[str, ...]  # arguments of `ecm plan`


BASE_COLUMNS = "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, email text"
BASE_LOAD = (
    "INSERT INTO accounts (name, email) "
    "SELECT 'user number ' || g, 'user' || g || '@example.com' FROM generate_series(1, %s) g"
)
NAME_INDEX = "CREATE INDEX accounts_name_idx ON accounts (name)"

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "rename-column",
            f"CREATE TABLE accounts ({BASE_COLUMNS})",
            BASE_LOAD,
            (NAME_INDEX,),
            ("rename-column", "accounts", "name", "full_name"),
        ),
        Operation(
            "change-type",
            f"CREATE TABLE accounts ({BASE_COLUMNS}, score integer NOT NULL)",
            "INSERT INTO accounts (name, email, score) "
            "SELECT 'user number ' || g, 'user' || g || '@example.com', g %% 100000 "
            "FROM generate_series(1, %s) g",
            (NAME_INDEX, "CREATE INDEX accounts_score_idx ON accounts (score)"),
            ("change-type", "accounts", "score", "bigint"),
        ),
        Operation(
            "add-column",
            f"CREATE TABLE accounts ({BASE_COLUMNS})",
            BASE_LOAD,
            (NAME_INDEX,),
            ("add-column", "accounts", "token", "text", "--default", "gen_random_uuid()::text"),
        ),
        Operation(
            "set-not-null",
            f"CREATE TABLE accounts ({BASE_COLUMNS})",
            "INSERT INTO accounts (name, email) SELECT 'user number ' || g, "
            "CASE WHEN g %% 2 = 0 THEN NULL ELSE 'user' || g || '@example.com' END "
            "FROM generate_series(1, %s) g",
            (NAME_INDEX,),
            ("set-not-null", "accounts", "email", "--fill", "'n/a-' || id"),
        ),
        Operation(
            "split-column",
            f"CREATE TABLE accounts ({BASE_COLUMNS})",
            BASE_LOAD,
            (NAME_INDEX,),
            (
                "split-column",
                "accounts",
                "email",
                "email_user=split_part(email, '@', 1)",
                "email_domain=split_part(email, '@', 2)",
                "--merge",
                "email_user || '@' || email_domain",
            ),
        ),
        Operation(
            "bigint-key",
            "CREATE TABLE accounts (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "name text NOT NULL, email text)",
            BASE_LOAD,
            (NAME_INDEX,),
            ("bigint-key", "accounts"),
        ),
    )
}

# The function and trigger ecm's rename-column expand creates (expandcontract.sql.trigger), for
# the peer: its batches touch every row and this trigger does the copy.
PEER_FUNCTION = trigger.function_sql("public", "peer_sync", "name", "full_name")
PEER_TRIGGER = trigger.trigger_sql("public", "accounts", "peer_sync", "peer_sync", skip_value="peer")
# What ecm's expand adds beside full_name, so the hand-built tables are the same.
RENAME_CHECK = (
    "ALTER TABLE accounts ADD CONSTRAINT accounts_full_name_nn CHECK (full_name IS NOT NULL) NOT VALID"
)


def db_url(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


# --- application traffic -------------------------------------------------------------------


class Workload:
    """Point updates by primary key from a few threads, as an application would send them."""

    def __init__(self, url: str, rows: int, clients: int, think_ms: float, seed: int = 0) -> None:
        self.url, self.rows, self.clients, self.think = url, rows, clients, think_ms / 1000
        self.seed = seed
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        lat: list[float] = []
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET application_name = 'bench workload'")
            while not self.stop.is_set():
                key = rng.randint(1, self.rows)
                t0 = time.perf_counter()
                try:
                    conn.execute("UPDATE accounts SET name = %s WHERE id = %s", [f"renamed {key}", key])
                    lat.append(time.perf_counter() - t0)
                except psycopg.Error as exc:
                    with self.lock:
                        self.errors.append(str(exc).splitlines()[0])
                self.stop.wait(self.think)
        with self.lock:
            self.latencies += lat

    def __enter__(self) -> Workload:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(self.seed * 1000 + i * 7919,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        if not lat:
            return {"updates": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "errors": len(self.errors)}
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
        return {
            "updates": len(lat),
            "p50_ms": round(q[49] * 1000, 2),
            "p99_ms": round(q[98] * 1000, 2),
            "max_ms": round(lat[-1] * 1000, 2),
            "errors": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
        }


class Inserter:
    """Clients inserting rows as fast as they can: transactions of ``batch`` single-row INSERTs."""

    def __init__(self, url: str, clients: int = 2, batch: int = 100) -> None:
        self.url, self.clients, self.batch = url, clients, batch
        self.stop = threading.Event()
        self.inserted = 0
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def _run(self, client: int) -> None:
        done = 0
        n = 0
        with psycopg.connect(self.url) as conn:
            conn.execute("SET application_name = 'bench inserter'")
            conn.commit()
            while not self.stop.is_set():
                rows = [
                    (f"new {client}-{n + i}", f"new{client}-{n + i}@example.com") for i in range(self.batch)
                ]
                n += self.batch
                try:
                    with conn.cursor() as cur:
                        cur.executemany("INSERT INTO accounts (name, email) VALUES (%s, %s)", rows)
                    conn.commit()
                    done += len(rows)
                except psycopg.Error as exc:
                    conn.rollback()
                    with self.lock:
                        self.errors.append(str(exc).splitlines()[0])
        with self.lock:
            self.inserted += done

    def __enter__(self) -> Inserter:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


# --- the database and the project -----------------------------------------------------------


def fresh_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")


def load_table(db: psycopg.Connection[Any], op: Operation, rows: int) -> None:
    db.execute(op.create)  # type: ignore[arg-type]
    db.execute(op.load, [rows])  # type: ignore[arg-type]
    for sql in op.indexes:
        db.execute(sql)  # type: ignore[arg-type]
    db.execute("VACUUM (ANALYZE) accounts")


def index_names(db: psycopg.Connection[Any]) -> list[str]:
    rows = db.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'accounts'::regclass ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def ecm_command() -> list[str]:
    exe = Path(sys.executable).parent / "ecm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "expandcontract"]


@dataclass
class Spawned:
    code: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mb: float
    started_at: float  # epoch seconds, to compare with the events' timestamps

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events on stderr (stderr is not a TTY, so ecm logs JSON)."""
        out = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


class Project:
    """A stock ``alembic init`` project bound to the benchmark database, copied fresh per run."""

    def __init__(self, template: Path, work: Path, url: str) -> None:
        self.root = work
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(template, work)
        ini = work / "alembic.ini"
        lines = []
        for line in ini.read_text().splitlines():
            if line.startswith("sqlalchemy.url"):
                psy = url.replace("postgresql://", "postgresql+psycopg://", 1).replace("%", "%%")
                line = f"sqlalchemy.url = {psy}"
            lines.append(line)
        ini.write_text("\n".join(lines) + "\n")
        self.env = {**os.environ, "ECM_DATABASE_URL": url, "ECM_LOG_FORMAT": "json"}

    @staticmethod
    def template(directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "alembic", "init", "migrations"],
            cwd=directory,
            check=True,
            capture_output=True,
        )
        return directory

    def spawn(self, *args: str) -> Spawned:
        """Run ``ecm ARGS`` in the project; wall time and peak RSS from ``wait4``."""
        with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
            started_at = time.time()
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [*ecm_command(), *args], cwd=self.root, env=self.env, stdout=out_f, stderr=err_f
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait
            out_f.seek(0)
            err_f.seek(0)
            return Spawned(
                proc.returncode,
                out_f.read(),
                err_f.read(),
                wall,
                round(usage.ru_maxrss / 1024, 1),
                started_at,
            )

    def ok(self, *args: str) -> Spawned:
        res = self.spawn(*args)
        if res.code != 0:
            raise SystemExit(f"ecm {' '.join(args)} failed ({res.code}):\n{res.stderr[-3000:]}")
        return res


# --- one measurement ------------------------------------------------------------------------


@dataclass
class Context:
    admin_url: str
    url: str
    rows: int
    clients: int
    think_ms: float
    baseline_s: float
    template: Path
    work: Path


def checkpoint(db: psycopg.Connection[Any]) -> list[float]:
    db.execute("CHECKPOINT")
    return [round(x, 2) for x in os.getloadavg()]


def out_of_step(db: psycopg.Connection[Any], mismatch_sql: str) -> int:
    row = db.execute(f"SELECT count(*) FROM accounts WHERE {mismatch_sql}").fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else -1


def plan_spec(db: psycopg.Connection[Any], plan_id: str) -> dict[str, Any]:
    row = db.execute("SELECT spec FROM ecm.plans WHERE plan_id = %s", [plan_id]).fetchone()
    if row is None or not (row[0] or {}).get("backfill"):
        raise SystemExit(f"plan {plan_id} has no backfill spec in ecm.plans")
    return dict(row[0]["backfill"])


def expanded_project(ctx: Context, db: psycopg.Connection[Any], op: Operation) -> tuple[Project, str]:
    """Table loaded, plan written, expand applied: what the timed backfill phase starts from."""
    load_table(db, op, ctx.rows)
    project = Project(ctx.template, ctx.work / "project", ctx.url)
    project.ok("init")
    plan_id = json.loads(project.ok("plan", *op.plan, "--json").stdout)["plan_id"]
    project.ok("upgrade", "--phase", "expand")
    return project, plan_id


def _ts(e: dict[str, Any]) -> float | None:
    raw = e.get("timestamp")
    try:
        return datetime.fromisoformat(str(raw)).timestamp() if raw else None
    except ValueError:
        return None


def split_events(procs: list[Spawned]) -> dict[str, Any]:
    """Engine, index-build and verification seconds from the JSON log events of each process.

    ``engine_s`` is what ``backfill_done`` reports (``elapsed_s``); index builds logged before
    it (``index_build_s`` in it, or ``*index*`` events between ``backfill_start`` and it) are
    inside that figure, so ``copy_s`` is the engine without them. The verification is timed
    from the event before ``backfill_verified`` to it; ``startup_s`` is from the spawn to the
    first event (imports, the project, Alembic), ``tail_s`` from the last event to the exit.
    """
    engine = copy = verify = index = startup = tail = 0.0
    rows_done = rows_updated = batches = 0
    index_events: list[str] = []
    saw_done = saw_verified = False
    for proc in procs:
        events = proc.events()
        stamps = [t for t in (_ts(e) for e in events) if t is not None]
        if stamps:
            startup += stamps[0] - proc.started_at
            tail += proc.started_at + proc.wall_s - stamps[-1]
        prev: float | None = None
        index_start: float | None = None
        index_in_run = 0.0  # index seconds logged since the last backfill_start
        for e in events:
            name = str(e.get("event", ""))
            t = _ts(e)
            if name == "backfill_start":
                index_in_run = 0.0
            elif name == "backfill_done":
                saw_done = True
                took = float(e.get("elapsed_s") or 0.0)
                inside = float(e["index_build_s"]) if "index_build_s" in e else index_in_run
                engine += took
                copy += took - inside
                rows_done += int(e.get("rows_done") or 0)
                rows_updated += int(e.get("rows_updated") or 0)
                batches += int(e.get("batches") or 0)
            elif name == "backfill_verified":
                # The event says how long it took (since issue 12); older ones are timed from the
                # event before it, and a process whose first event this is leaves it in start-up.
                if "elapsed_s" in e:
                    saw_verified = True
                    verify += float(e["elapsed_s"])
                    if prev is None:  # it was counted in start-up: take it out
                        startup -= float(e["elapsed_s"])
                elif t is not None and prev is not None:
                    saw_verified = True
                    verify += t - prev
            elif "index" in name:
                index_events.append(name)
                if name.endswith(("_start", "_started", "_building")):
                    index_start = t
                else:
                    took = next((e[k] for k in ("seconds", "elapsed_s", "duration_s") if k in e), None)
                    since = index_start if index_start is not None else prev
                    if took is None and t is not None and since is not None:
                        took = t - since
                    index += float(took or 0.0)
                    index_in_run += float(took or 0.0)
                    index_start = None
            if t is not None and name != "backfill_progress":
                prev = t
    return {
        "engine_s": round(engine, 3) if saw_done else None,
        "copy_s": round(copy, 3) if saw_done else None,
        "rows_done": rows_done,
        "rows_updated": rows_updated,
        "batches": batches,
        "index_s": round(index, 3) if index_events else None,
        "index_events": index_events,
        "verify_s": round(verify, 3) if saw_verified else None,
        "startup_s": round(startup, 3),
        "tail_s": round(tail, 3),
    }


def slim(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The raw events worth keeping in the results (progress lines dropped)."""
    return [e for e in events if e.get("event") != "backfill_progress"]


def run_ecm_phase(
    ctx: Context, db: psycopg.Connection[Any], op: Operation, *, workers2: bool = False, inserts: bool = False
) -> dict[str, Any]:
    project, plan_id = expanded_project(ctx, db, op)
    spec = plan_spec(db, plan_id)
    before = index_names(db)
    r: dict[str, Any] = {"plan_id": plan_id, "indexes_before": before}
    r["loadavg_before"] = checkpoint(db)
    ins = Inserter(ctx.url) if inserts else None
    with Workload(ctx.url, ctx.rows, ctx.clients, ctx.think_ms) as wl:
        if ins is not None:
            ins.__enter__()
        try:
            time.sleep(0.5)
            procs: list[tuple[str, Spawned]] = []
            if workers2:
                procs.append(("backfill", project.spawn("backfill", plan_id, "--workers", "2", "--json")))
            procs.append(("upgrade", project.spawn("upgrade", "--phase", "backfill", "--json")))
        finally:
            if ins is not None:
                ins.__exit__()
    for what, res in procs:
        if res.code != 0:
            raise SystemExit(f"{op.name}: ecm {what} failed ({res.code}):\n{res.stderr[-3000:]}")
    r.update(split_events([res for _, res in procs]))
    r["seconds"] = round(sum(res.wall_s for _, res in procs), 3)
    r["parts_s"] = {what: round(res.wall_s, 3) for what, res in procs}
    r["peak_rss_mb"] = max(res.peak_rss_mb for _, res in procs)
    # Everything but the copy, the index builds, the verification and the start-up: Alembic
    # reading the project, the ledger, the shape checks, the exit.
    known = sum(x for x in (r["copy_s"], r["index_s"], r["verify_s"], r["startup_s"]) if x is not None)
    r["other_s"] = round(r["seconds"] - known, 3)
    r["report"] = json.loads(procs[-1][1].stdout or "{}").get("backfills")
    r["events"] = slim([e for _, res in procs for e in res.events()])
    r["workload"] = wl.summary()
    if ins is not None:
        r["rows_inserted"] = ins.inserted
        r["insert_errors"] = len(ins.errors)
        r["first_insert_error"] = ins.errors[0] if ins.errors else None
    r["indexes_after"] = index_names(db)
    r["out_of_step_after"] = out_of_step(db, spec["mismatch_sql"])
    r["rows"] = ctx.rows
    return r


def run_generic_limit(ctx: Context, db: psycopg.Connection[Any], op: Operation) -> dict[str, Any]:
    """One UPDATE doing the backfill's work on the table as the expand left it.

    The plan's triggers stay (the workload's updates need them: the expand's NOT VALID checks
    on the new columns are enforced on every write), and the UPDATE skips them the way the
    engine's batches do (``ecm.backfill`` set to the plan's skip value), so the trigger costs
    the limit what it costs ecm. The indexes the backfill phase builds are built first.
    """
    _, plan_id = expanded_project(ctx, db, op)
    spec = plan_spec(db, plan_id)
    for ix in spec.get("indexes") or ():
        db.execute(ix["step"]["sql"])
    sql = f"UPDATE accounts SET {spec['set_sql']} WHERE {spec['pending_sql']}"
    skip = spec.get("skip_value") or "on"
    r: dict[str, Any] = {"sql": sql, "skip_value": skip, "indexes_before": index_names(db)}
    r["loadavg_before"] = checkpoint(db)
    with Workload(ctx.url, ctx.rows, ctx.clients, ctx.think_ms) as wl:
        time.sleep(0.5)
        t0 = time.perf_counter()
        with db.transaction():
            db.execute("SELECT set_config('ecm.backfill', %s, true)", [skip])
            cur = db.execute(sql)  # type: ignore[arg-type]
        r["seconds"] = round(time.perf_counter() - t0, 3)
    r["rows_changed"] = cur.rowcount
    r["workload"] = wl.summary()
    r["indexes_after"] = index_names(db)
    r["out_of_step_after"] = out_of_step(db, spec["mismatch_sql"])
    r["rows"] = ctx.rows
    return r


def rename_table(
    db: psycopg.Connection[Any], ctx: Context, *, full_name_index: bool, peer: bool = False
) -> None:
    load_table(db, OPERATIONS["rename-column"], ctx.rows)
    db.execute("ALTER TABLE accounts ADD COLUMN full_name text")
    if peer:  # the trigger keeps full_name set; without it the workload's updates would break the check
        db.execute(PEER_FUNCTION)
        db.execute(PEER_TRIGGER)
        db.execute(RENAME_CHECK)
    if full_name_index:
        db.execute("CREATE INDEX accounts_full_name_idx ON accounts (full_name)")


RENAME_MISMATCH = "full_name IS DISTINCT FROM name"


def run_limit(ctx: Context, db: psycopg.Connection[Any], *, index_after: bool) -> dict[str, Any]:
    rename_table(db, ctx, full_name_index=not index_after)
    r: dict[str, Any] = {"indexes_before": index_names(db)}
    r["loadavg_before"] = checkpoint(db)
    with Workload(ctx.url, ctx.rows, ctx.clients, ctx.think_ms) as wl:
        time.sleep(0.5)
        t0 = time.perf_counter()
        cur = db.execute("UPDATE accounts SET full_name = name")
        r["update_s"] = round(time.perf_counter() - t0, 3)
        if index_after:
            t1 = time.perf_counter()
            db.execute("CREATE INDEX CONCURRENTLY accounts_full_name_idx ON accounts (full_name)")
            r["index_s"] = round(time.perf_counter() - t1, 3)
    r["seconds"] = round(r["update_s"] + r.get("index_s", 0.0), 3)
    r["rows_changed"] = cur.rowcount
    r["workload"] = wl.summary()
    r["indexes_after"] = index_names(db)
    r["out_of_step_after"] = out_of_step(db, RENAME_MISMATCH)
    r["rows"] = ctx.rows
    return r


def run_peer(ctx: Context, db: psycopg.Connection[Any]) -> dict[str, Any]:
    rename_table(db, ctx, full_name_index=True, peer=True)
    r: dict[str, Any] = {"indexes_before": index_names(db)}
    r["loadavg_before"] = checkpoint(db)
    last, rows, batches = 0, 0, 0
    with Workload(ctx.url, ctx.rows, ctx.clients, ctx.think_ms) as wl:
        time.sleep(0.5)
        t0 = time.perf_counter()
        while True:
            row = db.execute(
                "WITH b AS (SELECT id FROM accounts WHERE id > %s ORDER BY id LIMIT 1000 FOR NO KEY UPDATE), "
                "u AS (UPDATE accounts SET name = accounts.name FROM b WHERE accounts.id = b.id "
                "RETURNING accounts.id) SELECT max(id), count(*) FROM u",
                [last],
            ).fetchone()
            if row is None or row[0] is None:
                break
            last = int(row[0])
            rows += int(row[1])
            batches += 1
        r["seconds"] = round(time.perf_counter() - t0, 3)
    r.update(rows_changed=rows, batches=batches, workload=wl.summary())
    r["out_of_step_after"] = out_of_step(db, RENAME_MISMATCH)
    r["rows"] = ctx.rows
    return r


def run_baseline(ctx: Context, db: psycopg.Connection[Any]) -> dict[str, Any]:
    load_table(db, OPERATIONS["rename-column"], ctx.rows)
    r: dict[str, Any] = {"loadavg_before": checkpoint(db)}
    with Workload(ctx.url, ctx.rows, ctx.clients, ctx.think_ms) as wl:
        time.sleep(ctx.baseline_s)
    r["seconds"] = 0.0
    r["workload"] = wl.summary()
    return r


def run_one(ctx: Context, op: Operation, scenario: str) -> dict[str, Any]:
    fresh_database(ctx.admin_url)
    with psycopg.connect(ctx.url, autocommit=True) as db:
        if scenario == "baseline":
            return run_baseline(ctx, db)
        if scenario == "limit_same_indexes":
            return run_limit(ctx, db, index_after=False)
        if scenario == "limit_index_after":
            return run_limit(ctx, db, index_after=True)
        if scenario == "peer_fixed_1000":
            return run_peer(ctx, db)
        if scenario == "limit":
            return run_generic_limit(ctx, db, op)
        if scenario == "ecm_phase":
            return run_ecm_phase(ctx, db, op)
        if scenario == "ecm_phase_workers2":
            return run_ecm_phase(ctx, db, op, workers2=True)
        if scenario == "insert_heavy":
            return run_ecm_phase(ctx, db, op, inserts=True)
    raise SystemExit(f"unknown scenario {scenario}")


# --- summary, targets, table ----------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each figure over the repetitions, and the per-run values."""
    s: dict[str, Any] = {"runs": len(runs)}
    for key in (
        "seconds",
        "rows_done",
        "rows_updated",
        "engine_s",
        "copy_s",
        "index_s",
        "verify_s",
        "startup_s",
        "other_s",
        "update_s",
        "peak_rss_mb",
    ):
        if any(r.get(key) is not None for r in runs):
            s[key] = median([r.get(key) for r in runs])
    for key in ("rows_inserted",):
        if any(key in r for r in runs):
            s[key] = median([r.get(key) for r in runs])
    for key in ("p50_ms", "p99_ms", "max_ms"):
        m = median([r["workload"].get(key) for r in runs])
        s[key] = round(m, 2) if m is not None else None
    s["errors"] = max(r["workload"]["errors"] for r in runs)
    s["runs_seconds"] = [r.get("seconds") for r in runs]
    s["runs_p99_ms"] = [r["workload"].get("p99_ms") for r in runs]
    s["out_of_step_after"] = max((r.get("out_of_step_after") or 0) for r in runs)
    if s.get("seconds"):
        s["rows_per_s"] = round(runs[0]["rows"] / s["seconds"]) if runs[0].get("rows") else None
    return s


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def paired(limit: list[Any], approach: list[Any]) -> list[float]:
    """Per-repetition speed-ups (limit seconds / approach seconds): run i against run i."""
    return [round(a / b, 3) for a, b in zip(limit, approach, strict=False) if a and b]


def target(
    name: str, value: float | None, threshold: float, per_run: list[float], higher: bool = True
) -> dict[str, Any]:
    met = value is not None and (value >= threshold if higher else value <= threshold)
    t: dict[str, Any] = {
        "target": name,
        "value": value,
        "threshold": threshold,
        "met": met,
        "per_run": per_run,
    }
    if value is not None and len(per_run) > 1:
        spread = round(max(per_run) - min(per_run), 3)
        margin = round(abs(value - threshold), 3)
        t["spread"], t["margin"] = spread, margin
        t["within_noise"] = spread > margin
    return t


def evaluate(results: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Ratios of the ecm approaches to the limits and the peer, and the issue's targets."""
    ratios: dict[str, Any] = {}
    refs = ("limit_same_indexes", "limit_index_after", "peer_fixed_1000", "limit")
    for name in PHASE_SCENARIOS:
        if name not in results:
            continue
        ratios[name] = {}
        for ref in refs:
            if ref in results:
                ratios[name][f"vs_{ref}"] = ratio(results[ref].get("seconds"), results[name].get("seconds"))
                ratios[name][f"vs_{ref}_runs"] = paired(
                    results[ref]["runs_seconds"], results[name]["runs_seconds"]
                )
    if "insert_heavy" in results and "ecm_phase" in results:
        ratios["insert_heavy"]["slowdown_vs_ecm_phase"] = ratio(
            results["insert_heavy"].get("seconds"), results["ecm_phase"].get("seconds")
        )
    targets: list[dict[str, Any]] = []
    phase = ratios.get("ecm_phase", {})
    if "vs_limit_same_indexes" in phase:
        targets.append(
            target(
                "ecm_phase >= 1.0x limit_same_indexes",
                phase["vs_limit_same_indexes"],
                1.0,
                phase["vs_limit_same_indexes_runs"],
            )
        )
    w2 = ratios.get("ecm_phase_workers2", {})
    if "vs_limit_same_indexes" in w2:
        targets.append(
            target(
                "ecm_phase_workers2 >= 1.5x limit_same_indexes",
                w2["vs_limit_same_indexes"],
                1.5,
                w2["vs_limit_same_indexes_runs"],
            )
        )
    if "vs_peer_fixed_1000" in phase:
        targets.append(
            target(
                "ecm_phase >= 1.3x peer_fixed_1000",
                phase["vs_peer_fixed_1000"],
                1.3,
                phase["vs_peer_fixed_1000_runs"],
            )
        )
    if "vs_limit" in phase:
        targets.append(target("ecm_phase >= 1.0x limit", phase["vs_limit"], 1.0, phase["vs_limit_runs"]))
    if "ecm_phase" in results and "baseline" in results:
        base = results["baseline"].get("p99_ms")
        p99 = results["ecm_phase"].get("p99_ms")
        over = round(p99 - base, 2) if p99 is not None and base is not None else None
        per_run = [
            round(a["workload"]["p99_ms"] - b["workload"]["p99_ms"], 2)
            for a, b in zip(runs["ecm_phase"], runs["baseline"], strict=False)
            if a["workload"]["p99_ms"] is not None and b["workload"]["p99_ms"] is not None
        ]
        targets.append(
            target("ecm_phase p99 - baseline p99 <= 100 ms", over, P99_ALLOWANCE_MS, per_run, higher=False)
        )
        targets.append(
            target("ecm_phase workload errors == 0", results["ecm_phase"]["errors"], 0, [], higher=False)
        )
    all_rss = [r["peak_rss_mb"] for n in PHASE_SCENARIOS for r in runs.get(n, []) if r.get("peak_rss_mb")]
    if all_rss:
        targets.append(
            target("ecm peak RSS < 200 MB (largest run)", max(all_rss), RSS_LIMIT_MB, [], higher=False)
        )
        targets[-1]["met"] = max(all_rss) < RSS_LIMIT_MB
    return {"ratios": ratios, "targets": targets}


def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def render_v1(doc: dict[str, Any]) -> str:
    """A results file of the previous version of this script (engine-only timings)."""
    lines = [
        f"backfill of {doc['rows']:,} rows (previous version of this script: the engine's own time, "
        f"not the whole phase), PostgreSQL {doc['server_version']}, {doc['cpus']} CPUs, "
        f"median of {doc.get('repeat', 1)} run(s)",
        "",
        "| approach | seconds | rows/s | vs limit | vs peer | wall s | p50 ms | p99 ms | max ms | errors "
        "| peak RSS MB |",
        "|---|" + "---:|" * 10,
    ]
    for name, r in doc["results"].items():
        w = r["workload"]
        cells = [
            fmt(r.get("seconds"), ".2f"),
            fmt(r.get("rows_per_s"), ","),
            fmt(r.get("vs_limit"), ".2f"),
            fmt(r.get("vs_peer"), ".2f"),
            fmt(r.get("wall_seconds"), ".2f"),
            fmt(w.get("p50_ms")),
            fmt(w.get("p99_ms")),
            fmt(w.get("max_ms")),
            str(w.get("errors")),
            fmt(r.get("peak_rss_mb")),
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", *(f"- target {k}: {'met' if ok else 'MISSED'}" for k, ok in doc.get("targets", {}).items())]
    return "\n".join(lines)


def render(doc: dict[str, Any]) -> str:
    """The results as markdown, from a results document (also for ``--show``)."""
    if "operations" not in doc:
        return render_v1(doc)
    lines = [
        f"backfill phase, {doc['rows']:,} rows, PostgreSQL {doc['server_version']}, {doc['cpus']} CPUs, "
        f"{doc['clients']} workload clients, medians of {doc['repeat']} interleaved run(s) "
        "(targets judged on the medians; speed-up = limit seconds / approach seconds)",
    ]
    for opname, od in doc["operations"].items():
        res, ev = od["results"], od["evaluation"]
        ratios = ev["ratios"]
        lines += ["", f"### {opname}", ""]
        refs = [
            r for r in ("limit_same_indexes", "limit_index_after", "peer_fixed_1000", "limit") if r in res
        ]
        head = "| approach | seconds | rows/s | " + " | ".join(f"vs {r}" for r in refs)
        lines += [
            head + " | p50 ms | p99 ms | max ms | errors |",
            "|---|" + "---:|" * (len(refs) + 6),
        ]
        for name, s in res.items():
            rt = ratios.get(name, {})
            vs = " | ".join(fmt(rt.get(f"vs_{r}"), ".2f") for r in refs)
            secs = "-" if name == "baseline" else fmt(s.get("seconds"), ".2f")
            lines.append(
                f"| {name} | {secs} | {fmt(s.get('rows_per_s'), ',')} | {vs} | {fmt(s.get('p50_ms'))} "
                f"| {fmt(s.get('p99_ms'))} | {fmt(s.get('max_ms'))} | {s['errors']} |"
            )
        ecm = [n for n in PHASE_SCENARIOS if n in res]
        if ecm:
            lines += [
                "",
                "| approach | whole s | engine s | copy s | index s | verify s | start-up s | other s "
                "| rows done | rows updated | peak RSS MB |",
                "|---|" + "---:|" * 10,
            ]
            for name in ecm:
                s = res[name]
                cells = [
                    fmt(s.get(k), ".2f")
                    for k in ("seconds", "engine_s", "copy_s", "index_s", "verify_s", "startup_s", "other_s")
                ]
                lines.append(
                    f"| {name} | {' | '.join(cells)} | {fmt(s.get('rows_done'), ',.0f')} "
                    f"| {fmt(s.get('rows_updated'), ',.0f')} | {fmt(s.get('peak_rss_mb'))} |"
                )
        lines.append("")
        if "limit_index_after" in res:
            li = res["limit_index_after"]
            lines.append(
                f"- limit_index_after = UPDATE {fmt(li.get('update_s'), '.2f')} s + CREATE INDEX CONCURRENTLY "
                f"{fmt(li.get('index_s'), '.2f')} s = {fmt(li.get('seconds'), '.2f')} s"
            )
        if "insert_heavy" in res:
            ih = res["insert_heavy"]
            lines.append(
                f"- insert_heavy: {fmt(ih.get('rows_inserted'), ',.0f')} rows inserted by 2 clients during the phase; "
                f"phase {fmt(ih.get('seconds'), '.2f')} s against {fmt(res.get('ecm_phase', {}).get('seconds'), '.2f')} s "
                f"without them ({fmt(ratios.get('insert_heavy', {}).get('slowdown_vs_ecm_phase'), '.2f')}x)"
            )
        for note in od.get("notes", []):
            lines.append(f"- note: {note}")
        for t in ev["targets"]:
            line = f"- target {t['target']}: {'met' if t['met'] else 'MISSED'} ({fmt(t['value'])}"
            line += f"; runs {', '.join(fmt(x) for x in t['per_run'])})" if len(t["per_run"]) > 1 else ")"
            if t.get("within_noise"):
                line += (
                    f" -- the spread between runs ({t['spread']}) is bigger than the margin that decides it "
                    f"({t['margin']}): within the noise"
                )
            lines.append(line)
        lines += [
            "",
            "| approach | runs (s) | spread | runs p99 ms | load avg before (1 min) |",
            "|---|---|---:|---|---|",
        ]
        for name, rs in od["runs"].items():
            secs = [r.get("seconds") for r in rs]
            spread = "-"
            valid = [x for x in secs if x]
            if len(valid) > 1:
                spread = f"{(max(valid) - min(valid)) / statistics.median(valid) * 100:.0f}%"
            lines.append(
                f"| {name} | {', '.join(fmt(x, '.2f') for x in secs)} | {spread} "
                f"| {', '.join(fmt(r['workload'].get('p99_ms')) for r in rs)} "
                f"| {', '.join(fmt((r.get('loadavg_before') or [None])[0]) for r in rs)} |"
            )
    return "\n".join(lines)


def notes(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Facts the reader of a ratio needs: unequal indexes, rows left out of step, missing events."""
    out = []
    reference: list[str] = []  # the indexes the limit had when its UPDATE ended
    if runs.get("limit_same_indexes"):
        reference = runs["limit_same_indexes"][0].get("indexes_after", [])
    elif runs.get("limit"):
        reference = runs["limit"][0].get("indexes_before", [])
    for name in PHASE_SCENARIOS:
        for i, r in enumerate(runs.get(name, [])):
            missing = [ix for ix in reference if ix not in r["indexes_after"]]
            if missing:
                out.append(f"{name} run {i + 1} ended without {', '.join(missing)}, which the limit had")
            if r.get("index_s") is None and any(
                "full_name" in ix for ix in set(r["indexes_after"]) - set(r["indexes_before"])
            ):
                out.append(f"{name} run {i + 1} built an index but logged no *index* event (index s unknown)")
            if r.get("verify_s") is None:
                out.append(
                    f"{name} run {i + 1}: verification not timed (no backfill_verified event, or no "
                    "event before it in its process: then it is inside start-up)"
                )
    for name, rs in runs.items():
        if name.startswith("limit"):  # no trigger: the workload's later updates are not copied
            continue
        for i, r in enumerate(rs):
            if r.get("out_of_step_after"):
                out.append(f"{name} run {i + 1} left {r['out_of_step_after']} rows out of step")
    return sorted(set(out))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ECM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help=f"Server to use; a database {DATABASE} is (re)created on it for every measurement.",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--operation",
        default="rename-column",
        help="rename-column (every approach), one of "
        + ", ".join(list(OPERATIONS)[1:])
        + " (limit and ecm_phase), a comma-separated list, or all.",
    )
    parser.add_argument(
        "--scenarios", default=",".join(RENAME_SCENARIOS), help="rename-column approaches to run."
    )
    parser.add_argument("--clients", type=int, default=3, help="Workload threads.")
    parser.add_argument("--think-ms", type=float, default=10.0, help="Pause between a client's updates.")
    parser.add_argument("--baseline-seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=1, help="Interleaved repetitions; medians reported.")
    parser.add_argument(
        "--out", default=None, help="JSON output (default benchmarks/results/backfill-<rows>.json)"
    )
    parser.add_argument("--show", metavar="JSON", help="Print the table of an earlier run and exit.")
    args = parser.parse_args()
    if args.show:
        print(render(json.loads(Path(args.show).read_text())))
        return 0
    names = list(OPERATIONS) if args.operation == "all" else [x for x in args.operation.split(",") if x]
    unknown = [n for n in names if n not in OPERATIONS]
    if unknown:
        parser.error(f"unknown --operation {', '.join(unknown)} (choose from {', '.join(OPERATIONS)} or all)")
    rename_scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in rename_scenarios if s not in RENAME_SCENARIOS]
    if bad:
        parser.error(f"unknown --scenarios {', '.join(bad)} (choose from {', '.join(RENAME_SCENARIOS)})")
    plan = {n: (rename_scenarios if n == "rename-column" else OTHER_SCENARIOS) for n in names}
    if "rename-column" not in names:  # the p99 target needs the workload alone
        plan[names[0]] = ["baseline", *plan[names[0]]]
    out_path = Path(args.out or ROOT / "benchmarks" / "results" / f"backfill-{args.rows}.json")

    with psycopg.connect(args.database_url, autocommit=True) as admin:
        server = admin.execute("SHOW server_version").fetchone()
        settings = dict(
            admin.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('shared_buffers', 'max_wal_size', 'autovacuum', 'synchronous_commit', 'wal_level')"
            ).fetchall()
        )
    url = db_url(args.database_url, DATABASE)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in names}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="ecm-bench-") as tmp:
        ctx = Context(
            args.database_url,
            url,
            args.rows,
            args.clients,
            args.think_ms,
            args.baseline_seconds,
            Project.template(Path(tmp) / "template"),
            Path(tmp),
        )
        for rep in range(args.repeat):
            for opname in names:
                op = OPERATIONS[opname]
                for scenario in plan[opname]:
                    tag = f"[{rep + 1}/{args.repeat}] {opname} {scenario}"
                    print(f"{tag} ...", file=sys.stderr)
                    r = run_one(ctx, op, scenario)
                    runs[opname].setdefault(scenario, []).append(r)
                    w = r["workload"]
                    print(
                        f"{tag}: {r['seconds']:.2f} s, p99 {w['p99_ms']} ms, {w['errors']} errors"
                        + (f", engine {r['engine_s']} s" if r.get("engine_s") is not None else ""),
                        file=sys.stderr,
                    )
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

    operations: dict[str, Any] = {}
    for opname in names:
        oruns = runs[opname]
        if "baseline" not in oruns:  # the baseline ran once per repetition, with another operation
            for other in runs.values():
                if "baseline" in other:
                    oruns = {"baseline": other["baseline"], **oruns}
        results = {name: summarize(rs) for name, rs in oruns.items()}
        operations[opname] = {
            "results": results,
            "evaluation": evaluate(results, oruns),
            "notes": notes(oruns),
            "runs": oruns,
        }
    doc = {
        "format": 2,
        "rows": args.rows,
        "server_version": server[0] if server else None,
        "server_settings": settings,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "clients": args.clients,
        "think_ms": args.think_ms,
        "repeat": args.repeat,
        "started_at": started,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "operations": operations,
    }
    print(render(doc))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
