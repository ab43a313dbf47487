"""Simulated application traffic for zero-downtime tests: old code on OLD, new code on NEW.

Every row has exactly one writer thread, so the expected final value of every row is
known exactly (the oracle). Latency is recorded per operation so a test can bound the
longest wait an application query saw while DDL ran.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import psycopg


@dataclass
class Stats:
    ops: int = 0
    errors: list[str] = field(default_factory=list)
    max_wait: float = 0.0
    waits: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.ops += 1
        self.waits.append(seconds)
        self.max_wait = max(self.max_wait, seconds)


class Workload:
    """Threads that insert, update and read one column of ``table`` (``column``) only."""

    def __init__(
        self,
        url: str,
        *,
        table: str,
        column: str,
        owned: list[int],
        label: str,
        writers: int = 2,
        readers: int = 1,
        inserters: int = 1,
        pause: float = 0.002,
    ) -> None:
        self.url = url
        self.table = table
        self.column = column
        self.label = label
        self.pause = pause
        self.stop_event = threading.Event()
        self.expected: dict[int, str] = {}
        self.lock = threading.Lock()
        self.stats = Stats()
        self.phase_max: dict[str, float] = {}
        self.phase = "start"
        chunks = [owned[i::writers] for i in range(writers)] if writers else []
        self.threads = [
            threading.Thread(target=self._writer, args=(c, n), daemon=True) for n, c in enumerate(chunks)
        ]
        self.threads += [threading.Thread(target=self._reader, daemon=True) for _ in range(readers)]
        self.threads += [
            threading.Thread(target=self._inserter, args=(n,), daemon=True) for n in range(inserters)
        ]
        self.all_ids = list(owned)

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def start(self) -> Workload:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> Stats:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.stats

    def _timed(
        self, conn: psycopg.Connection, sql: str, params: tuple[object, ...]
    ) -> list[tuple[object, ...]]:
        started = time.perf_counter()
        try:
            cur = conn.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        finally:
            elapsed = time.perf_counter() - started
            with self.lock:
                self.stats.add(elapsed)
                self.phase_max[self.phase] = max(self.phase_max.get(self.phase, 0.0), elapsed)
        return rows

    def _loop(self, body: object) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop_event.is_set():
                    try:
                        body(conn)  # type: ignore[operator]
                    except Exception as exc:
                        with self.lock:
                            self.stats.errors.append(
                                f"{self.label}: {type(exc).__name__}: {exc}".splitlines()[0]
                            )
                    time.sleep(self.pause)
        except Exception as exc:
            with self.lock:
                self.stats.errors.append(f"{self.label} connect: {exc}")

    def _writer(self, ids: list[int], n: int) -> None:
        rng = random.Random(n)
        counter = 0

        def body(conn: psycopg.Connection) -> None:
            nonlocal counter
            if not ids:
                return
            row_id = rng.choice(ids)
            counter += 1
            value = f"{self.label}-w{n}-{counter}"
            self._timed(conn, f"UPDATE {self.table} SET {self.column} = %s WHERE id = %s", (value, row_id))
            with self.lock:
                self.expected[row_id] = value

        self._loop(body)

    def _inserter(self, n: int) -> None:
        counter = 0

        def body(conn: psycopg.Connection) -> None:
            nonlocal counter
            counter += 1
            value = f"{self.label}-i{n}-{counter}"
            rows = self._timed(
                conn, f"INSERT INTO {self.table} ({self.column}) VALUES (%s) RETURNING id", (value,)
            )
            with self.lock:
                self.expected[int(rows[0][0])] = value  # type: ignore[call-overload]

        self._loop(body)

    def _reader(self) -> None:
        rng = random.Random(99)

        def body(conn: psycopg.Connection) -> None:
            row_id = rng.choice(self.all_ids)
            self._timed(conn, f"SELECT {self.column} FROM {self.table} WHERE id = %s", (row_id,))

        self._loop(body)
