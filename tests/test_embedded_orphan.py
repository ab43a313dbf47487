"""An embedded server left running by an installation that is gone is stopped, not reused.

The demo and ``--database-url embedded`` reuse a running postmaster of the data directory;
one whose binaries were deleted (a removed virtualenv) answers but cannot load ``plpgsql``.
Simulated with a process whose executable is deleted after it started (no PostgreSQL needed):
the check reads ``/proc/PID/exe`` and the data directory's ``postmaster.pid``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from expandcontract.embedded import stop_orphan

pytestmark = [
    pytest.mark.server_independent,
    pytest.mark.skipif(not Path("/proc/self/exe").exists(), reason="needs /proc"),
]


def _sleeper(executable: str) -> subprocess.Popen[bytes]:
    # Under CI (a background job of a non-interactive shell, pytest-xdist workers) SIGINT can be
    # ignored or blocked, and both survive exec: the stand-in gets the default back, as PostgreSQL,
    # which installs its own handlers and signal mask, always has it.
    return subprocess.Popen(
        [executable, "60"],
        stdin=subprocess.DEVNULL,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_a_server_whose_binary_was_deleted_is_stopped(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    copy = tmp_path / "bin" / "postgres"
    copy.parent.mkdir()
    shutil.copy(sleep, copy)
    proc = _sleeper(str(copy))
    try:
        time.sleep(0.2)
        shutil.rmtree(copy.parent)  # the installation is gone; the process runs on
        data = tmp_path / "data"
        data.mkdir()
        (data / "postmaster.pid").write_text(f"{proc.pid}\n{data}\n")
        assert stop_orphan(data, wait_s=1) is True
        assert proc.wait(timeout=5) != 0  # ended by the signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_server_of_a_live_installation_is_left_alone(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    proc = _sleeper(sleep)
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / "postmaster.pid").write_text(f"{proc.pid}\n{data}\n")
        assert stop_orphan(data, wait_s=1) is False
        assert proc.poll() is None
        assert stop_orphan(tmp_path / "nothing-here") is False  # no postmaster.pid: nothing to do
    finally:
        proc.kill()
        proc.wait()
