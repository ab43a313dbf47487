"""One application version as its own process: the project's ``models.py`` of that version
under a LiveReporter, with two writers (SQLAlchemy Core on an AUTOCOMMIT connection, and
ORM sessions that commit) updating, inserting and reading ``users``.

Run as ``python traffic.py CONFIG.json``; CONFIG holds ``url`` (libpq), ``models`` (path of
the models file), ``version``, ``owned`` (ids of the seed rows only this process updates),
``out`` (where the results go), ``null_email_every`` (every n-th email written is NULL,
which only the old models allow; 0: never) and ``interval`` (heartbeat seconds).

Every row it writes has this process as its only writer, so its last (name, age, email) per
row is what the table must hold at the end (``expected``; a NULL email reads back as the
fill ``''``). SIGTERM stops it as an orchestrator does: the reporter's own handler
deregisters, ours stops the writers, results go to ``out``, ``out.ready`` marks the start.
"""

from __future__ import annotations

import importlib.util
import json
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, update
from sqlalchemy.orm import Session

from expandcontract import LiveReporter


def load_models(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["models"] = module  # SQLAlchemy resolves the string annotations through it
    spec.loader.exec_module(module)
    return module


class Traffic:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.version = str(cfg["version"])
        self.models = load_models(cfg["models"])
        self.User = self.models.User
        self.table = self.User.__table__
        self.name = self.models.NAME
        self.has_nickname = "nickname" in self.table.c
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ops: dict[str, int] = {}
        self.errors: list[str] = []
        self.error_count = 0
        self.expected: dict[str, list[Any]] = {}  # id -> [name, age, email as read back]
        # psycopg defaults: server-side prepared statements after 5 executions.
        self.engine = create_engine(cfg["url"].replace("postgresql://", "postgresql+psycopg://", 1))

    def values(self, rng: random.Random, n: int, tag: str) -> dict[str, Any]:
        every = int(self.cfg.get("null_email_every") or 0)
        email = None if every and n % every == 0 else f"v{self.version}-{tag}{n}@example.com"
        out: dict[str, Any] = {
            self.name: f"v{self.version}-{threading.current_thread().name}-{tag}{n}",
            # Within integer range: the column stays integer until the contract swaps it.
            "age": rng.randrange(0, 2_000_000_000),
            "email": email,
        }
        if self.has_nickname:
            out["nickname"] = f"nick{n}"
        return out

    def timed(self, label: str, body: Any) -> Any:
        try:
            return body()
        except Exception as exc:
            with self.lock:
                self.error_count += 1
                if len(self.errors) < 30:
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    self.errors.append(f"v{self.version} {label}: {type(exc).__name__}: {first}")
            return None
        finally:
            with self.lock:
                self.ops[label] = self.ops.get(label, 0) + 1

    def record(self, key: Any, values: dict[str, Any]) -> None:
        with self.lock:
            self.expected[str(key)] = [values[self.name], values["age"], values["email"] or ""]

    def core(self, owned: list[int], seed: int) -> None:
        rng = random.Random(seed)
        key = self.table.c.id
        n = 0
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self.stop.is_set():
                n += 1
                row = rng.choice(owned)
                values = self.values(rng, n, "u")
                stmt = update(self.table).where(key == row).values(values)
                if self.timed("core update", lambda stmt=stmt: conn.execute(stmt)) is not None:
                    self.record(row, values)
                if n % 4 == 0:
                    new = self.values(rng, n, "i")
                    ins = insert(self.table).values(new).returning(key)
                    done = self.timed("core insert", lambda ins=ins: conn.execute(ins).scalar_one())
                    if done is not None:
                        self.record(done, new)
                read = select(self.table).where(key == row)
                self.timed("core read", lambda read=read: conn.execute(read).all())
                time.sleep(0.003)

    def orm(self, owned: list[int], seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not self.stop.is_set():
            n += 1
            row = rng.choice(owned)
            values = self.values(rng, n, "u")
            with Session(self.engine) as session:

                def change(row: int = row, values: dict[str, Any] = values) -> bool:
                    user = session.get(self.User, row)
                    if user is None:
                        raise LookupError(f"user {row} is gone")
                    for attr, value in values.items():
                        setattr(user, attr, value)
                    session.commit()
                    return True

                if self.timed("orm update", change):
                    self.record(row, values)
                if n % 4 == 0:
                    new = self.values(rng, n, "i")

                    def add(new: dict[str, Any] = new) -> int:
                        user = self.User(**new)
                        session.add(user)
                        session.commit()
                        return int(user.id)

                    done = self.timed("orm insert", add)
                    if done is not None:
                        self.record(done, new)
                self.timed("orm read", lambda row=row: session.get(self.User, row, populate_existing=True))
                self.timed("orm commit", session.commit)
            time.sleep(0.003)

    def run(self) -> None:
        # Ours first: the reporter's SIGTERM handler deregisters, then calls this one.
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        reporter = LiveReporter(
            self.engine,
            app="users-app",
            version=self.version,
            metadata=self.models.metadata,
            interval=float(self.cfg.get("interval", 1.0)),
        ).start()
        deadline = time.monotonic() + 20
        while not reporter.registered and time.monotonic() < deadline:
            time.sleep(0.02)
        owned = list(self.cfg["owned"])
        threads = [
            threading.Thread(target=self.core, args=(owned[0::2], 1), name="core", daemon=True),
            threading.Thread(target=self.orm, args=(owned[1::2], 2), name="orm", daemon=True),
        ]
        for t in threads:
            t.start()
        time.sleep(0.2)
        Path(self.cfg["out"] + ".ready").write_text("ready" if reporter.registered else "unregistered")
        while not self.stop.is_set():
            self.stop.wait(0.2)
        for t in threads:
            t.join(30)
        reporter.stop()
        self.engine.dispose()
        result = {
            "version": self.version,
            "ops": self.ops,
            "errors": self.errors,
            "error_count": self.error_count,
            "expected": self.expected,
        }
        Path(self.cfg["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    Traffic(json.loads(Path(sys.argv[1]).read_text())).run()
