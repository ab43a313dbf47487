"""A tiny simulated application for ``ecm demo``, one OS process per instance.

Version 1 maps ``accounts.name``, version 2 maps ``accounts.full_name``; each touches
only its own column, exactly as two deploys of real code would. The process is real so
that the demo's "stop version 1" is a real SIGTERM handled the way a web server's
shutdown hook would: finish the request in flight, deregister, report, exit 0.

    python -m expandcontract.demo.app --version 1 --url postgresql://... --workdir DIR --instance 0

The orchestrator names the current phase in ``DIR/phase``; every request is counted
under the phase it started in, so the summary can say what each phase cost the
application. On exit the counters go to ``DIR/stats-v<version>-<instance>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import APP_NAME, NEW_COLUMN, OLD_COLUMN, TABLE

if TYPE_CHECKING:
    from sqlalchemy import MetaData, Table
    from sqlalchemy.engine import Connection, Engine

#: Heartbeat period. Short enough to show liveness; long enough (TTL 6 s) that a loaded CI
#: machine delaying one heartbeat cannot make version 1 look gone while it still serves.
INTERVAL_S = 2.0
#: How many error messages a process keeps verbatim; the count is always exact.
ERROR_SAMPLES = 5


def column_for(version: str) -> str:
    return OLD_COLUMN if version == "1" else NEW_COLUMN


def metadata_for(version: str) -> MetaData:
    """What this version's code maps; the reporter registers exactly this."""
    from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text

    md = MetaData()
    Table(
        TABLE,
        md,
        Column("id", BigInteger, primary_key=True),
        Column(column_for(version), Text, nullable=False),
        Column("email", Text),
        Column("balance", Integer, nullable=False),
    )
    return md


@dataclass
class PhaseStats:
    requests: int = 0
    errors: int = 0
    max_wait_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "max_wait_ms": round(self.max_wait_s * 1000, 1),
        }


@dataclass
class Stats:
    version: str
    instance: int
    pid: int = field(default_factory=os.getpid)
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def record(self, phase: str, seconds: float, error: str | None) -> None:
        entry = self.phases.get(phase)
        if entry is None:
            entry = self.phases[phase] = PhaseStats()
            self.order.append(phase)
        entry.requests += 1
        entry.max_wait_s = max(entry.max_wait_s, seconds)
        if error is not None:
            entry.errors += 1
            if len(self.error_samples) < ERROR_SAMPLES:
                self.error_samples.append(f"[{phase}] {error}")


class App:
    """One instance: a LiveReporter plus a request loop on one connection."""

    def __init__(self, url: str, version: str, instance: int, workdir: Path, pace_s: float) -> None:
        self.url = url
        self.version = version
        self.instance = instance
        self.workdir = workdir
        self.pace_s = pace_s
        self.column = column_for(version)
        #: Set by the orphan watch; the signal handler never touches it (Event.set takes a lock
        #: the interrupted main thread may hold inside Event.wait: a deadlock).
        self.orphaned = False
        self.phase = "start"
        self.stats = Stats(version, instance)
        self.sigterm_at: float | None = None
        self.rng = random.Random(f"{version}-{instance}-{os.getpid()}")
        self.max_id = 1
        self.parent = os.getppid()

    # -- lifecycle --------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.sigterm_at is not None or self.orphaned

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Only an attribute store, no lock: the request in flight finishes, then the loop ends.
        if self.sigterm_at is None:
            self.sigterm_at = time.monotonic()

    def watch(self) -> None:
        """Follow the orchestrator's phase file; stop if the orchestrator vanished."""
        path = self.workdir / "phase"
        while not self.stopping:
            time.sleep(0.02)
            with contextlib.suppress(OSError):
                self.phase = path.read_text().strip() or self.phase
            if os.getppid() != self.parent:  # orphaned: never outlive the demo
                self.orphaned = True

    def run(self) -> int:
        from ..db.engine import create
        from ..live.readiness import schema_ready
        from ..live.reporter import LiveReporter

        # Installed before the reporter's, which chains to it: our flag, its deregistration.
        signal.signal(signal.SIGTERM, self.on_sigterm)
        threading.Thread(target=self.watch, name="demo-phase", daemon=True).start()
        engine = create(self.url, pool_size=3, max_overflow=2)
        md = metadata_for(self.version)
        table = md.tables[TABLE]
        # A readiness probe, as in production: new code takes no traffic before its expand.
        missing = schema_ready(engine, md)
        while missing and not self.stopping:
            time.sleep(0.1)
            missing = schema_ready(engine, md)
        if missing:
            self.write_stats(deregistered=True)
            return 0
        reporter = LiveReporter(
            engine, app=APP_NAME, version=self.version, metadata=md, interval=INTERVAL_S, handle_signals=True
        ).start()
        try:
            self.serve(engine, table)
        finally:
            reporter.stop()
            self.write_stats(deregistered=not reporter.registered)
            engine.dispose()
        return 0

    # -- traffic ----------------------------------------------------------------------

    def serve(self, engine: Engine, table: Table) -> None:
        from sqlalchemy import func, select

        ready = False
        conn: Connection | None = None
        while not self.stopping:
            try:
                if conn is None:
                    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                    self.max_id = int(conn.execute(select(func.max(table.c.id))).scalar() or 1)
            except Exception as exc:
                self.stats.record(self.phase, 0.0, _first_line(exc))
                time.sleep(0.2)
                continue
            phase = self.phase
            started = time.perf_counter()
            error: str | None = None
            try:
                self.request(conn, table)
            except Exception as exc:
                error = _first_line(exc)
                conn.invalidate()
                conn = None
            self.stats.record(phase, time.perf_counter() - started, error)
            if not ready and error is None:
                ready = True
                _atomic_write(self.workdir / f"ready-v{self.version}-{self.instance}", str(os.getpid()))
            time.sleep(self.pace_s)
        if conn is not None:
            conn.close()

    def request(self, conn: Connection, table: Table) -> None:
        """One request: 20% sign-ups, 40% profile edits, 40% page views, by primary key."""
        col = table.c[self.column]
        roll = self.rng.random()
        if roll < 0.2:
            n = self.rng.randrange(1_000_000)
            new_id = conn.execute(
                table.insert()
                .values(
                    {self.column: f"v{self.version} user {n}", "email": f"u{n}@example.com", "balance": 0}
                )
                .returning(table.c.id)
            ).scalar_one()
            self.max_id = max(self.max_id, int(new_id))
        elif roll < 0.6:
            row_id = self.rng.randint(1, self.max_id)
            conn.execute(
                table.update()
                .where(table.c.id == row_id)
                .values({self.column: f"v{self.version} edit {self.rng.randrange(1_000_000)}"})
            )
        else:
            row_id = self.rng.randint(1, self.max_id)
            conn.execute(
                table.select().with_only_columns(table.c.id, col, table.c.balance).where(table.c.id == row_id)
            ).all()

    # -- report -----------------------------------------------------------------------

    def write_stats(self, *, deregistered: bool) -> None:
        doc = {
            "version": self.version,
            "instance": self.instance,
            "pid": os.getpid(),
            "column": self.column,
            "sigterm": self.sigterm_at is not None,
            "sigterm_to_exit_s": None
            if self.sigterm_at is None
            else round(time.monotonic() - self.sigterm_at, 3),
            "deregistered": deregistered,
            "phases": {name: self.stats.phases[name].to_json() for name in self.stats.order},
            "error_samples": self.stats.error_samples,
        }
        _atomic_write(self.workdir / f"stats-v{self.version}-{self.instance}.json", json.dumps(doc))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _configure_logging() -> None:
    """The library never configures logging; a program does, and this one logs to its log file."""
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expandcontract.demo.app", description=__doc__)
    parser.add_argument("--version", required=True, choices=["1", "2"])
    parser.add_argument("--url", required=True, help="database URL (postgresql://...)")
    parser.add_argument("--workdir", required=True, type=Path, help="phase file in, stats out")
    parser.add_argument("--instance", type=int, default=0)
    parser.add_argument("--pace-ms", type=float, default=5.0, help="pause between requests")
    args = parser.parse_args(argv)
    _configure_logging()
    app = App(args.url, args.version, args.instance, args.workdir, args.pace_ms / 1000)
    return app.run()


if __name__ == "__main__":
    sys.exit(main())
