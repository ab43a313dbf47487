"""CHECK constraints, compared by name: the comparison Alembic does not make.

Alembic's autogenerate never compares CHECK constraints. Opted in (``ecm plan auto
--checks``, or ``expandcontract.autogen.rewrite.with_checks()`` in env.py), a named check the
models declare on an existing table and the database lacks becomes an ``add_check`` in the
diff (then an ``add-check`` plan), and a named check the database has and the models do
not becomes a ``drop_constraint``. Only names are compared: a check whose expression
changed under the same name is not detected, and unnamed checks are ignored (their names
are the server's invention). Checks that in-flight plans own are left out through the
project's ``include_object``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.operations.ops import UpgradeOps


def _tables(metadata: Any) -> list[Any]:
    metadatas = metadata if isinstance(metadata, (list, tuple)) else [metadata]
    return [t for md in metadatas for t in md.tables.values()]


def _named_checks(table: Any) -> dict[str, Any]:
    from sqlalchemy import CheckConstraint

    out = {}
    for c in table.constraints:
        name = getattr(c, "name", None)
        if isinstance(c, CheckConstraint) and isinstance(name, str) and not name.startswith("_unnamed"):
            out[name] = c
    return out


def compare_checks(context: Any, metadata: Any, upgrade_ops: UpgradeOps) -> None:
    """Add the named-check differences of existing tables to ``upgrade_ops``."""
    from alembic.operations import ops
    from sqlalchemy import CheckConstraint, MetaData, Table, inspect

    inspector = inspect(context.connection)
    include = context.opts.get("include_object")
    default_schema = context.connection.dialect.default_schema_name
    for table in _tables(metadata):
        schema = table.schema
        if not inspector.has_table(table.name, schema=schema):
            continue  # a new table: created with its checks
        declared = _named_checks(table)
        found = {
            c["name"]: c for c in inspector.get_check_constraints(table.name, schema=schema) if c.get("name")
        }
        new: list[Any] = []
        for name, constraint in declared.items():
            if name not in found:
                new.append(ops.CreateCheckConstraintOp.from_constraint(constraint))
        for name, reflected in found.items():
            if name in declared:
                continue
            stand_in = CheckConstraint(reflected["sqltext"], name=name)
            Table(table.name, MetaData(), stand_in, schema=schema)  # the filter looks at its table
            if include is not None and not include(stand_in, name, "check_constraint", True, None):
                continue
            new.append(ops.DropConstraintOp(name, table.name, type_="check", schema=schema))
        if not new:
            continue
        holder = next(
            (
                item
                for item in upgrade_ops.ops
                if isinstance(item, ops.ModifyTableOps)
                and item.table_name == table.name
                and (item.schema or default_schema) == (schema or default_schema)
            ),
            None,
        )
        if holder is None:
            holder = ops.ModifyTableOps(table.name, [], schema=schema)
            upgrade_ops.ops.append(holder)
        holder.ops.extend(new)
