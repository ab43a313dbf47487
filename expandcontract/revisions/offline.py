"""Offline rendering: a phase's steps as SQL that ``psql -v ON_ERROR_STOP=1`` runs.

Used when Alembic runs with ``--sql``. Steps that cannot run in a transaction block
(CONCURRENTLY, the backfill procedure's COMMITs) go inside Alembic's
``autocommit_block()``, which writes COMMIT/BEGIN around them. Retries cannot be
expressed in a script; a failed statement stops psql and the script can be fixed and
resumed by hand, or the phase run live with ``ecm upgrade``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..plan.model import Step
from ..settings import control_schema, get
from ..sql.quoting import literal, q, qualified


def _out(text: str) -> None:
    from alembic import op

    op.get_context().impl.static_output(text.rstrip().rstrip(";") + ";\n")


def statement(step: Step) -> str:
    """The step's SQL with its squawk-ignore comments (reason line first, then the rule)."""
    lines = [f"-- step: {step.name}" + (f" ({step.lock})" if step.lock else "")]
    for rule, reason in step.squawk_ignore:
        lines.append(f"-- ecm: {reason}")
        lines.append(f"-- squawk-ignore {rule}")
    return "\n".join(lines) + "\n" + step.sql


def _timeouts(concurrent: bool) -> None:
    _out(f"SET lock_timeout = {literal('0' if concurrent else get('ECM_LOCK_TIMEOUT'))}")
    _out(f"SET statement_timeout = {literal('0' if concurrent else get('ECM_STATEMENT_TIMEOUT'))}")


def emit_phase(
    plan: dict[str, Any], phase: str, direction: str, steps: Sequence[Step], *, revision: str
) -> None:
    from alembic import op

    ctx = op.get_context()
    label = phase if direction == "upgrade" else f"{phase}-downgrade"
    ctx.impl.static_output(f"\n-- ecm {label} of plan {plan['plan_id']} (revision {revision})\n")
    _timeouts(False)
    for step in steps:
        if step.kind == "concurrent":
            with ctx.autocommit_block():
                _timeouts(True)
                _out(statement(step))
                _timeouts(False)
        elif step.kind == "guard":
            _out(guard_sql(plan, contract=(phase == "contract" and direction == "upgrade")))
        elif step.kind == "backfill":
            reverse = direction == "downgrade"
            if not reverse and get("ECM_BACKFILL").lower() == "defer":
                _out(_status_sql(plan["plan_id"], "pending"))
                continue
            from ..backfill.offline import procedure_sql
            from ..backfill.spec import BackfillSpec

            spec = BackfillSpec.from_json(plan["reverse_backfill" if reverse else "backfill"])
            with ctx.autocommit_block():
                _timeouts(True)
                for sql in _split_procedure(procedure_sql(spec, schema=control_schema())):
                    _out(sql)
                _timeouts(False)
        else:
            _out(statement(step))
    for sql in ledger_sql(plan, label, revision):
        _out(sql)
    _out("RESET lock_timeout")
    _out("RESET statement_timeout")


def _split_procedure(sql: str) -> list[str]:
    """procedure_sql returns CREATE PROCEDURE ...; CALL ...; as one text: emit them separately."""
    parts: list[str] = []
    current: list[str] = []
    in_dollar = False
    for line in sql.splitlines():
        current.append(line)
        in_dollar ^= line.count("$$") % 2 == 1 or (line.count("$ecm") % 2 == 1)
        if not in_dollar and line.rstrip().endswith(";"):
            parts.append("\n".join(current))
            current = []
    if "".join(current).strip():
        parts.append("\n".join(current))
    return parts


def _status_sql(plan_id: str, status: str) -> str:
    return (
        f"UPDATE {q(control_schema())}.plans SET backfill_status = {literal(status)}, updated_at = now() "
        f"WHERE plan_id = {literal(plan_id)}"
    )


def ledger_sql(plan: dict[str, Any], label: str, revision: str) -> list[str]:
    from .runtime import PHASE_STATE, _ledger_spec

    s = q(control_schema())
    phase, _, down = label.partition("-")
    state = PHASE_STATE[(phase, "downgrade" if down else "upgrade")]
    spec = json.dumps(_ledger_spec(plan), default=str)
    return [
        f"INSERT INTO {s}.plans (plan_id, operation, table_schema, table_name, spec, phase) VALUES "
        f"({literal(plan['plan_id'])}, {literal(plan['operation'])}, {literal(plan['schema'])}, "
        f"{literal(plan['table'])}, {literal(spec)}::jsonb, {literal(state)}) "
        f"ON CONFLICT (plan_id) DO UPDATE SET phase = EXCLUDED.phase, spec = EXCLUDED.spec, updated_at = now()",
        f"INSERT INTO {s}.ledger (plan_id, revision, phase, step, finished_at, outcome, detail) VALUES "
        f"({literal(plan['plan_id'])}, {literal(revision)}, {literal(label)}, 'offline script', now(), 'ok', "
        f"'{{\"offline\": true}}'::jsonb)",
    ]


def guard_sql(plan: dict[str, Any], *, contract: bool) -> str:
    """A DO block that raises, before any DDL, when the contract (or an expand rollback) is unsafe."""
    s = q(control_schema())
    ttl = get("ECM_LIVE_TTL")
    ttl_sql = f"make_interval(secs => {float(ttl)})" if ttl else "make_interval(secs => 3 * i.interval_s)"
    removes: dict[str, list[str]] = plan["removes"] if contract else plan["adds"]
    allow_no_reporters = get("ECM_ALLOW_NO_REPORTERS").lower() in ("1", "true", "yes", "on")
    checks: list[str] = []
    if contract:
        bf = plan["backfill"]
        checks.append(
            f"    IF EXISTS (SELECT 1 FROM {qualified(bf['schema'], bf['table'])} WHERE {bf['mismatch_sql']} LIMIT 1) THEN\n"
            f"        RAISE EXCEPTION 'ecm: contract % refused: rows of % are out of step; run the backfill first',\n"
            f"            {literal(plan['plan_id'])}, {literal(bf['schema'] + '.' + bf['table'])};\n"
            "    END IF;"
        )
    for table, columns in removes.items():
        cols = ", ".join(literal(c) for c in columns)
        checks.append(
            "    SELECT string_agg(format('%s %s (host %s pid %s, last seen %s s ago) still maps %s.%s',\n"
            "               i.app, i.version, i.host, i.pid,\n"
            "               round(extract(epoch FROM now() - i.last_heartbeat)), "
            f"{literal(table)}, c.col), '; ')\n"
            f"      INTO live FROM {s}.instances i,\n"
            f"           jsonb_array_elements_text(i.uses -> {literal(table)}) AS c(col)\n"
            f"     WHERE i.deregistered_at IS NULL AND now() - i.last_heartbeat <= {ttl_sql}\n"
            f"       AND c.col IN ({cols});\n"
            "    IF live IS NOT NULL THEN\n"
            f"        RAISE EXCEPTION 'ecm: % of % refused: %', {literal('contract' if contract else 'rollback of expand')}, "
            f"{literal(plan['plan_id'])}, live;\n"
            "    END IF;"
        )
    if not allow_no_reporters:
        checks.append(
            f"    IF NOT EXISTS (SELECT 1 FROM {s}.instances i WHERE now() - i.last_heartbeat <= {ttl_sql}) THEN\n"
            "        RAISE EXCEPTION 'ecm: % of % refused: no application instance has reported recently, so "
            "nothing proves old code is gone (regenerate with ECM_ALLOW_NO_REPORTERS=1 to accept)', "
            f"{literal('contract' if contract else 'rollback of expand')}, {literal(plan['plan_id'])};\n"
            "    END IF;"
        )
    body = "\n".join(checks)
    return f"DO $ecm_guard$\nDECLARE\n    live text;\nBEGIN\n{body}\nEND\n$ecm_guard$"
