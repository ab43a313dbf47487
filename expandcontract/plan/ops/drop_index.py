"""drop-index: ``DROP INDEX CONCURRENTLY`` as a contract, after the new code is deployed.

Dropping an index changes no row and no column: queries that used it get slower, none
fails — except through uniqueness. ``INSERT … ON CONFLICT (columns)`` needs a unique index
or constraint on exactly those columns to infer its arbiter, and fails without one; so
dropping a unique index is held while live code whose MetaData declares that unique key
(a ``UniqueConstraint``, ``Column(unique=True)`` or ``Index(unique=True)`` on the same
columns) still runs. That is a ``unique-key`` break in the plan: reporters register the
unique keys their MetaData declares, and an instance whose reporter registers none (older
than unique-key reports) holds the contract as "cannot tell". A non-unique index breaks
nothing, so its contract has nothing to wait for.

Refused with the reason: an index that backs a constraint (primary key, unique,
exclusion: drop the constraint instead), one a foreign key depends on, the replica
identity index, and an index of a partitioned table (no DROP INDEX CONCURRENTLY there).
The downgrade builds it again CONCURRENTLY from the definition frozen at plan time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...errors import BadInput
from ...guard import UNIQUE_KEY, WHOLE_TABLE
from ...sql.expressions import one_line
from ...sql.quoting import q, qualified
from ...sql.rewrite import rewrite_index_definition
from .. import checks
from ..blocks import Builder
from ..facts import IndexFact, TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param


@dataclass(frozen=True)
class DropIndex(Operation):
    """The operation's parameters: the index; the flow finds its table."""

    kind: ClassVar[str] = "drop-index"
    summary: ClassVar[str] = (
        "Drop an index with zero downtime: DROP INDEX CONCURRENTLY as a contract, held while live code "
        "declares it as a unique key (ON CONFLICT needs it)."
    )
    phases_help: ClassVar[str] = (
        "contract only (after the new code is deployed): for a unique index, the guard holds while a live "
        "instance's MetaData declares a unique key on the same columns; then DROP INDEX CONCURRENTLY "
        "(SHARE UPDATE EXCLUSIVE: reads and writes continue). Refused for an index that backs a constraint. "
        "Downgrade: CREATE INDEX CONCURRENTLY from the definition frozen at plan time."
    )
    whole_table: ClassVar[bool] = True

    index: str = param("Index to drop (exact name; no quoting needed).", metavar="NAME")
    table: str = field(default="", kw_only=True)

    def check_input(self) -> None:
        checks.identifier(self.index, "index")
        if self.schema is not None:
            checks.identifier(self.schema, "schema")

    def index_name(self) -> str:
        return self.index

    def base_plan_id(self, table: str) -> str:
        from .. import names

        return names.plan_id(self.kind, self.index)

    def found(self, facts: TableFacts) -> IndexFact:
        ix = next((i for i in facts.indexes if i.name == self.index), None)
        if ix is None:
            raise BadInput(
                f"index {qualified(facts.schema, self.index)} does not exist on table "
                f"{qualified(facts.schema, facts.name)}"
            )
        return ix

    def validate(self, facts: TableFacts) -> None:
        name = qualified(facts.schema, self.index)
        if facts.kind == "p":
            raise BadInput(
                f"index {name} is on partitioned table {qualified(facts.schema, facts.name)}: PostgreSQL "
                "has no DROP INDEX CONCURRENTLY for it (a plain DROP INDEX locks every partition); drop it by hand"
            )
        if facts.kind not in ("r", "m"):
            checks.table_is_plannable(facts)
        ix = self.found(facts)
        if ix.constraint is not None:
            kind = "primary key" if ix.primary else "unique or exclusion"
            raise BadInput(
                f"index {name} backs the {kind} constraint {q(ix.constraint)} of "
                f"{qualified(facts.schema, facts.name)}; drop the constraint, not its index"
            )
        if facts.replica_identity_index == ix.name:
            raise BadInput(
                f"index {name} is the REPLICA IDENTITY of {qualified(facts.schema, facts.name)}; "
                "set another replica identity first"
            )
        if ix.unique and ix.columns and not ix.partial:
            for fk in facts.referenced_by:
                if set(fk.ref_columns) == set(ix.columns):
                    raise BadInput(
                        f"index {name} is what foreign key {q(fk.name)} of {qualified(fk.schema, fk.table)} "
                        "references; drop or change that foreign key first"
                    )

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        ix = self.found(facts)
        plan_id = self.id_for(facts)
        b = Builder(facts, plan_id)
        index_sql = qualified(facts.schema, ix.name)
        recreate = Step(
            f"re-create index {ix.name} CONCURRENTLY",
            "concurrent",
            rewrite_index_definition(ix.definition, "", "", ix.name, concurrently=True),
            lock="SHARE UPDATE EXCLUSIVE (reads and writes continue)",
            index=index_sql,
        )
        drop = Step(
            f"drop index {ix.name} CONCURRENTLY",
            "concurrent",
            f"DROP INDEX CONCURRENTLY IF EXISTS {index_sql}",
            lock="SHARE UPDATE EXCLUSIVE (reads and writes continue; waits for transactions using the index)",
        )
        key = f"{facts.schema}.{facts.name}"
        breaks: tuple[dict[str, object], ...] = ()
        if ix.unique:
            breaks = (
                {
                    "table": key,
                    "column": ix.columns[0] if ix.columns else WHOLE_TABLE,
                    "kind": UNIQUE_KEY,
                    "columns": list(ix.columns),
                    "index": ix.name,
                },
            )
        held = (
            f"Every application instance whose MetaData declares the unique key "
            f"({', '.join(ix.columns) or 'its expression'}) must be gone (the guard checks live instances): "
            "ON CONFLICT on those columns fails once the index is gone."
            if ix.unique
            else "The new code, which no longer needs the index (nothing fails without it; queries may slow)."
        )
        contract = Phase(
            "contract",
            f"Drop index {ix.name} of {b.table_sql} CONCURRENTLY.",
            (b.guard("contract-guard"), drop),
            (recreate,),
            before=held,
            after="Code that does not need the index.",
            rollback=f"Downgrade this contract revision: builds {ix.name} again CONCURRENTLY from its frozen definition.",
        )
        notes = [f"definition frozen for the rollback: {one_line(ix.definition)}"]
        if not ix.valid:
            notes.append("the index is INVALID (a failed build's leftover): dropping it only cleans up")
        return Plan(
            plan_id=plan_id,
            operation=self.kind,
            schema=facts.schema,
            table=facts.name,
            title=f"drop index {index_sql} of {b.table_sql}",
            phases=(contract,),
            touches={key: list(ix.columns)},
            creates=(ix.name,),
            breaks=breaks,
            spec={
                "operation": self.kind,
                "schema": facts.schema,
                "table": facts.name,
                "index": ix.name,
                "definition": ix.definition,
                "facts": facts.to_json(),
            },
            notes=tuple(notes),
        )
