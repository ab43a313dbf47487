"""Start and stop the stand-in application processes, and poll the registry, for the live tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent.parent


class App:
    """A running ``tests/apps/live_app.py`` with its stdout read line by line on a thread."""

    def __init__(self, url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.apps.live_app", url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def expect(self, prefix: str, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {prefix!r} line from the app within {timeout} s; exit={self.proc.poll()} "
                    f"stderr={''.join(self.stderr_lines)[-3000:]}"
                )
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    time.sleep(0.1)  # let the pump drain
                    if self.lines.empty():
                        raise AssertionError(
                            f"app exited {self.proc.returncode} before {prefix!r}: "
                            f"{''.join(self.stderr_lines)[-3000:]}"
                        ) from None
                continue
            if line.startswith(prefix):
                return line.split()

    def ready(self) -> tuple[str, int]:
        _, instance_id, pid = self.expect("READY")
        return instance_id, int(pid)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@contextmanager
def running(url: str, *args: str, env: dict[str, str] | None = None) -> Iterator[App]:
    app = App(url, *args, env=env)
    try:
        yield app
    finally:
        app.close()


def kill_pid(pid: int, signum: int = signal.SIGKILL) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signum)


def instance_row(url: str, instance_id: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT id::text AS id, app, version, host, pid, interval_s, uses, deregistered_at, "
            "last_heartbeat, extract(epoch FROM clock_timestamp() - last_heartbeat)::float8 AS age "
            "FROM ecm.instances WHERE id = %s",
            (instance_id,),
        )
        row = cur.fetchone()
        assert row is not None, f"instance {instance_id} not registered"
        assert cur.description is not None
        return dict(zip([d.name for d in cur.description], row, strict=True))


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
