"""Offline rendering: a phase's steps as SQL that ``psql -v ON_ERROR_STOP=1`` runs.

Used when Alembic runs with ``--sql`` (``ecm upgrade --sql`` or plain ``alembic upgrade
--sql``). The script keeps the live runner's shape instead of Alembic's "one transaction
per migration": every step is its own short transaction with the same timeouts, and
CONCURRENTLY steps and the backfill's ``CALL`` run outside any transaction block.

Retries cannot be expressed in a script, so every step is made safe to run twice instead:
statements carry IF [NOT] EXISTS, a step with a ``skip_if`` probe runs under a psql
``\\if`` on that probe, and an index build left INVALID by an interrupted run is dropped
before it is built again. A failed script can therefore be fixed and simply run again
(or regenerated with ``ecm upgrade --sql``, which starts from the database's state).

Text goes out through ``static_output``: ``op.execute`` would hand the SQL to
SQLAlchemy's ``text()``, which reads ``:name`` inside it as bind parameters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..plan.model import Step
from ..settings import control_schema, get
from ..sql.quoting import literal, q, qualified
from ..sql.rewrite import has_keyword

#: The psql variable the ``\\if`` guards read; set by ``\\gset`` right before each use.
GUARD_VARIABLE = "ecm_run"


def terminated(sql: str) -> str:
    """One statement with exactly one ``;``, never swallowed by a trailing ``--`` comment."""
    body = sql.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    last_line = body.rsplit("\n", 1)[-1]
    return body + ("\n;" if "--" in last_line else ";")


def comment(text: str) -> str:
    """A ``--`` comment line; step names carry raw identifiers, and a newline in one would end
    the comment and turn the rest of the name into SQL."""
    return "-- " + " ".join(text.replace("\r", "\n").split("\n"))


def statement(step: Step) -> str:
    """The step's SQL with its squawk-ignore comments (reason line first, then the rule)."""
    lines = [comment(f"step: {step.name}" + (f" ({step.lock})" if step.lock else ""))]
    for rule, reason in step.squawk_ignore:
        lines.append(comment(f"ecm: {reason}"))
        lines.append(comment(f"squawk-ignore {rule}"))
    return "\n".join(lines) + "\n" + terminated(step.sql)


def session_timeouts(lock_timeout: str, statement_timeout: str) -> str:
    """Session-level SET (not set_config): squawk only recognizes SET as a timeout setting."""
    return (
        f"SET lock_timeout = {literal(lock_timeout)};\nSET statement_timeout = {literal(statement_timeout)};"
    )


def ddl_timeouts() -> str:
    return session_timeouts(get("ECM_LOCK_TIMEOUT"), get("ECM_STATEMENT_TIMEOUT"))


def reset_timeouts() -> str:
    return "RESET lock_timeout;\nRESET statement_timeout;"


def psql_if(condition_sql: str, body: str) -> str:
    """Run ``body`` only when the boolean query says so; psql evaluates it, the script stays plain SQL."""
    return (
        f"SELECT ({condition_sql.strip().rstrip(';')}) AS {GUARD_VARIABLE} \\gset\n"
        f"\\if :{GUARD_VARIABLE}\n{body}\n\\endif"
    )


def outside_transaction(step: Step) -> bool:
    """CONCURRENTLY cannot run in a transaction block; every other step gets one of its own."""
    return step.kind == "concurrent" and has_keyword(step.sql, "concurrently")


def render_step(step: Step) -> str:
    if step.kind == "concurrent":
        # Like the live executor: no timeouts while a build or validation waits and scans
        # (it blocks no reads or writes), then back to the short-DDL timeouts.
        parts = [session_timeouts("0", "0")]
        if step.index:
            parts.append(
                psql_if(
                    "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = "
                    f"to_regclass({literal(step.index)}) AND NOT indisvalid)",
                    comment(f"an interrupted build left {step.index} INVALID: drop it and build it again")
                    + "\n"
                    f"DROP INDEX CONCURRENTLY IF EXISTS {step.index};",
                )
            )
        body = statement(step)
        body = body if outside_transaction(step) else f"BEGIN;\n{body}\nCOMMIT;"
        if step.skip_if:
            body = psql_if(f"NOT ({step.skip_if.strip().rstrip(';')})", body)
        parts.append(body)
        parts.append(ddl_timeouts())
        return "\n".join(parts)
    body = f"BEGIN;\n{statement(step)}\nCOMMIT;"
    if step.skip_if:
        return psql_if(f"NOT ({step.skip_if.strip().rstrip(';')})", body)
    return body


def render_phase(
    plan: dict[str, Any], phase: str, direction: str, steps: Sequence[Step], *, revision: str
) -> str:
    """Every step of one phase, starting and ending outside any transaction block."""
    label = phase if direction == "upgrade" else f"{phase}-downgrade"
    chunks = [comment(f"ecm {label} of plan {plan['plan_id']} (revision {revision})"), ddl_timeouts()]
    for step in steps:
        if step.kind == "guard":
            chunks.append(
                comment(f"step: {step.name}")
                + "\n"
                + terminated(guard_sql(plan, contract=_is_contract(phase, direction)))
            )
        elif step.kind == "backfill" and step.sql:  # another table's backfill (bigint-key)
            chunks.append(_extra_backfill_sql(plan, step.sql, reverse=direction == "downgrade"))
        elif step.kind == "backfill":
            chunks.append(_backfill_sql(plan, reverse=direction == "downgrade"))
        elif step.kind == "swap":
            chunks.append(swap_sql(plan, label, step))
        elif step.kind == "precheck":
            chunks.append(precheck_sql(step))
        else:
            chunks.append(render_step(step))
    chunks.append(reset_timeouts())
    return "\n\n".join(chunks)


def precheck_sql(step: Step) -> str:
    """The live precheck as a DO block: raise with the count and sample keys when rows are found."""
    from ..backfill.offline import _dollar_tag

    query = step.sql.strip().rstrip(";")
    body = (
        "DECLARE v_total bigint; v_samples text;\nBEGIN\n"
        f"    SELECT max(total), string_agg(sample, ', ') INTO v_total, v_samples FROM ({query}) v;\n"
        "    IF v_total > 0 THEN\n"
        f"        RAISE EXCEPTION '%: % row(s), e.g. %; nothing was changed', {literal(step.name)}, "
        "v_total, v_samples;\n"
        "    END IF;\nEND"
    )
    tag = _dollar_tag(body)
    return comment(f"step: {step.name}") + f"\nDO {tag}\n{body}\n{tag};"


def swap_sql(plan: dict[str, Any], label: str, step: Step) -> str:
    """The live runner's swap as psql statements: announce, wait for every live instance that maps
    the table to confirm it stopped preparing (the DO block raises past the deadline, naming
    them), the step, then finished. See :mod:`expandcontract.live.swaps`."""
    from ..guard import TTL_INTERVALS
    from ..live.swaps import GRACE_SECONDS

    s = q(control_schema())
    from .runtime import swap_table

    own, other = f"{plan['schema']}.{plan['table']}", swap_table(plan, step)
    swap_id = literal(f"{plan['plan_id']}/{label}" + (f"/{other}" if other != own else ""))
    table = literal(other)
    wait = f"""DO $ecm_wait$
DECLARE
    started timestamptz := clock_timestamp();
    left_ text;
    limit_s float8;
BEGIN
    LOOP
        SELECT string_agg(format('%s %s on %s (pid %s)%s', i.app, i.version, i.host, i.pid,
                                 coalesce(': ' || a.detail, '')), '; '),
               max(2 * i.interval_s) + {GRACE_SECONDS!r}
          INTO left_, limit_s
          FROM {s}.instances i
          LEFT JOIN {s}.swap_acks a ON a.swap_id = {swap_id} AND a.instance_id = i.id
         WHERE i.deregistered_at IS NULL
           AND i.last_heartbeat >= clock_timestamp() - make_interval(secs => {TTL_INTERVALS!r} * i.interval_s)
           AND i.uses ? {table}
           AND (a.instance_id IS NULL OR NOT a.protected);
        EXIT WHEN left_ IS NULL;
        IF extract(epoch FROM clock_timestamp() - started) > limit_s THEN
            RAISE EXCEPTION 'ecm: swap of % refused: not every live instance confirmed it stopped preparing statements: %',
                {table}, left_;
        END IF;
        PERFORM pg_sleep(0.2);
    END LOOP;
END
$ecm_wait$"""
    body = render_step(replace(step, kind="ddl"))
    return "\n\n".join(
        [
            comment(f"step: announce the swap of {plan['schema']}.{plan['table']} to live instances"),
            f"INSERT INTO {s}.swaps (swap_id, table_name) VALUES ({swap_id}, {table})\n"
            "ON CONFLICT (swap_id) DO UPDATE SET announced_at = now(), finished_at = NULL;",
            f"DELETE FROM {s}.swap_acks WHERE swap_id = {swap_id};",
            comment("wait until each one confirmed it stopped preparing statements (their next heartbeat)")
            + "\n"
            + terminated(wait),
            body,
            f"UPDATE {s}.swaps SET finished_at = now() WHERE swap_id = {swap_id};",
        ]
    )


def _is_contract(phase: str, direction: str) -> bool:
    return phase == "contract" and direction == "upgrade"


def _backfill_sql(plan: dict[str, Any], *, reverse: bool) -> str:
    if not reverse and get("ECM_BACKFILL").lower() == "defer":
        return (
            "-- step: backfill deferred (ECM_BACKFILL=defer): run it later with `ecm backfill`\n"
            + terminated(_pending_sql(plan["plan_id"]))
        )
    return (
        backfill_sql(plan["reverse_backfill" if reverse and plan.get("reverse_backfill") else "backfill"])
        + "\n"
        + ddl_timeouts()
    )


def _extra_backfill_sql(plan: dict[str, Any], name: str, *, reverse: bool) -> str:
    from .runtime import extra_backfill

    if not reverse and get("ECM_BACKFILL").lower() == "defer":
        return f"-- step: backfill {name} deferred (ECM_BACKFILL=defer): run it later with `ecm upgrade --phase backfill`"
    return backfill_sql(extra_backfill(plan, name)) + "\n" + ddl_timeouts()


def backfill_sql(spec_json: dict[str, Any]) -> str:
    """The backfill procedure and its CALL, outside any transaction block (it commits per batch)."""
    from ..backfill.offline import procedure_sql
    from ..backfill.spec import BackfillSpec

    spec = BackfillSpec.from_json(spec_json)
    parts = [
        comment(f"step: backfill {spec.plan_id}")
        + "\n"
        + procedure_sql(spec, schema=control_schema()).strip()
    ]
    if spec.indexes:
        # Built once every row is copied, then the completion record (as the engine does).
        from ..backfill.offline import completion_sql

        for step in spec.index_steps():
            parts.append(comment(f"step: {step.name} (after the copy)") + "\n" + render_step(step))
        parts.append(
            comment("the backfill is complete once its indexes exist")
            + "\n"
            + completion_sql(spec, schema=control_schema())
        )
    return "\n".join(parts)


def emit_phase(
    plan: dict[str, Any], phase: str, direction: str, steps: Sequence[Step], *, revision: str
) -> None:
    """What a generated revision writes in ``--sql`` mode.

    Alembic holds a transaction open around each migration when DDL is transactional;
    ``autocommit_block`` closes it (COMMIT) before the steps and reopens it (BEGIN) after,
    so the ledger rows below commit together with Alembic's version bump.
    """
    from alembic import op

    ctx = op.get_context()
    text = render_phase(plan, phase, direction, steps, revision=revision)
    with ctx.autocommit_block():
        ctx.impl.static_output(text)
    label = phase if direction == "upgrade" else f"{phase}-downgrade"
    ctx.impl.static_output("\n".join(ledger_sql(plan, label, revision)))


def _pending_sql(plan_id: str) -> str:
    return (
        f"UPDATE {q(control_schema())}.plans SET backfill_status = 'pending', updated_at = now() "
        f"WHERE plan_id = {literal(plan_id)} AND backfill_status <> 'complete'"
    )


def ledger_sql(plan: dict[str, Any], label: str, revision: str) -> list[str]:
    """The plan row and a ledger entry, as the live runner records them after a phase."""
    from .runtime import _ledger_spec, phase_state

    s = q(control_schema())
    phase, _, down = label.partition("-")
    state = literal(phase_state(plan, phase, "downgrade" if down else "upgrade"))
    if (phase, down) == ("backfill", ""):
        # Live, a backfill phase that did not complete (deferred) leaves the plan expanded.
        state = (
            f"CASE WHEN (SELECT backfill_status FROM {s}.plans WHERE plan_id = {literal(plan['plan_id'])}) "
            "= 'complete' THEN 'backfilled' ELSE 'expanded' END"
        )
    spec = json.dumps(_ledger_spec(plan), default=str)
    detail: dict[str, Any] = {"offline": True}
    if phase == "contract" and not down and allow_no_reporters():
        detail["allow_no_reporters"] = True
    return [
        f"INSERT INTO {s}.plans (plan_id, operation, table_schema, table_name, spec, phase) VALUES "
        f"({literal(plan['plan_id'])}, {literal(plan['operation'])}, {literal(plan['schema'])}, "
        f"{literal(plan['table'])}, {literal(spec)}::jsonb, {state}) "
        "ON CONFLICT (plan_id) DO UPDATE SET phase = EXCLUDED.phase, spec = EXCLUDED.spec, updated_at = now();",
        f"INSERT INTO {s}.ledger (plan_id, revision, phase, step, finished_at, outcome, detail) VALUES "
        f"({literal(plan['plan_id'])}, {literal(revision)}, {literal(label)}, 'offline script', now(), 'ok', "
        f"{literal(json.dumps(detail))}::jsonb);",
    ]


def allow_no_reporters() -> bool:
    return get("ECM_ALLOW_NO_REPORTERS").lower() in ("1", "true", "yes", "on")


def guard_sql(plan: dict[str, Any], *, contract: bool) -> str:
    """A DO block that raises, before any DDL, when the contract (or an expand rollback) is unsafe.

    The live guard's rules, in PL/pgSQL, from the same :func:`~expandcontract.guard.guard_input`:
    a live instance that maps a removed column, maps a retyped column with its old type (or
    one the guard cannot judge), or maps a column made NOT NULL as nullable, stops psql.
    Type names are resolved with ``to_regtype`` when the script *runs*, inside a nested
    block, so a name the server cannot parse is "cannot tell" rather than a crash.
    """
    s = q(control_schema())
    from ..errors import BadInput
    from ..guard import guard_input, parse_ttl

    try:
        ttl = parse_ttl(get("ECM_LIVE_TTL"))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    ttl_sql = (
        f"make_interval(secs => {ttl!r})" if ttl is not None else "make_interval(secs => 3 * i.interval_s)"
    )
    protects = guard_input(plan, contract=contract)
    removes = protects.removes
    what = literal("contract" if contract else "rollback of expand")
    plan_id = literal(plan["plan_id"])
    live_sql = f"i.deregistered_at IS NULL AND now() - i.last_heartbeat <= {ttl_sql}"
    checks: list[str] = []
    bf = plan.get("backfill")
    if contract and bf:
        checks.append(
            f"    SELECT backfill_status INTO status FROM {s}.plans WHERE plan_id = {plan_id};\n"
            "    IF status IS DISTINCT FROM 'complete' THEN\n"
            "        RAISE EXCEPTION 'ecm: contract % refused: its backfill is %, not complete; run `ecm backfill %`',\n"
            f"            {plan_id}, COALESCE(status, 'not recorded'), {plan_id};\n"
            "    END IF;\n"
            f"    IF EXISTS (SELECT 1 FROM {qualified(bf['schema'], bf['table'])} WHERE {bf['mismatch_sql']} LIMIT 1) THEN\n"
            "        RAISE EXCEPTION 'ecm: contract % refused: rows of % %; %',\n"
            f"            {plan_id}, {literal(bf['schema'] + '.' + bf['table'])}, "
            f"{literal(bf.get('mismatch_label') or 'are out of step')}, "
            f"{literal(bf.get('mismatch_fix') or 'run the backfill first')};\n"
            "    END IF;"
        )
    for extra in (plan.get("spec") or {}).get("backfills") or () if contract and bf else ():
        # The plan's other tables (bigint-key's children): their rows must be in step too.
        checks.append(
            f"    IF EXISTS (SELECT 1 FROM {qualified(extra['schema'], extra['table'])} WHERE {extra['mismatch_sql']} LIMIT 1) THEN\n"
            "        RAISE EXCEPTION 'ecm: contract % refused: rows of % %; %',\n"
            f"            {plan_id}, {literal(extra['schema'] + '.' + extra['table'])}, "
            f"{literal(extra.get('mismatch_label') or 'are out of step')}, "
            f"{literal(extra.get('mismatch_fix') or 'run the backfill first')};\n"
            "    END IF;"
        )
    for table, columns in removes.items():
        if "*" in columns:  # the whole table goes: any live instance that maps it holds the change
            checks.append(
                "    SELECT string_agg(format('%s %s (host %s pid %s, last seen %s s ago) still maps %s',\n"
                "               i.app, i.version, i.host, i.pid,\n"
                "               round(extract(epoch FROM now() - i.last_heartbeat)), "
                f"{literal(table)}), '; ')\n"
                f"      INTO live FROM {s}.instances i\n"
                f"     WHERE {live_sql}\n"
                f"       AND i.uses ? {literal(table)};\n"
                "    IF live IS NOT NULL THEN\n"
                f"        RAISE EXCEPTION 'ecm: % of % refused: %', {what}, {plan_id}, live;\n"
                "    END IF;"
            )
            continue
        if not columns:
            continue
        cols = ", ".join(literal(c) for c in columns)
        checks.append(
            "    SELECT string_agg(format('%s %s (host %s pid %s, last seen %s s ago) still maps %s.%s',\n"
            "               i.app, i.version, i.host, i.pid,\n"
            "               round(extract(epoch FROM now() - i.last_heartbeat)), "
            f"{literal(table)}, c.col), '; ')\n"
            f"      INTO live FROM {s}.instances i,\n"
            f"           jsonb_array_elements_text(i.uses -> {literal(table)}) AS c(col)\n"
            f"     WHERE {live_sql}\n"
            f"       AND c.col IN ({cols});\n"
            "    IF live IS NOT NULL THEN\n"
            f"        RAISE EXCEPTION 'ecm: % of % refused: %', {what}, {plan_id}, live;\n"
            "    END IF;"
        )
    hurts = any(list(columns) for columns in removes.values())
    for brk in protects.breaks:
        checks.append(_break_sql(brk, s, live_sql))
    if protects.breaks:
        checks.append(
            "    IF cardinality(held) > 0 THEN\n"
            f"        RAISE EXCEPTION E'ecm: % of % refused:\\n  - %', {what}, {plan_id},\n"
            "            array_to_string(held, E'\\n  - ');\n"
            "    END IF;"
        )
    if not allow_no_reporters() and (hurts or protects.breaks):
        checks.append(
            # Same evidence as the live guard: a serving instance's heartbeat, or its clean
            # deregistration, within the TTL (command-line runs prove nothing); needed only
            # when the change takes something away from running code.
            f"    IF hurts AND NOT EXISTS (SELECT 1 FROM {s}.instances i\n"
            f"                   WHERE now() - COALESCE(i.deregistered_at, i.last_heartbeat) <= {ttl_sql}\n"
            "                     AND i.role IS DISTINCT FROM 'cli') THEN\n"
            "        RAISE EXCEPTION 'ecm: % of % refused: no application instance has reported recently, so "
            "nothing proves old code is gone (regenerate with ECM_ALLOW_NO_REPORTERS=1 to accept)', "
            f"{what}, {plan_id};\n"
            "    END IF;"
        )
    body = "\n".join(checks) or "    NULL;"
    declare = [
        "    live text;",
        "    status text;",
        f"    hurts boolean := {'true' if hurts else 'false'};",
    ]
    if protects.breaks:
        declare += [
            "    held text[] := ARRAY[]::text[];",
            "    r record;",
            "    who text;",
            "    old_t regtype;",
            "    new_t regtype;",
            "    mapped regtype;",
            "    mapped_same text[];",
            "    like_new boolean;",
            "    like_old boolean;",
        ]
    return "DO $ecm_guard$\nDECLARE\n" + "\n".join(declare) + f"\nBEGIN\n{body}\nEND\n$ecm_guard$"


def _regtype_sql(target: str, name_sql: str) -> str:
    """``target := to_regtype(name)``, NULL (cannot tell) for a name the server cannot parse."""
    return f"BEGIN {target} := to_regtype({name_sql}); EXCEPTION WHEN OTHERS THEN {target} := NULL; END;"


def _indent(lines: list[str], depth: int) -> list[str]:
    return [("    " * depth + line) if line else line for line in lines]


def _break_sql(brk: Any, s: str, live_sql: str) -> str:
    """One break as PL/pgSQL: every live instance mapping the column whose mapping it hurts
    (the verdicts of :func:`expandcontract.guard.what_it_breaks`) is added to ``held``."""
    from ..guard import NOT_NULL, RETYPE, UNIQUE_KEY
    from ..live.types import same_sql

    table, column, name = literal(brk.table), literal(brk.column), literal(brk.name)
    mapped_col = f"i.types -> {table} -> {column}"
    loop_head = [
        "FOR r IN SELECT i.app, i.version, i.host, i.pid,",
        "                round(extract(epoch FROM now() - i.last_heartbeat)) AS age,",
        f"                i.types IS NULL AS untyped, {mapped_col} IS NULL AS unlisted,",
        f"                {mapped_col} ->> 'type' AS mapped_type, {mapped_col} -> 'nullable' AS nullable",
        f"           FROM {s}.instances i",
        f"          WHERE {live_sql}",
        f"            AND i.uses -> {table} ? {column}",
        "LOOP",
    ]
    who = [
        "    who := format('%s %s (host %s pid %s, last seen %s s ago) maps %s',",
        f"                  r.app, r.version, r.host, r.pid, r.age, {name});",
    ]
    lines = [comment(f"guard: {brk.kind} {brk.name}")]
    if brk.kind == NOT_NULL:
        nullability_why = (
            "CASE WHEN r.untyped THEN 'its reporter registers no nullability' "
            "WHEN r.unlisted THEN 'listed in uses=, which carries no nullability' "
            "ELSE 'no nullability registered' END"
        )
        lines += [
            "hurts := true;",
            *loop_head,
            "    CONTINUE WHEN r.nullable = 'false'::jsonb;",
            *who,
            "    IF r.nullable = 'true'::jsonb THEN",
            "        held := held || (who || ' as nullable; the contract makes it NOT NULL');",
            "    ELSE",
            "        held := held || (who || format(' but its nullability is unknown (%s): cannot tell whether '",
            "            || 'it writes NULL, which fails once the contract makes it NOT NULL',",
            f"            {nullability_why}));",
            "    END IF;",
            "END LOOP;",
        ]
    elif brk.kind == UNIQUE_KEY:
        lines += _unique_key_sql(brk, s, live_sql, who)
    elif brk.kind != RETYPE:
        unknown_kind = f"({brk.kind!r} is a change this version of ecm does not know)"
        lines += [
            "hurts := true;",
            *loop_head,
            *who,
            "    held := held || (who || ': cannot tell whether it is safe once the contract changes it '",
            f"        || {literal(unknown_kind)});",
            "END LOOP;",
        ]
    else:
        new_name = f"COALESCE(new_t::text, {literal(str(brk.new_type))})"
        old_name = f"COALESCE(old_t::text, {literal(str(brk.old_type))})"
        once = f"format(' safely once the contract makes it %s (from %s)', {new_name}, {old_name})"
        type_why = (
            "CASE WHEN r.untyped THEN 'its reporter registers no column types' "
            "WHEN r.unlisted THEN 'listed in uses=, which carries no types' "
            "WHEN r.mapped_type IS NULL THEN 'SQLAlchemy could not compile its type for PostgreSQL' "
            "ELSE format('%L is not a type this database knows', r.mapped_type) END"
        )
        same = same_sql("mapped").strip().splitlines()
        lines += [
            _regtype_sql("old_t", literal(str(brk.old_type))),
            _regtype_sql("new_t", literal(str(brk.new_type))),
            # Typmods are no part of a type: varchar(100) -> varchar(200) changes nothing here.
            "IF old_t IS NULL OR new_t IS NULL OR old_t <> new_t THEN",
            "    hurts := true;",
            *_indent(loop_head, 1),
            "        mapped := NULL;",
            "        IF r.mapped_type IS NOT NULL THEN",
            f"            {_regtype_sql('mapped', 'r.mapped_type')}",
            "        END IF;",
            "        CONTINUE WHEN mapped IS NOT NULL AND new_t IS NOT NULL AND mapped = new_t;",
            *_indent(who, 1),
            "        IF mapped IS NOT NULL THEN",
            # The types PostgreSQL converts the mapped one to and from without a function.
            "            mapped_same := " + same[0],
            *_indent(same[1:-1], 3),
            "            " + same[-1] + ";",
            "            like_new := new_t IS NOT NULL AND (mapped = new_t OR new_t::text = ANY(mapped_same));",
            "            like_old := old_t IS NOT NULL AND (mapped = old_t OR old_t::text = ANY(mapped_same));",
            "        END IF;",
            "        IF mapped IS NULL THEN",
            "            held := held || (who || format(' but its type is unknown (%s): cannot tell whether it reads %s',",
            f"                {type_why}, {name}) || {once});",
            "        ELSIF mapped = old_t OR (like_old AND NOT like_new) THEN",
            f"            held := held || (who || format(' as %s; the contract makes it %s', mapped, {new_name}));",
            "        ELSIF NOT (like_new AND NOT like_old) THEN",
            "            held := held || (who || format(' as %s: cannot tell whether it reads %s', mapped, "
            f"{name}) || {once});",
            "        END IF;",
            "    END LOOP;",
            "END IF;",
        ]
    return "\n".join(_indent(lines, 1))


def _unique_key_sql(brk: Any, s: str, live_sql: str, who: list[str]) -> list[str]:
    """A unique-key break (drop-index) as PL/pgSQL: a live instance whose registered unique keys
    include the dropped key is held; one that registered none, or any for an expression key,
    holds it as "cannot tell" (the rules of :func:`expandcontract.guard._judge_unique`)."""
    table, column = literal(brk.table), literal(brk.column)
    key = "(" + ", ".join(brk.columns) + ")"
    index = f"unique index {brk.index}" if brk.index else "its unique index"
    wanted = "ARRAY[" + ", ".join(literal(c) for c in sorted(brk.columns)) + "]::text[]"
    uses = f"i.uses ? {table}" if not brk.columns else f"i.uses -> {table} ? {column}"
    unknown = literal(
        f" but whether it declares the unique key {key} is unknown: cannot tell whether its ON CONFLICT "
        f"relies on {index}, which the contract drops"
    )
    declares = literal(
        f" declaring the unique key {key}; the contract drops {index} (ON CONFLICT {key} fails without it)"
    )
    return [
        "hurts := true;",
        "FOR r IN SELECT i.app, i.version, i.host, i.pid,",
        "                round(extract(epoch FROM now() - i.last_heartbeat)) AS age,",
        f"                i.types -> {table} -> {column} -> 'unique' AS uniq",
        f"           FROM {s}.instances i",
        f"          WHERE {live_sql}",
        f"            AND {uses}",
        "LOOP",
        *who,
        f"    IF {'false' if brk.columns else 'true'} OR r.uniq IS NULL OR jsonb_typeof(r.uniq) <> 'array' THEN",
        f"        held := held || (who || {unknown});",
        "    ELSIF EXISTS (SELECT 1 FROM jsonb_array_elements(r.uniq) AS k(cols)",
        "                  WHERE jsonb_typeof(k.cols) = 'array' AND (SELECT array_agg(c ORDER BY c COLLATE \"C\")",
        f"                         FROM jsonb_array_elements_text(k.cols) AS c) = {wanted}) THEN",
        f"        held := held || (who || {declares});",
        "    END IF;",
        "END LOOP;",
    ]
