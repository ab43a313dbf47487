"""expandcontract: zero-downtime schema migrations for PostgreSQL, SQLAlchemy and Alembic.

The public API is imported lazily (PEP 562) so that ``import expandcontract`` and the
``ecm --help`` path never pay for SQLAlchemy or psycopg.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import BadInput, EcmError, OperationalError, Refused

if TYPE_CHECKING:
    from .dualwrite import DualWrite, coalesce_new, dual_read, dual_write
    from .guard import Decision, Instance, decide
    from .live.guard_check import check_contract, record_override
    from .live.readiness import schema_ready
    from .live.reporter import LiveReporter, set_process_role

_LAZY: dict[str, str] = {
    "LiveReporter": ".live.reporter",
    "set_process_role": ".live.reporter",
    "schema_ready": ".live.readiness",
    "check_contract": ".live.guard_check",
    "record_override": ".live.guard_check",
    "Decision": ".guard",
    "Instance": ".guard",
    "decide": ".guard",
    "DualWrite": ".dualwrite",
    "dual_write": ".dualwrite",
    "dual_read": ".dualwrite",
    "coalesce_new": ".dualwrite",
}

__all__ = [
    "BadInput",
    "Decision",
    "DualWrite",
    "EcmError",
    "Instance",
    "LiveReporter",
    "OperationalError",
    "Refused",
    "__version__",
    "check_contract",
    "coalesce_new",
    "decide",
    "dual_read",
    "dual_write",
    "record_override",
    "schema_ready",
    "set_process_role",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ._version import version

        return version()
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'expandcontract' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
