"""Environment settings (``ECM_*``), read in one place so docs/configuration.md can list them all.

Functions rather than module constants: tests and long-lived processes change the
environment, and a value read at import time would go stale.
"""

from __future__ import annotations

import os

#: Every setting the toolkit reads, with its default and meaning; docs are checked against it.
SETTINGS: dict[str, tuple[str, str]] = {
    "ECM_DATABASE_URL": ("", "Target database URL; `embedded` or `embedded:DIR` for the embedded server."),
    "ECM_DIRECT_DATABASE_URL": (
        "",
        "Direct (not transaction-pooled) URL for runners that hold session advisory locks.",
    ),
    "ECM_CONTROL_SCHEMA": ("ecm", "Schema holding the toolkit's own tables."),
    "ECM_LOCK_TIMEOUT": (
        "1s",
        "lock_timeout for each DDL step (PostgreSQL interval syntax or milliseconds).",
    ),
    "ECM_STATEMENT_TIMEOUT": ("60s", "statement_timeout for short DDL steps."),
    "ECM_DDL_RETRIES": ("10", "Attempts for a DDL step that times out waiting for a lock."),
    "ECM_BACKFILL": (
        "inline",
        "`inline` runs backfills inside `alembic upgrade`; `defer` only records them.",
    ),
    "ECM_LIVE_TTL": ("", "Seconds after which a silent instance is gone (default 3x its own interval)."),
    "ECM_LOG_FORMAT": ("", "`console` or `json`; default console on a TTY, JSON otherwise."),
    "ECM_EMBEDDED_DIR": ("", "Data directory of the embedded server (default: per-user cache dir)."),
    "ECM_ALEMBIC_CONFIG": ("alembic.ini", "Path of the Alembic config (-c/--config)."),
    "ECM_ALEMBIC_NAME": ("alembic", "Section of alembic.ini for the application line (-n/--name)."),
    "ECM_ALLOW_NO_REPORTERS": ("", "1: accept an empty registry as evidence (recorded in the ledger)."),
    "ECM_FORCE_CONTRACT": (
        "",
        "Plan id whose contract proceeds despite live instances (set by --force-contract).",
    ),
    "ECM_FORCE_REASON": ("", "Why the contract is forced (set by --reason; recorded in the ledger)."),
}


def get(name: str) -> str:
    default = SETTINGS[name][0] if name in SETTINGS else ""
    return os.environ.get(name, default) or default


def control_schema() -> str:
    return get("ECM_CONTROL_SCHEMA") or "ecm"
