"""`ecm upgrade --sql`: every pending step through a phase as one psql script, changing nothing.

The script is assembled here rather than by ``alembic upgrade --sql`` through the
application's env.py, for three reasons:

* Alembic wraps the whole run in one BEGIN/COMMIT and its ``autocommit_block`` cuts that
  transaction wherever a revision needs CONCURRENTLY, so "one transaction per migration"
  is not what actually runs; ecm states the real shape instead: each step is its own
  transaction and is safe to run again (see :mod:`.offline`).
* Alembic moves the version row with ``UPDATE alembic_version``, which makes squawk judge
  every statement by whether it commits together with that UPDATE (sbdchd/squawk#1311).
  No phase with a CONCURRENTLY step can do that, so the version row moves with an
  ``INSERT ... SELECT`` conditioned on the previous revision plus a ``DELETE``, in the
  revision's last transaction: running the script twice never leaves two rows.
* Alembic creates a missing version table as ``varchar(32)`` without IF NOT EXISTS; here
  it is ``text`` with a length CHECK (Alembic only reads and writes the strings).

The version table is ``alembic_version`` in the search path, as the live runner assumes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..settings import control_schema
from .offline import backfill_sql, comment, ddl_timeouts, psql_if, reset_timeouts
from .project import CONTRACT_VERSION_TABLE, Project
from .runner import PHASE_ORDER, _app_config, app_heads, pending_contracts, pending_revisions

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

_EMPTY_TRANSACTION = re.compile(r"\ABEGIN;\s*COMMIT;\s*")


def offline_sql(project: Project, engine: Engine, phase: str) -> str:
    """Every pending step through ``phase`` as one psql script; changes nothing."""
    from ..db import control, ledger
    from .runner import env

    if phase not in PHASE_ORDER:
        raise BadInput(f"--phase must be one of {', '.join(PHASE_ORDER)}, not {phase!r}")
    schema = control_schema()
    cfg = _app_config(project)
    script = project.script()
    with engine.connect() as conn:
        control_version = control.current_revision(conn)
        app_current = app_heads(project, conn)
        app_table = _exists(conn, _app_table(project))
        contract_table = _exists(conn, f"{_q(schema)}.{_q(CONTRACT_VERSION_TABLE)}")
        contracts = pending_contracts(project, conn) if phase == "contract" else []
        plans = ledger.plans(conn) if control_version is not None and phase != "expand" else []
        conn.rollback()
    if len(app_current) > 1 or len(script.get_heads()) > 1:
        raise BadInput(
            "the application's Alembic line has several heads; --sql renders a single line: "
            "merge the heads first (`alembic merge heads`)"
        )
    revisions = pending_revisions(script, app_current) if script.get_heads() else []

    parts = [
        f"-- expandcontract: pending steps through phase {phase}, rendered from the database's state.\n"
        "-- Run with: psql -v ON_ERROR_STOP=1 -X -f THIS_FILE DATABASE_URL (never with -1 / --single-transaction:\n"
        "-- CONCURRENTLY steps and the backfill's COMMITs need autocommit). Every step is safe to run again.",
        "\\set ON_ERROR_STOP on",
        ddl_timeouts(),
    ]
    if control_version != control.head_revision():
        parts.append(_control_schema_sql(control_version, schema))
    with env(ECM_BACKFILL="defer" if phase == "expand" else "inline"):
        if revisions:
            parts.append(_app_line_sql(project, cfg, script, revisions, create_table=not app_table))
    if PHASE_ORDER.index(phase) >= 1:
        parts.extend(_deferred_backfills_sql(plans, schema))
    if contracts:
        parts.append(_contracts_sql(project, contracts, schema, create_table=not contract_table))
    parts.append(reset_timeouts())
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


def _app_table(project: Project) -> str:
    """The application line's version table, qualified when env.py puts it in a schema."""
    table = _q(project.version_table)
    return f"{_q(project.version_table_schema)}.{table}" if project.version_table_schema else table


def _q(name: str) -> str:
    from ..sql.quoting import q

    return q(name)


def _exists(conn: Connection, relation: str) -> bool:
    from ..sql.quoting import literal

    return conn.exec_driver_sql(f"SELECT to_regclass({literal(relation)}) IS NOT NULL").scalar() is True


def version_table_sql(table: str) -> str:
    """The version table Alembic would create, as text with a length CHECK (squawk: prefer-text-field)."""
    name = table.rsplit(".", 1)[-1].strip('"')
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "    version_num text NOT NULL,\n"
        f"    CONSTRAINT {_q(name + '_pkc')} PRIMARY KEY (version_num),\n"
        f"    CONSTRAINT {_q(name + '_len')} CHECK (char_length(version_num) <= 32)\n"
        ");"
    )


def version_bump_sql(table: str, revision: str, replaces: Sequence[str], *, single_head: bool) -> str:
    """Move the version row from ``replaces`` to ``revision``; a no-op when already moved.

    ``single_head``: the line has one row (the application's), so from base the row is
    inserted only into an empty table; the contract lineage keeps one row per branch.
    """
    from ..sql.quoting import literal

    rev = literal(revision)
    if replaces:
        old = ", ".join(literal(r) for r in replaces)
        return (
            f"INSERT INTO {table} (version_num) SELECT {rev}\n"
            f" WHERE EXISTS (SELECT 1 FROM {table} WHERE version_num IN ({old}))\n"
            f"   AND NOT EXISTS (SELECT 1 FROM {table} WHERE version_num = {rev});\n"
            f"DELETE FROM {table} WHERE version_num IN ({old});"
        )
    if single_head:
        return f"INSERT INTO {table} (version_num) SELECT {rev} WHERE NOT EXISTS (SELECT 1 FROM {table});"
    return (
        f"INSERT INTO {table} (version_num) SELECT {rev}\n"
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE version_num = {rev});"
    )


def _down_revisions(rev: Script) -> tuple[str, ...]:
    down = rev.down_revision
    if down is None:
        return ()
    return (down,) if isinstance(down, str) else tuple(down)


def _render(
    cfg: Config,
    script: ScriptDirectory,
    revisions: Iterable[Script],
    call: Callable[[Script], None],
    after: Callable[[Script], str],
    pending: Callable[[Script], str] | None = None,
) -> str:
    """Each revision's upgrade() in offline mode, between our own BEGIN and COMMIT.

    The revision's transaction is open while it runs (as under Alembic), so plain ``op``
    calls of hand-written revisions land in it and ecm revisions close it themselves
    (``autocommit_block``); ``after`` adds the bookkeeping that commits with it.
    ``pending`` is a query that is true while the revision has not been applied: the
    whole revision runs under a psql ``\\if`` on it, so a script run again (or resumed
    after a failure) skips what is done. Steps are idempotent, but a finished revision
    is not harmless to repeat: the expand's sync trigger would come back after the
    contract dropped the old column.
    """
    from alembic.operations import Operations
    from alembic.runtime.environment import EnvironmentContext

    chunks: list[str] = []
    environment = EnvironmentContext(cfg, script, as_sql=True)
    with environment:  # the `alembic.context` proxy, for revisions that ask is_offline_mode()
        for rev in revisions:
            buffer = io.StringIO()
            environment.configure(
                dialect_name="postgresql",
                output_buffer=buffer,
                transactional_ddl=True,
                literal_binds=True,
            )
            ctx = environment.get_context()
            buffer.write("BEGIN;\n\n")
            with Operations.context(ctx):
                call(rev)
            buffer.write(after(rev) + "\nCOMMIT;")
            doc = (rev.doc or "").strip().splitlines()
            title = comment(f"revision {rev.revision}" + (f": {doc[0]}" if doc else ""))
            body = _EMPTY_TRANSACTION.sub("", buffer.getvalue()).strip()
            chunks.append(title + "\n" + (psql_if(pending(rev), body) if pending else body))
    return "\n\n".join(chunks)


def _app_line_sql(
    project: Project,
    cfg: Config,
    script: ScriptDirectory,
    revisions: Sequence[Script],
    *,
    create_table: bool,
) -> str:
    table = _app_table(project)
    head = [comment(f"application line ({table}): {len(revisions)} revision(s)")]
    if create_table:
        head.append(version_table_sql(table))

    def bump(rev: Script) -> str:
        return version_bump_sql(table, rev.revision, _down_revisions(rev), single_head=True)

    def pending(rev: Script) -> str:
        return pending_sql(table, _down_revisions(rev), rev.revision, single_head=True)

    body = _render(cfg, script, revisions, lambda rev: rev.module.upgrade(), bump, pending)
    return "\n\n".join([*head, body])


def pending_sql(table: str, replaces: Sequence[str], revision: str, *, single_head: bool) -> str:
    """True while ``revision`` is still to apply: its predecessor holds the row (or, from base, no row does)."""
    from ..sql.quoting import literal

    if replaces:
        old = ", ".join(literal(r) for r in replaces)
        return f"SELECT EXISTS (SELECT 1 FROM {table} WHERE version_num IN ({old}))"
    if single_head:
        return f"SELECT NOT EXISTS (SELECT 1 FROM {table})"
    return f"SELECT NOT EXISTS (SELECT 1 FROM {table} WHERE version_num = {literal(revision)})"


def _contracts_sql(project: Project, contracts: Sequence[Script], schema: str, *, create_table: bool) -> str:
    table = f"{_q(schema)}.{_q(CONTRACT_VERSION_TABLE)}"
    head = [comment(f"contract lineage ({schema}.{CONTRACT_VERSION_TABLE}): {len(contracts)} contract(s)")]
    if create_table:
        head.append(version_table_sql(table))
    contract_script = project.contract_script()
    assert contract_script is not None

    def bump(rev: Script) -> str:
        return version_bump_sql(table, rev.revision, _down_revisions(rev), single_head=False)

    def pending(rev: Script) -> str:
        return pending_sql(table, _down_revisions(rev), rev.revision, single_head=False)

    body = _render(
        project.contract_config(), contract_script, contracts, lambda rev: rev.module.upgrade(), bump, pending
    )
    return "\n\n".join([*head, body])


def _control_schema_sql(current: str | None, schema: str) -> str:
    """The control schema's own migrations, before anything that writes to it."""
    from alembic.script import ScriptDirectory

    from ..db import control

    cfg = control.alembic_config(None, schema)
    script = ScriptDirectory.from_config(cfg)
    revisions = pending_revisions(script, (current,) if current else ())
    table = f"{_q(schema)}.{_q(control.VERSION_TABLE)}"

    def bump(rev: Script) -> str:
        # The migration itself creates the schema, so its version table comes after it.
        return (
            version_table_sql(table)
            + "\n"
            + version_bump_sql(table, rev.revision, _down_revisions(rev), single_head=True)
        )

    body = _render(cfg, script, revisions, lambda rev: rev.module.upgrade(control_schema=schema), bump)
    return (
        comment(f"control schema {schema}: {current or 'absent'} -> {control.head_revision()}")
        + f"\n\n{body}"
    )


def _deferred_backfills_sql(plans: Sequence[dict[str, Any]], schema: str) -> list[str]:
    """Backfills the database records as not complete (deferred by an earlier expand), as the live runner runs them."""
    import json

    from ..sql.quoting import literal

    s = _q(schema)
    parts: list[str] = []
    for row in plans:
        spec_json = (row.get("spec") or {}).get("backfill")
        if not spec_json or row["phase"] in ("contracted", "aborted"):
            continue
        if row["backfill_status"] == "none" and row["phase"] in ("planned", "expanding"):
            continue
        plan_id = literal(row["plan_id"])
        chunk = [comment(f"deferred backfill of plan {row['plan_id']} (status {row['backfill_status']})")]
        if row["backfill_status"] != "complete":
            chunk += [backfill_sql(spec_json), ddl_timeouts()]
        detail = literal(json.dumps({"offline": True}))
        chunk.append(
            "BEGIN;\n"
            f"UPDATE {s}.plans SET phase = 'backfilled', updated_at = now()\n"
            f" WHERE plan_id = {plan_id} AND backfill_status = 'complete' AND phase IN ('expanded', 'backfilling');\n"
            f"INSERT INTO {s}.ledger (plan_id, phase, step, finished_at, outcome, detail) VALUES "
            f"({plan_id}, 'backfill', 'offline script', now(), 'ok', {detail}::jsonb);\n"
            "COMMIT;"
        )
        parts.append("\n\n".join(chunk))
    return parts
