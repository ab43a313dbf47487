"""Control schema: plans ledger, backfill checkpoints, live application instances.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Statements use IF NOT EXISTS so that an offline script, or a database where a
crashed run left part of the schema, can be brought forward without manual repair.
"""

from __future__ import annotations

from alembic import op

from expandcontract.sql.quoting import q

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(control_schema: str) -> None:
    s = q(control_schema)
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    # One row per plan: what it changes and how far it got.
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {s}.plans (
            plan_id text PRIMARY KEY,
            operation text NOT NULL,
            table_schema text NOT NULL,
            table_name text NOT NULL,
            spec jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            phase text NOT NULL DEFAULT 'planned',
            backfill_status text NOT NULL DEFAULT 'none',
            backfill_rows_estimate bigint,
            backfill_completed_at timestamptz,
            verified_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Append-only record of every step run: who ran what, when, and how it ended.
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {s}.ledger (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            plan_id text,
            revision text,
            phase text NOT NULL,
            step text,
            started_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            outcome text NOT NULL DEFAULT 'running',
            actor text NOT NULL DEFAULT current_user,
            detail jsonb NOT NULL DEFAULT '{{}}'::jsonb
        )
        """
    )
    op.execute(f"CREATE INDEX IF NOT EXISTS ledger_plan_idx ON {s}.ledger (plan_id, started_at)")
    # Backfill progress per plan and chunk (one chunk per worker's claim).
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {s}.backfill_checkpoints (
            plan_id text NOT NULL,
            chunk bigint NOT NULL DEFAULT 0,
            lo_key jsonb,
            hi_key jsonb,
            last_key jsonb,
            rows_done bigint NOT NULL DEFAULT 0,
            batch_size bigint NOT NULL DEFAULT 0,
            worker text,
            lease_expires_at timestamptz,
            started_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            PRIMARY KEY (plan_id, chunk)
        )
        """
    )
    # Live application instances and the schema they map; liveness uses the DB clock.
    op.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {s}.instances (
            id uuid PRIMARY KEY,
            app text NOT NULL,
            version text NOT NULL,
            host text NOT NULL,
            pid bigint NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            last_heartbeat timestamptz NOT NULL DEFAULT now(),
            interval_s double precision NOT NULL DEFAULT 10,
            uses jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            deregistered_at timestamptz
        )
        """
    )
    op.execute(f"CREATE INDEX IF NOT EXISTS instances_heartbeat_idx ON {s}.instances (last_heartbeat)")


def downgrade(control_schema: str) -> None:
    s = q(control_schema)
    for table in ("instances", "backfill_checkpoints", "ledger", "plans"):
        op.execute(f"DROP TABLE IF EXISTS {s}.{table}")
