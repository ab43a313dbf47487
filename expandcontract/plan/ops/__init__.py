"""The registry of operations: ``ecm plan OPERATION`` for each entry, one line per operation."""

from __future__ import annotations

from .base import Operation
from .rename_column import RenameColumn

REGISTRY: dict[str, type[Operation]] = {op.kind: op for op in (RenameColumn,)}

__all__ = ["REGISTRY", "Operation"]
