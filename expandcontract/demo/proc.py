"""The demo's child processes: real ``ecm`` commands and the simulated application fleet.

Steps run as ``python -m expandcontract ...`` subprocesses so the demo shows the very
commands a deploy pipeline would run, with their exit codes and ``--json`` documents.
The backfill's Rich progress bar is only drawn when the command's stderr is a terminal,
so when ours is one the backfill gets a pseudo-terminal whose output is passed through,
minus the structured log lines that would otherwise scribble over the bar.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OperationalError

#: Lines a stock Alembic env.py logs through ``logging.config.fileConfig`` (INFO [alembic...]).
_ALEMBIC_LOG = re.compile(rb"^(INFO|WARNI|WARNING|ERROR|DEBUG)\s+\[")


@dataclass
class EcmRun:
    """One finished ``ecm`` command: what a pipeline would see."""

    display: str
    code: int
    doc: dict[str, Any] | None
    seconds: float
    logs: list[dict[str, Any]] = field(default_factory=list)
    other_stderr: str = ""

    def failure(self) -> str:
        """The command's own one-line error, for ours."""
        for line in reversed(self.other_stderr.splitlines()):
            if line.startswith("ecm: error:"):
                return line[len("ecm: ") :]
        errors = [e for e in self.logs if e.get("level") in ("error", "critical")]
        if errors:
            return str(errors[-1].get("event"))
        tail = [line for line in self.other_stderr.splitlines() if line.strip()]
        return tail[-1] if tail else f"exit {self.code}"


def _split_stderr(data: bytes) -> tuple[list[dict[str, Any]], str]:
    logs: list[dict[str, Any]] = []
    other: list[str] = []
    for raw in data.splitlines():
        parsed = _json_line(raw.strip(b"\r"))
        if parsed is not None:
            logs.append(parsed)
        else:
            other.append(raw.decode("utf-8", "replace"))
    return logs, "\n".join(other)


def _json_line(line: bytes) -> dict[str, Any] | None:
    if not line.startswith(b"{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "event" in value else None


def ecm(
    args: list[str],
    *,
    cwd: Path,
    config: Path,
    url: str,
    tty: bool = False,
    timeout: float = 600.0,
) -> EcmRun:
    """Run ``ecm ARGS`` against the demo's project and database; parse its ``--json`` document."""
    cmd = [
        sys.executable,
        "-m",
        "expandcontract",
        *args,
        "--database-url",
        url,
        "-c",
        str(config),
        "--json",
        "--log-format",
        "json",
    ]
    env = {**os.environ, "ECM_DATABASE_URL": url, "ECM_LOG_FORMAT": "json"}
    env.pop("ECM_ALEMBIC_CONFIG", None)
    display = "ecm " + " ".join(args)
    started = time.monotonic()
    if tty and sys.platform != "win32":
        code, out, logs, other = _run_on_pty(cmd, cwd, env, timeout)
    else:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
        code, out = proc.returncode, proc.stdout
        logs, other = _split_stderr(proc.stderr)
    seconds = time.monotonic() - started
    doc: dict[str, Any] | None = None
    lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.strip()]
    if lines:
        with contextlib.suppress(ValueError):
            parsed = json.loads(lines[-1])
            doc = parsed if isinstance(parsed, dict) else None
    return EcmRun(display, code, doc, seconds, logs, other)


def _run_on_pty(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> tuple[int, bytes, list[dict[str, Any]], str]:
    import fcntl
    import pty
    import struct
    import termios

    columns, rows = 0, 0
    with contextlib.suppress(OSError):
        columns, rows = os.get_terminal_size(sys.stderr.fileno())
    if columns <= 0 or rows <= 0:  # a terminal that never got a size (script(1), some CI runners)
        columns, rows = shutil.get_terminal_size((100, 24))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**env, "COLUMNS": str(columns)}
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
        )
    finally:
        os.close(slave)
    passthrough = _PtyFilter(master)
    pump = threading.Thread(target=passthrough.run, name="demo-pty", daemon=True)
    pump.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        pump.join(5)
        with contextlib.suppress(OSError):
            os.close(master)
    return proc.returncode, out, passthrough.logs, "\n".join(passthrough.other)


class _PtyFilter:
    """Copy a pseudo-terminal to our stderr, keeping structured log lines for ourselves."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.logs: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.pending = b""

    def _emit(self, data: bytes) -> None:
        if data:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.buffer.write(data)
                sys.stderr.buffer.flush()

    def _line(self, line: bytes) -> None:
        bare = line.rstrip(b"\r")
        cut = bare.find(b'{"')
        if cut >= 0:
            parsed = _json_line(bare[cut:])
            if parsed is not None:  # a log line, perhaps glued to a bar refresh
                self.logs.append(parsed)
                self._emit(bare[:cut])
                return
        if _ALEMBIC_LOG.match(bare):
            self.other.append(bare.decode("utf-8", "replace"))
            return
        if bare.strip():
            self.other.append(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", bare.decode("utf-8", "replace")))
        self._emit(line + b"\n")

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data = self.pending + chunk
            *lines, rest = data.split(b"\n")
            for line in lines:
                self._line(line)
            if rest.lstrip(b"\r").startswith(b"{") or _ALEMBIC_LOG.match(rest):
                self.pending = rest  # probably a log line still being written
            else:
                self._emit(rest)
                self.pending = b""
        if self.pending:
            self._line(self.pending)


# -- the simulated application ------------------------------------------------------------


@dataclass
class Instance:
    version: str
    index: int
    proc: subprocess.Popen[bytes]
    log: Path
    exit_code: int | None = None


class Fleet:
    """``count`` processes of one application version, started and stopped together."""

    def __init__(self, version: str, count: int, url: str, workdir: Path, pace_ms: float = 5.0) -> None:
        self.version = version
        self.count = count
        self.url = url
        self.workdir = workdir
        self.pace_ms = pace_ms
        self.instances: list[Instance] = []
        self.stop_seconds: float | None = None

    @property
    def pids(self) -> list[int]:
        return [i.proc.pid for i in self.instances]

    def start(self) -> Fleet:
        for n in range(self.count):
            log = self.workdir / f"app-v{self.version}-{n}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "expandcontract.demo.app",
                        "--version",
                        self.version,
                        "--url",
                        self.url,
                        "--workdir",
                        str(self.workdir),
                        "--instance",
                        str(n),
                        "--pace-ms",
                        str(self.pace_ms),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C at the terminal reaches the demo, which then
                    # stops the fleet itself, in order.
                    start_new_session=True,
                )
            self.instances.append(Instance(self.version, n, proc, log))
        return self

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until every instance served its first request; fail fast if one died."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            waiting = [
                i for i in self.instances if not (self.workdir / f"ready-v{i.version}-{i.index}").exists()
            ]
            if not waiting:
                return time.monotonic() - started
            for inst in waiting:
                code = inst.proc.poll()
                if code is not None:
                    raise OperationalError(
                        f"demo-app {self.version} instance {inst.index} exited {code} before serving: "
                        f"{self.log_tail(inst)}"
                    )
            if time.monotonic() > deadline:
                raise OperationalError(
                    f"demo-app {self.version} did not start serving within {timeout:.0f} s: "
                    f"{self.log_tail(waiting[0])}"
                )
            time.sleep(0.05)

    def terminate(self, timeout: float = 20.0) -> list[int]:
        """SIGTERM, as an orchestrator would; SIGKILL only after ``timeout``."""
        started = time.monotonic()
        for inst in self.instances:
            if inst.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    inst.proc.send_signal(signal.SIGTERM)
        codes: list[int] = []
        for inst in self.instances:
            remaining = max(0.1, timeout - (time.monotonic() - started))
            try:
                inst.exit_code = inst.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.exit_code = inst.proc.wait()
            codes.append(inst.exit_code)
        self.stop_seconds = time.monotonic() - started
        return codes

    def kill(self) -> None:
        """Last resort in cleanup: never leave a process behind."""
        for inst in self.instances:
            if inst.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    inst.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for inst in self.instances:
            try:
                inst.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait()

    def stats(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for inst in self.instances:
            path = self.workdir / f"stats-v{inst.version}-{inst.index}.json"
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                doc = {
                    "version": inst.version,
                    "instance": inst.index,
                    "pid": inst.proc.pid,
                    "phases": {},
                    "error_samples": [f"no stats written (exit {inst.exit_code}): {self.log_tail(inst)}"],
                    "missing": True,
                }
            doc["exit_code"] = inst.exit_code
            found.append(doc)
        return found

    def log_tail(self, inst: Instance) -> str:
        try:
            lines = [line for line in inst.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "no output"
