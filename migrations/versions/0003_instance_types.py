"""Instances register the type and nullability of each column they map.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10

A contract that changes a column's type under the same name, or makes it NOT NULL,
breaks running code that maps the old type or writes NULL, without removing anything the
guard could see by name. ``types`` holds, per mapped table and column, the type as
SQLAlchemy compiles it for PostgreSQL and whether the model maps it as nullable:
``{"public.items": {"qty": {"type": "INTEGER", "nullable": false}}}``.

Nullable without a default: existing rows were written by reporters that registered no
types, and NULL says exactly that (the guard cannot tell how they map a retyped column,
and still reads their names). ADD COLUMN without a default is a catalog-only change, and
the brief ACCESS EXCLUSIVE lock on the registry does not outlast the transaction.
"""

from __future__ import annotations

from alembic import op

from expandcontract.sql.quoting import q

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade(control_schema: str) -> None:
    s = q(control_schema)
    op.execute(f"ALTER TABLE {s}.instances ADD COLUMN IF NOT EXISTS types jsonb")


def downgrade(control_schema: str) -> None:
    s = q(control_schema)
    op.execute(f"ALTER TABLE {s}.instances DROP COLUMN IF EXISTS types")
