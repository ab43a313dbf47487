"""What a backfill must do, as plain data the planner produces and the engine consumes.

The planner (pure) writes this into the plan; the generated revision freezes it, and
``ecm.plans.spec['backfill']`` stores it so ``ecm backfill PLAN`` can find it again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackfillSpec:
        data = dict(data)
        data["key"] = tuple(data.get("key", ()))
        data["key_types"] = tuple(data.get("key_types", ()))
        return cls(**data)
