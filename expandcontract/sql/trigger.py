"""The dual-write trigger that keeps OLD and NEW in step for every writer.

It is ``BEFORE INSERT OR UPDATE … FOR EACH ROW`` and only assigns to ``NEW``, so it
cannot recurse. Its ``WHEN`` clause skips it for the backfill's own updates (the
backfill sets :data:`~expandcontract.backfill.spec.TRIGGER_SKIP_SETTING` locally and
writes both sides itself), which saves one PL/pgSQL call per backfilled row.

Truth table (``o``/``n`` = the old/new column):

* INSERT: n null -> n := o; o null -> o := n; both set and different -> o := n (NEW wins).
* UPDATE: only o changed -> n := o; only n changed -> o := n; neither changed -> n := o
  (brings not-yet-backfilled rows in step); both changed -> o := n (NEW wins).
"""

from __future__ import annotations

from ..backfill.spec import TRIGGER_SKIP_SETTING
from .quoting import literal, q, qualified


def function_sql(schema: str, function: str, old: str, new: str) -> str:
    o, n = q(old), q(new)
    return f"""CREATE OR REPLACE FUNCTION {qualified(schema, function)}() RETURNS trigger
LANGUAGE plpgsql AS $ecm$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.{n} IS NULL THEN
            NEW.{n} := NEW.{o};
        ELSIF NEW.{o} IS NULL OR NEW.{o} IS DISTINCT FROM NEW.{n} THEN
            NEW.{o} := NEW.{n};
        END IF;
    ELSIF NEW.{o} IS DISTINCT FROM OLD.{o} AND NEW.{n} IS NOT DISTINCT FROM OLD.{n} THEN
        NEW.{n} := NEW.{o};
    ELSIF NEW.{n} IS DISTINCT FROM OLD.{n} AND NEW.{o} IS NOT DISTINCT FROM OLD.{o} THEN
        NEW.{o} := NEW.{n};
    ELSIF NEW.{o} IS NOT DISTINCT FROM OLD.{o} AND NEW.{n} IS NOT DISTINCT FROM OLD.{n} THEN
        NEW.{n} := NEW.{o};
    ELSE
        NEW.{o} := NEW.{n};
    END IF;
    RETURN NEW;
END
$ecm$"""


def skip_condition(skip_value: str = "on") -> str:
    return f"current_setting({literal(TRIGGER_SKIP_SETTING)}, true) IS DISTINCT FROM {literal(skip_value)}"


def trigger_sql(schema: str, table: str, trigger: str, function: str, skip_value: str = "on") -> str:
    """CREATE OR REPLACE TRIGGER (PostgreSQL 14+) so that re-running expand is harmless."""
    return (
        f"CREATE OR REPLACE TRIGGER {q(trigger)} BEFORE INSERT OR UPDATE ON {qualified(schema, table)}\n"
        f"FOR EACH ROW WHEN ({skip_condition(skip_value)})\n"
        f"EXECUTE FUNCTION {qualified(schema, function)}()"
    )


def drop_trigger_sql(schema: str, table: str, trigger: str) -> str:
    return f"DROP TRIGGER IF EXISTS {q(trigger)} ON {qualified(schema, table)}"


def drop_function_sql(schema: str, function: str) -> str:
    return f"DROP FUNCTION IF EXISTS {qualified(schema, function)}()"
