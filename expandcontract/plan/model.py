"""Plan, Phase and Step: what every operation produces and every runner executes.

A Step is one SQL statement plus how it must be run (its kind), so that the same
plan can be executed live with lock timeouts and retries, or rendered offline as a
psql script, without the operation knowing which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

StepKind = Literal["ddl", "concurrent", "backfill", "guard", "sql", "swap", "precheck"]
PhaseName = Literal["expand", "backfill", "contract"]

PHASES: tuple[PhaseName, ...] = ("expand", "backfill", "contract")


@dataclass(frozen=True)
class Step:
    """One idempotent action.

    kind:
      ``ddl``      short DDL: lock_timeout + statement_timeout, retried on lock timeouts.
      ``concurrent`` CREATE/DROP INDEX CONCURRENTLY, VALIDATE CONSTRAINT: no statement_timeout,
                   waits behind old transactions; with ``index`` set an INVALID leftover is dropped and rebuilt.
      ``backfill`` the plan's backfill (engine live; a procedure offline).
      ``guard``    the contract guard (Python live; a DO block that raises offline).
      ``sql``      plain statement (no lock concerns), e.g. a comment.
      ``swap``     short DDL that changes a column's type under its own name: run like ``ddl``, but
                   announced first, and only once every live instance that maps the table confirmed
                   it stopped using prepared statements (see :mod:`expandcontract.live.swaps`).
      ``precheck`` a query returning ``(total, sample)`` rows that would make a later step fail
                   (duplicates, orphans, violations): any row stops the phase with exit 1 and
                   the count and sample keys, before anything is built; also run at plan time
                   (see :mod:`expandcontract.db.prechecks`).
    skip_if: a query returning one boolean, true when the step is already done; used
      live for steps PostgreSQL has no IF [NOT] EXISTS for.
    """

    name: str
    kind: StepKind
    sql: str = ""
    lock: str = ""
    skip_if: str | None = None
    index: str | None = None  # schema-qualified, quoted name of the index a concurrent step builds
    squawk_ignore: tuple[tuple[str, str], ...] = ()  # (rule, reason) for the offline script

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        data = dict(data)
        data["squawk_ignore"] = tuple(tuple(x) for x in data.get("squawk_ignore", ()))
        return cls(**data)


@dataclass(frozen=True)
class Phase:
    name: PhaseName
    summary: str
    upgrade: tuple[Step, ...]
    downgrade: tuple[Step, ...]
    before: str = ""  # what must be deployed before this phase runs
    after: str = ""  # what may be deployed once it has run
    rollback: str = ""  # how to roll it back


@dataclass(frozen=True)
class Plan:
    plan_id: str
    operation: str
    schema: str
    table: str
    title: str
    phases: tuple[Phase, ...]
    # {"schema.table": [columns]} that the contract removes (guard) / expand adds (downgrade guard).
    removes: dict[str, list[str]] = field(default_factory=dict)
    adds: dict[str, list[str]] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # operation parameters + frozen facts
    backfill: dict[str, Any] | None = None  # BackfillSpec.to_json()
    reverse_backfill: dict[str, Any] | None = None  # for the contract's downgrade
    notes: tuple[str, ...] = ()
    # {"schema.table": [columns]} the plan reads or changes ("*": the table itself): two plans
    # touching one column conflict, and autogenerate leaves what a plan touches alone.
    touches: dict[str, list[str]] = field(default_factory=dict)
    # Names of the indexes, constraints, triggers and functions the plan's steps create.
    creates: tuple[str, ...] = ()
    # What the contract breaks for code still running, beyond removals: retyped columns
    # ({"table", "column", "kind": "retype", "old_type", "new_type"}) and columns made NOT NULL
    # ({"table", "column", "kind": "not-null"}).
    breaks: tuple[dict[str, Any], ...] = ()

    def phase(self, name: PhaseName) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)

    def shown_steps(self, phase: Phase) -> tuple[Step, ...]:
        """A phase's upgrade steps as a reader should see them: the backfill's include the
        indexes it builds once the copy is done (they live in the backfill spec, which the
        engine, and not the revision's step list, runs)."""
        if phase.name != "backfill":
            return phase.upgrade
        after = [
            Step.from_json(dict(ix["step"]))
            for spec in (self.backfill, *((self.spec or {}).get("backfills") or ()))
            for ix in ((spec or {}).get("indexes") or ())
        ]
        return (*phase.upgrade, *(replace(s, name=f"{s.name} (after the copy)") for s in after))

    def header(self) -> dict[str, Any]:
        """What identifies the plan and what it changes: shared by revision files and --json."""
        return {
            "plan_id": self.plan_id,
            "operation": self.operation,
            "schema": self.schema,
            "table": self.table,
            "title": self.title,
            "removes": self.removes,
            "adds": self.adds,
            "touches": self.touches or touched(self.removes, self.adds),
            "creates": list(self.creates),
            "breaks": [dict(b) for b in self.breaks],
        }


def touched(*sides: dict[str, list[str]]) -> dict[str, list[str]]:
    """What a plan touches when it does not say: everything it removes or adds (plans frozen
    before ``touches`` existed carry only those)."""
    out: dict[str, list[str]] = {}
    for side in sides:
        for table, columns in (side or {}).items():
            merged = out.setdefault(str(table), [])
            merged.extend(str(c) for c in columns if str(c) not in merged)
    return out
