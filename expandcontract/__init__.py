"""expandcontract: zero-downtime schema migrations for PostgreSQL, SQLAlchemy and Alembic.

The public API is imported lazily (PEP 562) so that ``import expandcontract`` and the
``ecm --help`` path never pay for SQLAlchemy or psycopg.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import BadInput, EcmError, OperationalError, Refused

_LAZY: dict[str, str] = {}

__all__ = ["BadInput", "EcmError", "OperationalError", "Refused", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ._version import version

        return version()
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'expandcontract' has no attribute {name!r}")
