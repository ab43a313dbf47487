"""The backfill as a PL/pgSQL procedure, for ``ecm upgrade --sql`` scripts run by psql.

A DBA who applies migrations as reviewed SQL still gets the engine's guarantees: key-range
batches, the trigger's fast path, ``COMMIT`` after every batch, a checkpoint in each
batch's transaction, and the same checkpoint rows the Python engine writes, so a
script interrupted half-way resumes either from psql or from ``ecm backfill``. Batch
size adapts to the same target duration. Lock waits beyond ``lock_timeout`` shrink the
batch and retry instead of failing the script.

The procedure must be CALLed outside a transaction block (psql's default autocommit),
because it commits; ``statement_timeout`` is switched off for the CALL, which runs as
long as the table needs.
"""

from __future__ import annotations

import hashlib

from ..sql.quoting import literal, q, qualified
from .spec import TRIGGER_SKIP_SETTING, BackfillSpec

TARGET_MS = 100
START_ROWS = 1_000
MIN_ROWS = 100
MAX_ROWS = 200_000


def procedure_name(plan_id: str) -> str:
    name = f"ecm_backfill_{plan_id}"
    if len(name.encode()) > 63:
        digest = hashlib.sha1(plan_id.encode()).hexdigest()[:10]
        name = f"ecm_backfill_{plan_id.encode()[:38].decode(errors='ignore')}_{digest}"
    return name


def _adapt(lo: int, hi: int) -> str:
    """Same rule as BatchSizer: at most 1.2x growth per batch, proportional shrink (>= 1/5)."""
    return f"""            IF NOT v_final THEN
                v_ms := greatest(extract(epoch FROM clock_timestamp() - v_t0) * 1000, 0.001);
                IF v_ms <= {TARGET_MS} THEN
                    v_batch := least({hi}, floor(v_batch * least(1.2, {TARGET_MS} / v_ms)))::bigint;
                ELSE
                    v_batch := greatest({lo}, floor(v_batch * greatest(0.2, {TARGET_MS} / v_ms)))::bigint;
                END IF;
            END IF;"""


def procedure_sql(spec: BackfillSpec, *, schema: str) -> str:
    """Timeouts, ``CREATE OR REPLACE PROCEDURE`` and its ``CALL``; one statement per ``;`` line.

    ``schema`` is the control schema (where the procedure and the checkpoints live). The
    procedure is left in place (squawk bans DROP FUNCTION, and a later script replaces it).
    """
    proc = qualified(schema, procedure_name(spec.plan_id))
    body = _ctid_body(spec, schema) if spec.key_kind == "ctid" else _key_body(spec, schema)
    tag = _dollar_tag(body)
    return (
        "SET lock_timeout = '1s';\n"
        "SET statement_timeout = '60s';\n"
        f"CREATE OR REPLACE PROCEDURE {proc}()\nLANGUAGE plpgsql\nAS {tag}\n{body}\n{tag};\n"
        "SET statement_timeout = 0;\n"
        f"CALL {proc}();\n"
        "RESET statement_timeout;\n"
        "RESET lock_timeout;\n"
    )


def _dollar_tag(body: str) -> str:
    """A dollar-quote tag the body does not contain (a fill or a name may hold ``$ecm$``)."""
    tag, n = "$ecm$", 0
    while tag in body:
        n += 1
        tag = f"$ecm{n}$"
    return tag


def _common_decls() -> str:
    return """    v_me text := 'offline:b' || pg_backend_pid();
    v_chunk record;
    v_n bigint;
    v_done bigint;
    v_batch bigint;
    v_t0 timestamptz;
    v_ms double precision;
    v_final boolean;
    v_failed boolean;
    v_retries integer := 0;"""


def _batch_settings(spec: BackfillSpec) -> str:
    return (
        f"            PERFORM set_config({literal(TRIGGER_SKIP_SETTING)}, {literal(spec.skip_value)}, true), "
        "set_config('synchronous_commit', 'off', true), set_config('lock_timeout', '1000ms', true);"
    )


def _claim(ckpt: str, plan: str) -> str:
    # Same lease rule as the Python workers: free, expired, or its session is gone.
    return f"""        UPDATE {ckpt} c SET worker = v_me, lease_expires_at = now() + interval '1 hour', updated_at = now()
          FROM (SELECT x.chunk FROM {ckpt} x
                 WHERE x.plan_id = {plan} AND x.finished_at IS NULL
                   AND (x.worker IS NULL OR x.lease_expires_at IS NULL OR x.lease_expires_at < now()
                        OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                        WHERE a.pid = substring(x.worker FROM ':b([0-9]+)$')::int))
                 ORDER BY x.chunk LIMIT 1 FOR UPDATE SKIP LOCKED) f
         WHERE c.plan_id = {plan} AND c.chunk = f.chunk
        RETURNING c.chunk, c.lo_key, c.hi_key, c.last_key INTO v_chunk;
        EXIT WHEN NOT FOUND;
        COMMIT;"""


def _finish(plans: str, ckpt: str, plan: str, *, complete: bool = True) -> str:
    # With indexes to build after the copy, the script records completion after them
    # (completion_sql), since CREATE INDEX CONCURRENTLY cannot run inside a procedure.
    mark = (
        f"""UPDATE {plans} SET backfill_status = 'complete',
               backfill_completed_at = COALESCE(backfill_completed_at, now()), updated_at = now()
         WHERE plan_id = {plan};
        RAISE NOTICE 'ecm: backfill of % complete', {plan};"""
        if complete
        else f"RAISE NOTICE 'ecm: rows of % copied; its indexes are built next', {plan};"
    )
    return f"""    PERFORM set_config('synchronous_commit', 'on', true);
    IF NOT EXISTS (SELECT 1 FROM {ckpt} WHERE plan_id = {plan} AND finished_at IS NULL) THEN
        {mark}
    ELSE
        RAISE NOTICE 'ecm: backfill of %: chunks held by other live workers remain', {plan};
    END IF;
    COMMIT;"""


def completion_sql(spec: BackfillSpec, *, schema: str) -> str:
    """The completion record a script writes once the indexes built after the copy exist."""
    plans, ckpt = qualified(schema, "plans"), qualified(schema, "backfill_checkpoints")
    plan = literal(spec.plan_id)
    body = (
        f"BEGIN\n    UPDATE {plans} SET backfill_status = 'complete',\n"
        "           backfill_completed_at = COALESCE(backfill_completed_at, now()), updated_at = now()\n"
        f"     WHERE plan_id = {plan}\n"
        f"       AND NOT EXISTS (SELECT 1 FROM {ckpt} WHERE plan_id = {plan} AND finished_at IS NULL);\n"
        f"    IF FOUND THEN\n        RAISE NOTICE 'ecm: backfill of % complete', {plan};\n    END IF;\nEND"
    )
    tag = _dollar_tag(body)
    return f"DO {tag}\n{body}\n{tag};"


def _start(plans: str, plan: str) -> str:
    return f"""    UPDATE {plans} SET backfill_status = 'running', updated_at = now()
     WHERE plan_id = {plan} AND backfill_status NOT IN ('running', 'complete');"""


def _retry_handler(ckpt: str, plan: str) -> str:
    return f"""            EXCEPTION WHEN lock_not_available THEN
                v_retries := v_retries + 1;
                IF v_retries > 20 THEN
                    RAISE;
                END IF;
                RAISE NOTICE 'ecm: batch of % waited on locks longer than lock_timeout; retrying smaller', {plan};
                v_batch := greatest(1, v_batch / 4);
                v_failed := true;
            END;
            IF v_failed THEN
                COMMIT;
                PERFORM pg_sleep(least(5, 0.5 * v_retries));
                CONTINUE;
            END IF;
            v_retries := 0;"""


def _key_body(spec: BackfillSpec, schema: str) -> str:
    table = qualified(spec.schema, spec.table)
    ckpt, plans, plan = (
        qualified(schema, "backfill_checkpoints"),
        qualified(schema, "plans"),
        literal(spec.plan_id),
    )
    cols = [q(c) for c in spec.key]
    n = len(cols)
    row = f"({', '.join(cols)})" if n > 1 else cols[0]
    order = ", ".join(cols)

    def vec(prefix: str) -> str:
        names = [f"{prefix}{i}" for i in range(n)]
        return f"({', '.join(names)})" if n > 1 else names[0]

    def where(lo: bool, hi: str | None) -> str:
        parts = []
        if lo:
            parts.append(f"{row} > {vec('v_lo_')}")
        if hi:
            parts.append(f"{row} <= {vec(hi)}")
        return " AND ".join(parts) or "true"

    into = ", ".join(f"v_up_{i}" for i in range(n))
    decls = "\n".join(
        f"    v_{p}_{i} {table}.{c}%TYPE;" for p in ("lo", "hi", "up") for i, c in enumerate(cols)
    )
    as_keys = ", ".join(f"{c}" for c in cols)
    bound_branches, count_branches, update_branches = [], [], []
    for lo in (True, False):
        for hi in (True, False):
            cond = f"{'' if lo else 'NOT '}v_has_lo AND {'' if hi else 'NOT '}v_has_hi"
            w = where(lo, "v_hi_" if hi else None)
            bound_branches.append(
                f"                {{kw}} {cond} THEN\n"
                f"                    SELECT {as_keys} INTO {into} FROM {table} WHERE {w}\n"
                f"                     ORDER BY {order} OFFSET v_batch - 1 LIMIT 1;"
            )
            count_branches.append(
                f"                    {{kw}} {cond} THEN\n"
                f"                        SELECT count(*) INTO v_n FROM {table} WHERE {w};"
            )
            up_cond = f"{'' if lo else 'NOT '}v_has_lo AND {'' if hi else 'NOT '}v_has_up"
            update_branches.append(
                f"                    {{kw}} {up_cond} THEN\n"
                f"                        UPDATE {table} SET {spec.set_sql}\n"
                f"                         WHERE {where(lo, 'v_up_' if hi else None)} AND ({spec.pending_sql});"
            )

    def chain(branches: list[str], indent: str) -> str:
        # replace, not str.format: the branch holds the spec's SQL, and a fill may hold braces
        out = [b.replace("{kw}", "IF" if i == 0 else "ELSIF", 1) for i, b in enumerate(branches)]
        return "\n".join(out) + f"\n{indent}END IF;"

    set_lo = "\n".join(f"                v_lo_{i} := v_chunk.last_key ->> {i};" for i in range(n))
    set_lo_from_chunk = "\n".join(f"                v_lo_{i} := v_chunk.lo_key ->> {i};" for i in range(n))
    set_hi = "\n".join(f"                v_hi_{i} := v_chunk.hi_key ->> {i};" for i in range(n))
    up_to_lo = "\n".join(f"            v_lo_{i} := v_up_{i};" for i in range(n))
    hi_to_up = "\n".join(f"                    v_up_{i} := v_hi_{i};" for i in range(n))
    key_json = "jsonb_build_array(" + ", ".join(f"v_up_{i}::text" for i in range(n)) + ")"
    last_key = (
        f"(SELECT jsonb_build_array({', '.join(f'{c}::text' for c in cols)}) FROM {table} "
        f"ORDER BY {', '.join(f'{c} DESC NULLS LAST' for c in cols)} LIMIT 1)"
    )
    return f"""DECLARE
{_common_decls()}
    v_has_lo boolean;
    v_has_hi boolean;
    v_has_up boolean;
{decls}
BEGIN
    -- One chunk, ending at the greatest key there is now: rows inserted later went through the
    -- trigger (as in the Python engine's chunk plan).
    INSERT INTO {ckpt} (plan_id, chunk, hi_key)
    SELECT {plan}, 0, {last_key} WHERE NOT EXISTS (SELECT 1 FROM {ckpt} WHERE plan_id = {plan});
{_start(plans, plan)}
    COMMIT;
    v_batch := {START_ROWS};
    LOOP
{_claim(ckpt, plan)}
        v_has_lo := v_chunk.last_key IS NOT NULL OR v_chunk.lo_key IS NOT NULL;
        v_has_hi := v_chunk.hi_key IS NOT NULL;
        IF v_chunk.last_key IS NOT NULL THEN
{set_lo}
            RAISE NOTICE 'ecm: resuming chunk % after key %', v_chunk.chunk, v_chunk.last_key;
        ELSIF v_chunk.lo_key IS NOT NULL THEN
{set_lo_from_chunk}
        END IF;
        IF v_has_hi THEN
{set_hi}
        END IF;
        LOOP
{_batch_settings(spec)}
            v_t0 := clock_timestamp();
            v_failed := false;
{chain(bound_branches, "            ")}
            v_final := NOT FOUND;
            v_n := v_batch;
            v_has_up := true;
            BEGIN
                IF v_final THEN
{chain(count_branches, "                ")}
{hi_to_up}
                    v_has_up := v_has_hi;
                END IF;
                UPDATE {ckpt}
                   SET last_key = CASE WHEN v_has_up THEN {key_json} ELSE last_key END,
                       rows_done = rows_done + v_n, batch_size = v_batch,
                       lease_expires_at = now() + interval '1 hour', updated_at = now(),
                       finished_at = CASE WHEN v_final THEN now() END
                 WHERE plan_id = {plan} AND chunk = v_chunk.chunk AND worker = v_me AND finished_at IS NULL;
                GET DIAGNOSTICS v_done = ROW_COUNT;
                IF v_done = 0 THEN
                    RAISE NOTICE 'ecm: chunk % was taken over by another worker', v_chunk.chunk;
                    EXIT;
                END IF;
                IF v_n > 0 THEN
{chain(update_branches, "                    ")}
                END IF;
{_retry_handler(ckpt, plan)}
            COMMIT;
            EXIT WHEN v_final;
{up_to_lo}
            v_has_lo := true;
{_adapt(MIN_ROWS, MAX_ROWS)}
        END LOOP;
        COMMIT;
    END LOOP;
{_finish(plans, ckpt, plan, complete=not spec.indexes)}
END"""


def _ctid_body(spec: BackfillSpec, schema: str) -> str:
    table = qualified(spec.schema, spec.table)
    ckpt, plans, plan = (
        qualified(schema, "backfill_checkpoints"),
        qualified(schema, "plans"),
        literal(spec.plan_id),
    )
    return f"""DECLARE
{_common_decls()}
    v_page bigint;
    v_end bigint;
    v_stop bigint;
    v_lo tid;
    v_hi tid;
BEGIN
    INSERT INTO {ckpt} (plan_id, chunk, lo_key, hi_key)
    SELECT {plan}, 0, jsonb_build_array('0'),
           jsonb_build_array((pg_relation_size({literal(table)}::regclass)
                              / current_setting('block_size')::int8)::text)
     WHERE NOT EXISTS (SELECT 1 FROM {ckpt} WHERE plan_id = {plan});
{_start(plans, plan)}
    COMMIT;
    v_batch := 10;
    LOOP
{_claim(ckpt, plan)}
        v_page := COALESCE(v_chunk.last_key, v_chunk.lo_key) ->> 0;
        v_end := v_chunk.hi_key ->> 0;
        IF v_chunk.last_key IS NOT NULL THEN
            RAISE NOTICE 'ecm: resuming chunk % at page %', v_chunk.chunk, v_page;
        END IF;
        LOOP
{_batch_settings(spec)}
            v_t0 := clock_timestamp();
            v_failed := false;
            v_stop := least(v_page + v_batch, v_end);
            v_final := v_stop >= v_end;
            v_lo := ('(' || v_page || ',0)')::tid;
            v_hi := ('(' || v_stop || ',0)')::tid;
            BEGIN
                -- Ownership first (it locks the checkpoint row), so a lost chunk costs no work.
                UPDATE {ckpt} SET lease_expires_at = now() + interval '1 hour', updated_at = now()
                 WHERE plan_id = {plan} AND chunk = v_chunk.chunk AND worker = v_me AND finished_at IS NULL;
                GET DIAGNOSTICS v_done = ROW_COUNT;
                IF v_done = 0 THEN
                    RAISE NOTICE 'ecm: chunk % was taken over by another worker', v_chunk.chunk;
                    EXIT;
                END IF;
                UPDATE {table} SET {spec.set_sql}
                 WHERE ctid >= v_lo AND ctid < v_hi AND ({spec.pending_sql});
                GET DIAGNOSTICS v_n = ROW_COUNT;
                UPDATE {ckpt}
                   SET last_key = jsonb_build_array(v_stop::text), rows_done = rows_done + v_n,
                       batch_size = v_batch, finished_at = CASE WHEN v_final THEN now() END
                 WHERE plan_id = {plan} AND chunk = v_chunk.chunk;
{_retry_handler(ckpt, plan)}
            COMMIT;
            EXIT WHEN v_final;
            v_page := v_stop;
{_adapt(1, 5000)}
        END LOOP;
        COMMIT;
    END LOOP;
{_finish(plans, ckpt, plan, complete=not spec.indexes)}
END"""
