"""Instances carry a role: server, worker or cli.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

A reporter started by a command-line run (``flask db upgrade``, ``ecm`` itself loading the
application's env.py) used to look like a server, and its deregistered row satisfied the
guard's "someone reported" rule with no server running. Existing rows were written by
reporters that knew no roles, so they become servers, as they were treated until now.

A constant default makes ADD COLUMN a catalog-only change (PostgreSQL 11+): no rewrite,
and the brief ACCESS EXCLUSIVE lock on the registry does not outlast the transaction.
"""

from __future__ import annotations

from alembic import op

from expandcontract.sql.quoting import q

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade(control_schema: str) -> None:
    s = q(control_schema)
    op.execute(f"ALTER TABLE {s}.instances ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'server'")


def downgrade(control_schema: str) -> None:
    s = q(control_schema)
    op.execute(f"ALTER TABLE {s}.instances DROP COLUMN IF EXISTS role")
