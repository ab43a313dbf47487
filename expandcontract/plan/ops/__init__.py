"""The registry of operations: ``ecm plan OPERATION`` for each entry, one line per operation.

Entries are imported when first looked up: ``ecm plan rename-column …`` loads one operation's
module, not sixteen (start-up time is what a developer waits for on every plan).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from .base import Operation

#: kind -> (module under this package, class); in the order ``ecm plan --help`` lists them.
_ENTRIES: dict[str, tuple[str, str]] = {
    "rename-column": ("rename_column", "RenameColumn"),
    "set-not-null": ("set_not_null", "SetNotNull"),
    "change-type": ("change_type", "ChangeType"),
    "add-column": ("add_column", "AddColumn"),
    "drop-column": ("drop_column", "DropColumn"),
    "rename-table": ("rename_table", "RenameTable"),
    "drop-table": ("drop_table", "DropTable"),
    "add-index": ("add_index", "AddIndex"),
    "drop-index": ("drop_index", "DropIndex"),
    "add-unique": ("add_unique", "AddUnique"),
    "add-foreign-key": ("add_foreign_key", "AddForeignKey"),
    "add-check": ("add_check", "AddCheck"),
    "bigint-key": ("bigint_key", "BigintKey"),
    "split-column": ("split_column", "SplitColumn"),
    "merge-columns": ("merge_columns", "MergeColumns"),
    "custom": ("custom", "Custom"),
}


class _Registry(Mapping[str, type[Operation]]):
    """A read-only mapping of kind to operation class that imports each class on first use."""

    def __init__(self, entries: Mapping[str, tuple[str, str]]) -> None:
        self._entries = dict(entries)
        self._loaded: dict[str, type[Operation]] = {}

    def __getitem__(self, kind: str) -> type[Operation]:
        if kind not in self._loaded:
            module, name = self._entries[kind]
            cls = getattr(importlib.import_module(f"{__name__}.{module}"), name)
            if cls.kind != kind:  # the table above and the class must agree
                raise RuntimeError(f"operation registry: {module}.{name}.kind is {cls.kind!r}, not {kind!r}")
            self._loaded[kind] = cls
        return self._loaded[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries


REGISTRY: Mapping[str, type[Operation]] = _Registry(_ENTRIES)

__all__ = ["REGISTRY", "Operation"]
