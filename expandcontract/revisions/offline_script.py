"""`ecm upgrade --sql`: every pending step through a phase as one psql script, changing nothing."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from ..errors import BadInput
from ..settings import control_schema
from .project import CONTRACT_VERSION_TABLE, Project
from .runner import PHASE_ORDER, _app_config, current_heads, env, pending_contracts, pending_revisions

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def offline_sql(project: Project, engine: Engine, url: str, phase: str) -> str:
    """Every pending step through ``phase`` as one psql script; changes nothing."""
    from alembic import command
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from ..db import control
    from ..sql.quoting import literal, q

    if phase not in PHASE_ORDER:
        raise BadInput(f"--phase must be one of {', '.join(PHASE_ORDER)}, not {phase!r}")
    cfg = _app_config(project, url)
    out = io.StringIO()
    out.write("-- expandcontract: pending steps through phase " + phase + "\n")
    out.write("-- run with: psql -v ON_ERROR_STOP=1 -f this.sql (not inside a transaction block)\n")
    with engine.connect() as conn:
        control_version = control.current_revision(conn)
        app_current = current_heads(conn)
        contract_script = project.contract_script()
        contracts = pending_contracts(project, conn) if phase == "contract" and control_version else []
        if phase == "contract" and not control_version and contract_script is not None:
            contracts = list(reversed(list(contract_script.walk_revisions())))
        conn.rollback()
    if control_version is None:
        out.write(control.offline_sql())
    if len(app_current) > 1:
        raise BadInput("the database has several Alembic heads; --sql needs a single starting revision")
    start = app_current[0] if app_current else None
    cfg.output_buffer = out
    script = project.script()
    if script.get_heads() and pending_revisions(script, app_current):
        with env(ECM_BACKFILL="defer" if phase == "expand" else "inline"):
            command.upgrade(cfg, f"{start}:heads" if start else "heads", sql=True)
    if contracts:
        s = q(control_schema())
        out.write(
            f"\nCREATE TABLE IF NOT EXISTS {s}.{q(CONTRACT_VERSION_TABLE)} "
            f"(version_num varchar(32) NOT NULL, CONSTRAINT contract_version_pkc PRIMARY KEY (version_num));\n"
        )
        for rev in contracts:
            ctx = MigrationContext.configure(
                dialect_name="postgresql",
                opts={"as_sql": True, "output_buffer": out, "transactional_ddl": True, "literal_binds": True},
            )
            out.write("BEGIN;\n")
            with Operations.context(ctx):
                rev.module.upgrade()
            out.write(
                f"INSERT INTO {s}.{q(CONTRACT_VERSION_TABLE)} (version_num) VALUES ({literal(rev.revision)});\n"
            )
            out.write("COMMIT;\n")
    return out.getvalue()
