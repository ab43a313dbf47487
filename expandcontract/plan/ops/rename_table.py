"""rename-table: expand (rename it, and leave an updatable view under the old name), contract (drop the view).

Pure: facts in, a :class:`Plan` out.

Old code keeps reading and writing the old name through a view that PostgreSQL makes
automatically updatable (one table, every column, no aggregates): inserts, updates,
deletes, ``ON CONFLICT (columns)``, ``RETURNING`` and row locks pass through to the table,
whose defaults, identity, triggers and constraints apply. ``security_invoker`` makes the
view check the caller's privileges and row-level security policies on the table, as
querying the table would; without it the view's owner's would apply and RLS be bypassed.
Both statements run in one DO block: one statement, so one transaction on every driver
(asyncpg prepares every statement and cannot send two), and no moment in which the old
name resolves to nothing.

What cannot pass through a view (``ON CONFLICT ON CONSTRAINT``, TRUNCATE, COPY, ALTER
TABLE, ``pg_get_serial_sequence``, reflection, logical replication) is on the page
``docs/operations/rename-table.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import BadInput
from ...sql.quoting import literal, q, qualified
from .. import checks
from ..blocks import Builder
from ..facts import TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param

#: What the expand's and the expand-downgrade's one statement lock.
SWAP_LOCK = "ACCESS EXCLUSIVE on the table, brief (catalog only: no scan, no rewrite)"
_SECURITY_INVOKER = 150000


def dollar_block(body: str) -> str:
    """Statements as one DO block: one statement to every driver, one transaction."""
    tag, n = "$ecm$", 0
    while tag in body:
        n += 1
        tag = f"$ecm{n}$"
    return f"DO {tag}\nBEGIN\n{body}\nEND\n{tag}"


def relkind_is(schema: str, name: str, kinds: str) -> str:
    """A probe: the relation exists and is of one of ``kinds`` (pg_class.relkind letters)."""
    wanted = ", ".join(literal(k) for k in kinds)
    return (
        "EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = "
        f"to_regclass({literal(qualified(schema, name))}) AND relkind::text IN ({wanted}))"
    )


def grant_sql(relation: str, grants: list[dict[str, Any]]) -> list[str]:
    """The table's grants, given again on another relation (its view, or its re-created self)."""
    out = []
    for g in grants:
        grantee = "PUBLIC" if str(g["grantee"]).upper() == "PUBLIC" else q(str(g["grantee"]))
        option = " WITH GRANT OPTION" if g.get("grantable") else ""
        out.append(f"GRANT {g['privilege']} ON {relation} TO {grantee}{option};")
    return out


@dataclass(frozen=True)
class RenameTable(Operation):
    """The operation's parameters (the facts come separately, from the catalog)."""

    kind: ClassVar[str] = "rename-table"
    whole_table: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "Rename a table with zero downtime: rename it and keep the old name as an updatable view "
        "until no running code uses it."
    )
    phases_help: ClassVar[str] = (
        "expand (one short transaction): ALTER TABLE … RENAME TO NEW and CREATE VIEW OLD WITH "
        "(security_invoker = true) AS SELECT every column FROM NEW, with the table's grants and owner; "
        "old code keeps working through the view. contract (after code that maps OLD is gone): drop the "
        "view. Indexes, constraints and sequences keep their names."
    )

    new_name: str = param("New name of the table (same schema).", metavar="NEW")

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.new_name, "new table")
        if self.new_name == self.table:
            raise BadInput(f"old and new table names are the same ({q(self.table)})")

    def id_parts(self) -> tuple[str, ...]:
        return (self.new_name,)

    def relations(self, facts: TableFacts) -> tuple[str, ...]:
        return (self.new_name,)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        taken = facts.extra.get("relations", {}).get(self.new_name)
        if taken is not None:
            what = {
                "r": "a table",
                "v": "a view",
                "m": "a materialized view",
                "i": "an index",
                "S": "a sequence",
            }
            raise BadInput(
                f"{qualified(facts.schema, self.new_name)} already exists ({what.get(taken, 'a relation')}); "
                "tables, views, indexes and sequences share one namespace: pick another name"
            )
        if facts.server_version_num < _SECURITY_INVOKER:
            raise BadInput(
                "rename-table needs PostgreSQL 15 or later: the view under the old name must be "
                "security_invoker, or it would bypass the table's privileges and row-level security"
            )
        if not facts.columns:
            raise BadInput(
                f"table {qualified(facts.schema, facts.name)} has no columns: nothing to keep a view of"
            )

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


class _Planner(Builder):
    def __init__(self, op: RenameTable, facts: TableFacts) -> None:
        super().__init__(facts, op.id_for(facts))
        self.op = op
        self.old = facts.name
        self.new = op.new_name
        self.old_sql = qualified(self.s, self.old)
        self.new_sql = qualified(self.s, self.new)

    def view_statements(self) -> list[str]:
        cols = ", ".join(q(c) for c in self.f.columns)
        out = [
            f"CREATE VIEW {self.old_sql} WITH (security_invoker = true) AS SELECT {cols} FROM {self.new_sql};",
        ]
        owner = self.f.extra.get("owner")
        if owner:
            out.append(f"ALTER VIEW {self.old_sql} OWNER TO {q(str(owner))};")
        return out + grant_sql(self.old_sql, list(self.f.extra.get("table_grants", [])))

    def expand(self) -> Phase:
        rename = f"ALTER TABLE {self.old_sql} RENAME TO {q(self.new)};"
        up = Step(
            f"rename {self.old} to {self.new}, view {self.old} in its place",
            "ddl",
            dollar_block("\n".join([rename, *self.view_statements()])),
            lock=SWAP_LOCK,
            skip_if=f"SELECT {relkind_is(self.s, self.new, 'rp')} AND {relkind_is(self.s, self.old, 'v')}",
        )
        back = Step(
            f"drop view {self.old}, rename {self.new} back to {self.old}",
            "ddl",
            dollar_block(
                "\n".join(
                    [
                        f"DROP VIEW IF EXISTS {self.old_sql};",
                        f"ALTER TABLE {self.new_sql} RENAME TO {q(self.old)};",
                    ]
                )
            ),
            lock=SWAP_LOCK,
            skip_if=f"SELECT {relkind_is(self.s, self.old, 'rp')}",
        )
        return Phase(
            "expand",
            f"Rename {self.old_sql} to {self.new_sql}; an updatable view keeps the old name working.",
            (up,),
            (self.guard("expand-downgrade"), back),
            before="Nothing: old code keeps working through the view; run before deploying code that uses the new name.",
            after=f"New code that maps {self.new_sql} may deploy.",
            rollback=(
                f"Downgrade this revision: drops the view and renames {self.new_sql} back, in one transaction. "
                f"Refused while live instances map {self.new_sql}."
            ),
        )

    def contract(self) -> Phase:
        drop = Step(
            f"drop view {self.old}",
            "ddl",
            f"DROP VIEW IF EXISTS {self.old_sql}",
            lock="ACCESS EXCLUSIVE on the view, brief (the table is not locked)",
            squawk_ignore=(("ban-drop-view", "the guarded contract: no running code uses the old name"),),
        )
        recreate = Step(
            f"re-create view {self.old}",
            "ddl",
            dollar_block("\n".join(self.view_statements())),
            lock="ACCESS SHARE on the table, brief",
            skip_if=f"SELECT {relkind_is(self.s, self.old, 'vrp')}",
        )
        return Phase(
            "contract",
            f"Drop the view {self.old_sql}: the old name is gone.",
            (self.guard("contract-guard"), drop),
            (recreate,),
            before=f"Every running instance maps {self.new_sql}: code that uses {self.old_sql} is gone.",
            after="Nothing: the rename is complete.",
            rollback=f"Downgrade this revision: re-creates the view {self.old_sql}.",
        )

    def plan(self) -> Plan:
        old_key, new_key = f"{self.s}.{self.old}", f"{self.s}.{self.new}"
        notes = [
            f"indexes, constraints, sequences and triggers of {self.old_sql} keep their names",
            f"through the view {self.old_sql}, old code cannot use ON CONFLICT ON CONSTRAINT, TRUNCATE, COPY, "
            "ALTER TABLE or pg_get_serial_sequence, and reflection sees no primary key (see "
            "docs/operations/rename-table.md)",
        ]
        if self.f.extra.get("row_security"):
            notes.append("row-level security applies through the view: it is security_invoker")
        if self.f.dependent_views:
            notes.append(
                f"view(s) {', '.join(self.f.dependent_views)} follow the table to its new name (they refer to it, "
                "not to its name)"
            )
        return Plan(
            plan_id=self.plan_id,
            operation=self.op.kind,
            schema=self.s,
            table=self.old,
            title=f"rename {self.old_sql} to {self.new_sql}",
            phases=(self.expand(), self.contract()),
            removes={old_key: ["*"]},
            adds={new_key: ["*"]},
            touches={old_key: ["*"], new_key: ["*"]},
            spec={
                "operation": self.op.kind,
                "schema": self.s,
                "table": self.old,
                "new_name": self.new,
                "facts": self.f.to_json(),
            },
            notes=tuple(notes),
        )
