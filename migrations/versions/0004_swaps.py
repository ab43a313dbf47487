"""Swaps under a column's own name, announced to live instances before they happen.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-20

A contract that changes a column's type under the same name (change-type's swap or its
in-place ALTER, and their downgrades) changes the result type of every statement the
running code has prepared: psycopg 3 prepares a statement after five executions, and after
the swap every execution of it fails with ``cached plan must not change result type``.
The contract first writes a row in ``swaps``; each live instance's reporter sees it on its
next heartbeat, stops preparing and forgets what its connections prepared, and confirms in
``swap_acks``. The contract swaps only once every live instance that maps the table has
confirmed, then marks the swap finished, and reporters go back to preparing.
"""

from __future__ import annotations

from alembic import op

from expandcontract.sql.quoting import q

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade(control_schema: str) -> None:
    s = q(control_schema)
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {s}.swaps (
            swap_id text PRIMARY KEY,
            table_name text NOT NULL,
            announced_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {s}.swap_acks (
            swap_id text NOT NULL REFERENCES {s}.swaps (swap_id) ON DELETE CASCADE,
            instance_id uuid NOT NULL,
            protected boolean NOT NULL,
            detail text,
            acked_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (swap_id, instance_id)
        )
        """
    )


def downgrade(control_schema: str) -> None:
    s = q(control_schema)
    op.execute(f"DROP TABLE IF EXISTS {s}.swap_acks")
    op.execute(f"DROP TABLE IF EXISTS {s}.swaps")
