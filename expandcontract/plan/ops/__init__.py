"""The registry of operations: ``ecm plan OPERATION`` for each entry, one line per operation."""

from __future__ import annotations

from .add_check import AddCheck
from .add_column import AddColumn
from .add_foreign_key import AddForeignKey
from .add_index import AddIndex
from .add_unique import AddUnique
from .base import Operation
from .bigint_key import BigintKey
from .change_type import ChangeType
from .custom import Custom
from .drop_column import DropColumn
from .drop_index import DropIndex
from .drop_table import DropTable
from .merge_columns import MergeColumns
from .rename_column import RenameColumn
from .rename_table import RenameTable
from .set_not_null import SetNotNull
from .split_column import SplitColumn

REGISTRY: dict[str, type[Operation]] = {
    op.kind: op
    for op in (
        RenameColumn,
        SetNotNull,
        ChangeType,
        AddColumn,
        DropColumn,
        RenameTable,
        DropTable,
        AddIndex,
        DropIndex,
        AddUnique,
        AddForeignKey,
        AddCheck,
        BigintKey,
        SplitColumn,
        MergeColumns,
        Custom,
    )
}

__all__ = ["REGISTRY", "Operation"]
