"""What a backfill must do, as plain data the planner produces and the engine consumes.

The planner (pure) writes this into the plan; the generated revision freezes it, and
``ecm.plans.spec['backfill']`` stores it so ``ecm backfill PLAN`` can find it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..plan.model import Step

#: Session setting the dual-write trigger's WHEN clause checks; the backfill sets it
#: (SET LOCAL) to its plan's ``skip_value`` so its own updates skip that plan's PL/pgSQL
#: call and write both sides itself, while the triggers of other plans in flight on the
#: same table still fire (their shadows must follow every write, the backfill's included).
TRIGGER_SKIP_SETTING = "ecm.backfill"


@dataclass(frozen=True)
class BackfillSpec:
    plan_id: str
    schema: str
    table: str
    key: tuple[str, ...]  # batch key columns, in order; empty when key_kind == "ctid"
    key_kind: Literal["pk", "unique", "ctid"]
    # Body of the SET clause, e.g. '"full_name" = "name"'; identifiers already quoted.
    set_sql: str
    # Rows that still need the copy, e.g. '"full_name" IS DISTINCT FROM "name"'. The engine
    # adds it to every batch's WHERE, so a row the trigger already brought in step (a newer
    # write) is never overwritten.
    pending_sql: str
    # Rows out of step (for verify); usually the same as pending_sql.
    mismatch_sql: str
    rows_estimate: int = 0
    key_types: tuple[str, ...] = ()  # format_type() of each key column, for casts in offline SQL
    # What the backfill sets TRIGGER_SKIP_SETTING to: its plan id. Plans frozen before this
    # field existed have triggers that skip on 'on' (and skip every plan's trigger).
    skip_value: str = "on"
    # What rows out of step hold and what fixes them, as the user reads it after "N rows of
    # TABLE" (``describe_mismatches``); plans that leave them out get the generic wording.
    mismatch_label: str | None = None
    mismatch_fix: str | None = None
    # Indexes on the copied column, built CONCURRENTLY once every existing row is copied and
    # before the backfill is recorded complete: built before the copy, each batch would
    # maintain them row by row (and the copy could not stay HOT). Each is a ``Step`` as JSON
    # (kind ``concurrent`` with ``index`` set, so an INVALID leftover is rebuilt) plus the
    # ``columns`` it covers, which ``schema_ready`` reports as not ready until it is valid.
    indexes: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.indexes:  # plans without them freeze the same JSON as before the field existed
            del data["indexes"]
        else:
            data["indexes"] = [dict(ix) for ix in self.indexes]
        return data

    def index_steps(self) -> list[Step]:
        """The indexes built after the copy, as the executor's steps."""
        return [Step.from_json(dict(ix["step"])) for ix in self.indexes]

    def describe_mismatches(self, count: int, keys: Sequence[Mapping[str, str]], *, fix: bool = True) -> str:
        """One line: how many rows are out of step, their first keys, and (``fix``) what to do."""
        from ..sql.quoting import qualified

        shown = shown_keys(keys)
        what = self.mismatch_label or "are out of step"
        line = f"{count} rows of {qualified(self.schema, self.table)} {what}" + (
            f" (first keys: {shown})" if shown else ""
        )
        if fix:
            line += ": " + (self.mismatch_fix or f"recopy them with `ecm backfill {self.plan_id} --restart`")
        return line

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackfillSpec:
        data = dict(data)
        data["key"] = tuple(data.get("key", ()))
        data["key_types"] = tuple(data.get("key_types", ()))
        data["indexes"] = tuple(dict(ix) for ix in data.get("indexes", ()))
        return cls(**data)


def shown_keys(keys: Sequence[Mapping[str, str]]) -> str:
    """``id=7, id=14``; a composite key in parentheses: ``(a=1, b=2), (a=1, b=3)``."""
    shown = [", ".join(f"{k}={v}" for k, v in key.items()) for key in keys]
    return ", ".join(s if len(key) == 1 else f"({s})" for s, key in zip(shown, keys, strict=True))
