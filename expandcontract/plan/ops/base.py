"""The shape every operation has, so that everything above and below it is written once.

An operation is a frozen dataclass of its parameters. Its fields say how they appear on
the command line (``ecm plan OPERATION …`` is generated from them); its methods turn
facts about the table into a :class:`~expandcontract.plan.model.Plan`, with no database
connection. What it *touches* drives in-flight conflicts and autogenerate ownership;
what its contract *breaks* drives the guard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import BadInput
from ...sql.quoting import qualified
from .. import checks
from ..facts import TableFacts
from ..model import Plan


@dataclass(frozen=True)
class Param:
    """How one parameter appears on the command line: an argument, or an option (``--using``)."""

    help: str
    option: str | None = None
    metavar: str | None = None
    short: str | None = None


def param(help: str, option: str | None = None, *, default: Any = ..., metavar: str | None = None) -> Any:
    """A dataclass field that is also a CLI parameter (positional when ``option`` is None)."""
    meta = {"cli": Param(help, option, metavar)}
    if default is ...:
        return field(metadata=meta)
    return field(default=default, metadata=meta, kw_only=option is not None)


@dataclass(frozen=True)
class Operation:
    """Base of every operation: the table it works on, and the plan id once it is known."""

    kind: ClassVar[str] = ""
    #: First word of the plan id (default: ``kind``); rename-column keeps its historical "rename".
    id_verb: ClassVar[str] = ""
    #: One line for ``ecm plan --help``.
    summary: ClassVar[str] = ""
    #: What each phase will do, for ``ecm plan OPERATION --help``.
    phases_help: ClassVar[str] = ""
    #: Read every index, foreign key (both ways), check, view and policy of the table, and its
    #: grants, instead of those of one column (table, index and constraint operations).
    whole_table: ClassVar[bool] = False
    #: False: the operation may have no table (``custom``); the flow then hands it facts with
    #: an empty table name and only the server's version and the schema.
    needs_table: ClassVar[bool] = True

    table: str = param("Table to change (exact name; no quoting needed).")
    schema: str | None = param("Schema of the table (default: search_path).", "--schema", default=None)
    plan_id: str | None = field(default=None, kw_only=True)

    # -- what the plan flow asks ------------------------------------------------------
    def check_input(self) -> None:
        """Malformed names, before anything is read: BadInput, nothing changed."""
        checks.identifier(self.table, "table")
        if self.schema is not None:
            checks.identifier(self.schema, "schema")

    def column(self) -> str | None:
        """The existing column whose facts the operation needs (None: the table's only)."""
        return None

    def index_name(self) -> str | None:
        """An index the operation is about (drop-index): the flow finds its table first."""
        return None

    def related(self, facts: TableFacts) -> tuple[tuple[str, str], ...]:
        """Other tables (schema, name) whose whole-table facts the plan needs, read by the flow
        in the same transaction and handed over in ``facts.extra["related"]`` (see
        :func:`~expandcontract.plan.facts.related_facts`)."""
        return ()

    def related_columns(self, facts: TableFacts) -> tuple[tuple[str, str, str], ...]:
        """Columns (schema, table, column) of any table whose facts the plan needs (custom's
        --retypes: the old type), read by the flow (a missing one is exit 2) and handed over
        in ``facts.extra["columns"]``, a list of facts JSON in this order."""
        return ()

    def relations(self, facts: TableFacts) -> tuple[str, ...]:
        """Names in the table's schema the plan must know to be free or taken (rename-table's
        NEW): the flow hands over ``facts.extra["relations"]`` = {name: pg_class.relkind or None}."""
        return ()

    def id_parts(self) -> tuple[str, ...]:
        """Words after the table in the readable plan id."""
        return ()

    def base_plan_id(self, table: str) -> str:
        from .. import names

        return names.plan_id(self.id_verb or self.kind, table, *self.id_parts())

    def validate(self, facts: TableFacts) -> None:
        """What the table makes impossible online: BadInput with the reason (exit 2)."""
        checks.table_is_plannable(facts)

    def build(self, facts: TableFacts) -> Plan:  # pragma: no cover - every operation overrides
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------
    def id_for(self, facts: TableFacts) -> str:
        return self.plan_id or self.base_plan_id(facts.name)

    @staticmethod
    def where(facts: TableFacts, column: str | None = None) -> str:
        name = qualified(facts.schema, facts.name)
        return f"{name}.{qualified(None, column)}" if column else name

    @staticmethod
    def require_new_column(facts: TableFacts, column: str) -> None:
        if column in facts.columns:
            raise BadInput(
                f"column {qualified(None, column)} already exists in table {qualified(facts.schema, facts.name)}; "
                "pick another name or drop it first"
            )
