"""The conformance scenarios every operation goes through, written once.

A :class:`~tests.conformance.cases.Case` says what an operation changes and what old and
new code map; the functions here run it: old and new application versions as real
processes through every phase (each phase run twice), the guard holding and then
passing, abort from each phase, the offline script through psql and squawk, bad input,
and the revisions on other drivers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from ..conftest import Result, knob
from ..project import Project, columns, constraints, indexes, make_project, triggers
from .cases import Case, Side

APP = Path(__file__).with_name("app.py")
ROWS = knob("ECM_CONFORMANCE_ROWS", 2000)
PHASE_S = knob("ECM_CONFORMANCE_PHASE_MS", 1200) / 1000

#: The version a case's ``holder`` reports as (see :meth:`Scenario.traffic`).
HOLDER = "2-nullable"

# Optional knobs a case may carry (a subclass of Case / Side in its case file; absent means
# the default flow). They exist for operations whose contract cannot hurt old code
# (add-column: old code does not know the new column), so old code is not what the guard
# must hold the contract for:
#   Case.holder: Side | None -- a third version, started with new code and stopped before the
#       contract, that maps what the contract breaks (e.g. the new column as nullable); the
#       held contract's reasons must name it (``held_by``).
#   Case.old_through_contract: bool -- old code keeps running through the contract and its
#       re-run, and is stopped last: the contract must not break it.
#   Side.oracle: str | None -- the column this version's writes must be found in at the end
#       (default: the case's ``final_column``).
#   Side.table: str | None -- the table this version maps (default: the case's ``table``;
#       rename-table's new code maps the new name).
#   Case.held: bool -- False for a plan whose contract nothing running can be hurt by (or
#       that has no contract, add-index): the "held" upgrade must then succeed (exit 0).
#   Case.final_table: str | None -- where the oracle reads rows at the end (default ``table``).
#   Side.dropped: bool -- this version's table is dropped by the contract (drop-table): its
#       writes are not looked for at the end, the rows are gone by design; its errors still count.
#   Side.unique: tuple[tuple[str, ...], ...] -- unique keys this version's MetaData declares
#       (``Index(unique=True)``), which its reporter registers (drop-index's guard).
#   Side.key_type: str -- the SQLAlchemy type this version maps the key ``id`` as (default
#       "BigInteger"; bigint-key's old code maps "Integer").


def snapshot(conn: psycopg.Connection[tuple[object, ...]], tables: tuple[str, ...]) -> dict[str, Any]:
    """What a user would compare: columns, constraints, indexes and triggers of each table."""
    return {
        t: {
            "columns": columns(conn, t),
            "constraints": constraints(conn, t),
            "indexes": indexes(conn, t),
            "triggers": triggers(conn, t),
        }
        for t in tables
    }


@dataclass
class Running:
    proc: subprocess.Popen[str]
    out: Path
    started: float

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        assert self.out.is_file(), f"the app exited {self.proc.returncode} without results: {stderr[-2000:]}"
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


@dataclass
class Traffic:
    """What one full run measured, per application version and per phase."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # (name, start, end)
    held: Result | None = None

    def max_wait(self, phase: str) -> float:
        windows = [(a, b) for name, a, b in self.phases if name == phase]
        worst = 0.0
        for result in self.results.values():
            for started, seconds in result["slow"]:
                if any(a <= started <= b for a, b in windows):
                    worst = max(worst, seconds)
        return worst

    def ops(self, version: str) -> int:
        return sum(self.results[version]["ops"].values())

    def errors(self) -> list[str]:
        return [e for r in self.results.values() for e in r["errors"]]

    def error_count(self) -> int:
        return sum(int(r["error_count"]) for r in self.results.values())

    def summary(self, case: Case) -> dict[str, Any]:
        return {
            "operation": case.operation,
            "ops": {v: self.ops(v) for v in self.results},
            "errors": self.error_count(),
            "prepared_errors": sum(int(r.get("prepared_errors", 0)) for r in self.results.values()),
            # Operations by workload: SQLAlchemy Core on AUTOCOMMIT, ORM sessions, child rows.
            "workloads": {
                v: {
                    w: sum(n for label, n in r["ops"].items() if label.startswith(w))
                    for w in ("core", "orm", "child")
                }
                for v, r in self.results.items()
            },
            "max_wait_s": {p: round(self.max_wait(p), 3) for p in ("expand", "backfill", "contract")},
        }


class Scenario:
    """One case in one fresh database and one stock Alembic project."""

    def __init__(self, case: Case, root: Path, url: str) -> None:
        self.case = case
        self.root = root
        self.url = url
        self.project: Project = make_project(root / "app", url)
        with self.connect() as conn:
            conn.execute(case.setup_sql.format(rows=ROWS))
            conn.execute("ANALYZE")
        self.env = {"ECM_LIVE_TTL": "3"}
        #: "engine" (what applications should do) or "url": reporters that cannot pause prepared
        #: statements, whose contract is then forced (benchmarks/prepared_swap.py's control run).
        self.reporter_bind = "engine"

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)

    def ecm(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.project.ecm(*args, env={**self.env, **(env or {})})

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = self.ecm(*args, env=env)
        assert result.returncode == 0, f"ecm {' '.join(args)}: {result.stderr[-3000:]}"
        return result

    def plan(self, *extra: str) -> dict[str, Any]:
        result = self.ok("plan", *self.case.plan, "--json", *extra)
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc

    def snapshot(self) -> dict[str, Any]:
        with self.connect() as conn:
            return snapshot(conn, self.case.tables)

    # -- application processes ----------------------------------------------------------
    def side(self, version: str) -> Side:
        if version == HOLDER:
            holder: Side | None = getattr(self.case, "holder", None)
            assert holder is not None, f"{self.case.operation} has no holder"
            return holder
        return self.case.old if version == "1" else self.case.new

    def start(self, version: str, owned: list[int]) -> Running:
        side = self.side(version)
        out = self.root / f"app-v{version}-{time.monotonic_ns()}.json"
        cfg = {
            "url": self.url,
            "version": version,
            "table": getattr(side, "table", None) or self.case.table,
            "key": "id",
            "key_type": getattr(side, "key_type", "BigInteger"),
            "columns": side.columns,
            "nullable": side.nullable,
            "write": side.write,
            "value": side.value,
            "null_every": side.null_every,
            "insert": side.insert,
            "also": side.also,
            "owned": owned,
            "child": side.child,
            "unique": [list(k) for k in getattr(side, "unique", ())],
            "out": str(out),
            "interval": 1.0,
            "reporter_bind": self.reporter_bind,
        }
        config = out.with_suffix(".config.json")
        config.write_text(json.dumps(cfg))
        proc = subprocess.Popen(
            [sys.executable, str(APP), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        running = Running(proc, out, time.time())
        ready = Path(str(out) + ".ready")
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"v{version} exited {proc.returncode}: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"v{version} never became ready"
            time.sleep(0.05)
        return running

    def phase(self, traffic: Traffic, name: str, *args: str) -> Result:
        started = time.time()
        result = self.ecm(*args)
        traffic.phases.append((name, started, time.time()))
        return result

    def rerun(self, phase: str) -> None:
        """Run a phase's revision again, as after a crash half-way: stamp back, upgrade."""
        files = {f["phase"]: f for f in self.files}
        rev = files[phase]
        if phase == "contract":
            stamp = self.project.alembic(
                "-n",
                "ecm_contracts",
                "stamp",
                f"{rev['revision']}@-1" if rev["down_revision"] else "base",
                "--purge",
            )
            assert stamp.returncode == 0, stamp.stderr
            again = self.ok("upgrade", "--allow-no-reporters")
        else:
            stamp = self.project.alembic("stamp", rev["down_revision"] or "base", "--purge")
            assert stamp.returncode == 0, stamp.stderr
            again = self.ok("upgrade", "--phase", phase)
        del again

    # -- the scenarios ------------------------------------------------------------------
    def traffic(self) -> Traffic:
        """Old and new code through every phase, each phase run twice, the guard in between."""
        doc = self.plan()
        self.files: list[dict[str, Any]] = doc["files"]
        phases = [f["phase"] for f in self.files]
        ids = list(range(1, ROWS + 1))
        traffic = Traffic()
        v1 = self.start("1", ids[0::2])
        time.sleep(PHASE_S)
        for phase in ("expand", "backfill"):
            if phase in phases:
                result = self.phase(traffic, phase, "upgrade", "--phase", phase)
                assert result.returncode == 0, result.stderr[-3000:]
                self.rerun(phase)
                time.sleep(PHASE_S)
        v2 = self.start("2", ids[1::2])
        holder = self.start(HOLDER, []) if getattr(self.case, "holder", None) is not None else None
        old_through = bool(getattr(self.case, "old_through_contract", False))
        time.sleep(PHASE_S)
        held = self.phase(traffic, "held", "upgrade", "--json")
        traffic.held = held
        if holder is not None:
            traffic.results[HOLDER] = holder.stop()
        if not old_through:
            traffic.results["1"] = v1.stop()
        time.sleep(PHASE_S / 2)
        forced = (
            ["--force-contract", doc["plan_id"], "--reason", "control run"]
            if self.reporter_bind == "url"
            else []
        )
        applied = self.phase(traffic, "contract", "upgrade", "--json", *forced)
        assert applied.returncode == 0, applied.stderr[-3000:]
        if "contract" in phases:
            self.rerun("contract")
        time.sleep(PHASE_S)
        traffic.results["2"] = v2.stop()
        if old_through:
            traffic.results["1"] = v1.stop()
        return traffic

    def oracle(self, traffic: Traffic) -> int:
        """Every row holds its writer's last value; returns how many rows were checked."""
        by_column: dict[str, dict[str, Any]] = {}
        for version, result in traffic.results.items():
            if getattr(self.side(version), "dropped", False):
                continue  # its table is gone by design: only its errors count
            column = getattr(self.side(version), "oracle", None) or self.case.final_column
            by_column.setdefault(column, {}).update(result["expected"])
        wrong = {}
        with self.connect() as conn:
            for sql, why in self.case.final_checks:
                assert conn.execute(sql).fetchone() == (0,), why
            for column, expected in by_column.items():
                rows = {
                    str(k): v
                    for k, v in conn.execute(
                        f"SELECT id, {column} FROM {getattr(self.case, 'final_table', None) or self.case.table}"
                    ).fetchall()
                }
                for key, value in expected.items():
                    have = rows.get(key)
                    want = value if value is not None else self.case.null_becomes
                    if have != want and str(have) != str(want):
                        wrong[key] = (want, have)
        assert not wrong, f"{len(wrong)} rows lost their writer's last value, e.g. {list(wrong.items())[:5]}"
        return sum(len(expected) for expected in by_column.values())
