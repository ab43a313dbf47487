"""An application version under test: SQLAlchemy Core on AUTOCOMMIT connections and ORM
sessions that commit, psycopg defaults (statements prepared after 5 executions), under
LiveReporter, as its own process.

Run as ``python app.py CONFIG.json``. Every row it writes has this process as its only
writer, so its last value per row is the oracle. SIGTERM stops it the way an orchestrator
does: threads finish their operation, the reporter deregisters, results go to ``out``.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, registry

from expandcontract import LiveReporter

TYPES: dict[str, Any] = {
    "Text": Text,
    "Integer": Integer,
    "BigInteger": BigInteger,
    "SmallInteger": SmallInteger,
    "Boolean": Boolean,
    "Numeric": Numeric,
    "String": String,
}


def sa_type(spec: str) -> Any:
    name, _, arg = spec.partition("(")
    kind = TYPES[name]
    return kind(*[int(a) for a in arg.rstrip(")").split(",") if a]) if arg else kind()


class App:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ops: dict[str, int] = {}
        self.errors: list[str] = []
        self.error_count = 0
        self.errors_by_label: dict[str, int] = {}
        self.prepared_errors = 0  # of error_count: statements prepared before a swap
        self.expected: dict[str, Any] = {}  # row key (str) -> last value written by this process
        self.slow: list[tuple[float, float]] = []  # (started at, seconds) of operations over 20 ms
        self.max_wait = 0.0
        self.metadata = MetaData()
        columns = [Column(cfg["key"], sa_type(cfg.get("key_type") or "BigInteger"), primary_key=True)]
        for name, spec in cfg["columns"].items():
            columns.append(Column(name, sa_type(spec), nullable=cfg.get("nullable", {}).get(name, True)))
        self.table = Table(cfg["table"], self.metadata, *columns)
        for n, key in enumerate(cfg.get("unique") or ()):
            Index(f"{cfg['table']}_declared_{n}", *[self.table.c[c] for c in key], unique=True)
        self.child = None
        if cfg.get("child"):
            ch = cfg["child"]
            self.child = Table(
                ch["table"],
                self.metadata,
                Column("id", BigInteger, primary_key=True),
                Column(ch["column"], sa_type(ch["type"])),
            )

        class Row:
            pass

        registry().map_imperatively(Row, self.table)
        self.Row = Row
        # psycopg defaults: server-side prepared statements after 5 executions.
        self.engine = create_engine(
            cfg["url"].replace("postgresql://", "postgresql+psycopg://", 1), pool_size=8
        )

    # -- values ---------------------------------------------------------------------------
    def value(self, rng: random.Random, n: int, tag: str = "u") -> Any:
        kind = self.cfg["value"]
        null_every = int(self.cfg.get("null_every") or 0)
        if null_every and n % null_every == 0:
            return None
        if kind == "int":
            return rng.randrange(1, 2_000_000_000)
        if kind == "words":  # "first last": split by the first space, merged back with one (split/merge)
            return f"v{self.cfg['version']}-{threading.current_thread().name}-{tag}{n} w{n}"
        return f"v{self.cfg['version']}-{threading.current_thread().name}-{tag}{n}"

    def insert_values(self, rng: random.Random, n: int) -> dict[str, Any]:
        values = dict(self.cfg.get("insert", {}))
        for column, kind in (self.cfg.get("also") or {}).items():
            values[column] = f"{kind}-{n}" if kind != "int" else n
        if self.cfg["write"]:
            values[self.cfg["write"]] = self.value(rng, n, "i")
        return values

    # -- bookkeeping ----------------------------------------------------------------------
    def timed(self, label: str, body: Any) -> Any:
        started = time.time()
        t0 = time.perf_counter()
        try:
            return body()
        except Exception as exc:
            with self.lock:
                self.error_count += 1
                self.errors_by_label[label] = self.errors_by_label.get(label, 0) + 1
                if "cached plan must not change result type" in str(exc):
                    self.prepared_errors += 1
                if len(self.errors) < 30:
                    self.errors.append(
                        f"v{self.cfg['version']} {label}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                    )
            return None
        finally:
            elapsed = time.perf_counter() - t0
            with self.lock:
                self.ops[label] = self.ops.get(label, 0) + 1
                self.max_wait = max(self.max_wait, elapsed)
                if elapsed > 0.02:
                    self.slow.append((started, elapsed))

    def record(self, key: Any, value: Any) -> None:
        with self.lock:
            self.expected[str(key)] = value

    # -- workers --------------------------------------------------------------------------
    def core(self, owned: list[int], seed: int) -> None:
        """SQLAlchemy Core on an AUTOCOMMIT connection: updates, inserts, reads."""
        rng = random.Random(seed)
        key = self.table.c[self.cfg["key"]]
        write = self.cfg["write"]
        n = 0
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self.stop.is_set():
                n += 1
                row = rng.choice(owned) if owned else None
                if write and row is not None:
                    value = self.value(rng, n)
                    stmt = update(self.table).where(key == row).values({write: value})
                    if self.timed("core update", lambda stmt=stmt: conn.execute(stmt)) is not None:
                        self.record(row, value)
                if n % 4 == 0:
                    values = self.insert_values(rng, n)
                    stmt2 = insert(self.table).values(values).returning(key)
                    done = self.timed("core insert", lambda stmt2=stmt2: conn.execute(stmt2).scalar_one())
                    if done is not None and write:
                        self.record(done, values[write])
                if row is not None:
                    cols = [self.table.c[c] for c in self.cfg["columns"]]
                    stmt3 = select(*cols).where(key == row)
                    self.timed("core read", lambda stmt3=stmt3: conn.execute(stmt3).all())
                if self.child is not None and row is not None:
                    self.child_insert(conn, row)
                time.sleep(self.cfg.get("pause", 0.002))

    def child_insert(self, conn: Any, row: int) -> None:
        ch = self.cfg["child"]
        key = self.table.c[self.cfg["key"]]
        ref = self.timed(
            "child ref", lambda: conn.execute(select(self.table.c[ch["ref"]]).where(key == row)).scalar()
        )
        if ref is not None:
            stmt = insert(self.child).values({ch["column"]: ref})
            self.timed("child insert", lambda: conn.execute(stmt))

    def orm(self, owned: list[int], seed: int) -> None:
        """ORM sessions that commit: get + attribute change, add, query."""
        rng = random.Random(seed)
        write = self.cfg["write"]
        n = 0
        while not self.stop.is_set():
            n += 1
            row = rng.choice(owned) if owned else None
            with Session(self.engine) as session:
                if write and row is not None:
                    value = self.value(rng, n)

                    def change(row: int = row, value: Any = value) -> bool:
                        obj = session.get(self.Row, row)
                        if obj is None:
                            raise LookupError(f"row {row} is gone")
                        setattr(obj, write, value)
                        session.commit()
                        return True

                    if self.timed("orm update", change):
                        self.record(row, value)
                if n % 4 == 0:
                    values = self.insert_values(rng, n)

                    def add(values: dict[str, Any] = values) -> Any:
                        obj = self.Row()
                        for k, v in values.items():
                            setattr(obj, k, v)
                        session.add(obj)
                        session.commit()
                        return getattr(obj, self.cfg["key"])

                    done = self.timed("orm insert", add)
                    if done is not None and write:
                        self.record(done, values[write])
                if row is not None:
                    self.timed("orm read", lambda row=row: session.get(self.Row, row, populate_existing=True))
                    # Committed, not rolled back: a ROLLBACK clears psycopg's prepared statements
                    # and would hide what a type swap does to them.
                    self.timed("orm commit", session.commit)
            time.sleep(self.cfg.get("pause", 0.002))

    def run(self) -> None:
        owned = list(self.cfg["owned"])
        halves = [owned[0::2], owned[1::2]]
        threads = [
            threading.Thread(target=self.core, args=(halves[0], 1), name="core", daemon=True),
            threading.Thread(target=self.orm, args=(halves[1], 2), name="orm", daemon=True),
        ]
        # "url": a reporter that cannot pause the engine's prepared statements (the control run).
        bind = self.cfg["url"] if self.cfg.get("reporter_bind") == "url" else self.engine
        reporter = LiveReporter(
            bind,
            app="conformance",
            version=str(self.cfg["version"]),
            metadata=self.metadata,
            interval=float(self.cfg.get("interval", 1.0)),
            handle_signals=False,
        ).start()
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        for t in threads:
            t.start()
        time.sleep(0.3)
        Path(self.cfg["out"] + ".ready").write_text("ready")
        while not self.stop.is_set():
            self.stop.wait(0.2)
        for t in threads:
            t.join(30)
        reporter.stop()
        self.engine.dispose()
        Path(self.cfg["out"]).write_text(
            json.dumps(
                {
                    "version": self.cfg["version"],
                    "ops": self.ops,
                    "errors": self.errors,
                    "error_count": self.error_count,
                    "errors_by_label": self.errors_by_label,
                    "prepared_errors": self.prepared_errors,
                    "expected": self.expected,
                    "slow": self.slow,
                    "max_wait": self.max_wait,
                },
                default=str,
            )
        )


if __name__ == "__main__":
    App(json.loads(Path(sys.argv[1]).read_text())).run()
