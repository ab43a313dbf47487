"""Alembic's autogenerate diff, sorted into what Alembic may keep and what needs an ``ecm`` plan.

Pure: the input is the ``UpgradeOps`` tree ``alembic revision --autogenerate`` builds (or
``ecm plan auto`` builds the same way), plus the user's answers; the output is one
:class:`Decision` per difference and the questions still open. No connection is opened:
the operations chosen here read their facts later, through the plan flow.

The rules, one per Alembic operation (docs/autogenerate.md has the table):

* a new table, and anything on it, stays with Alembic: no running code reads it yet;
* a dropped table is a ``drop-table`` plan (a guarded contract), unless it is a rename;
* a dropped and an added column of compatible type in one table, or a dropped and a
  created table with the same columns, are a **rename candidate**; nothing is decided
  until the user says (``--rename`` / ``--no-rename``): a drop that might be a rename is
  never written;
* an added column that is nullable, or has a non-volatile server default, stays with
  Alembic (catalog only since PostgreSQL 11); a volatile default, or NOT NULL without a
  default, is an ``add-column`` plan (the latter needs a fill);
* a type change is a same-name ``change-type`` when old and new code can share the column
  (the allow-listed pairs of :mod:`expandcontract.plan.types`), and refused otherwise, with
  the rename that makes it possible;
* NOT NULL is a ``set-not-null`` plan with a fill; DROP NOT NULL, defaults and comments stay;
* an index, unique constraint, foreign key or (opted-in) check on an existing table is an
  ``add-index`` / ``add-unique`` / ``add-foreign-key`` / ``add-check`` plan; a dropped index is
  a ``drop-index`` plan; dropped constraints stay with Alembic (brief lock, no scan);
* whatever needs a column or table this same revision creates is deferred to the next run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BadInput
from .sqltext import expression, pg_type, qualified_key, server_default

if TYPE_CHECKING:
    from alembic.operations.ops import MigrateOperation, UpgradeOps

    from ..plan.ops.base import Operation

Action = Literal["alembic", "plan", "covered", "deferred", "refused"]
TableKey = tuple[str | None, str]


@dataclass(frozen=True)
class Choices:
    """What the user decided: renames, non-renames and fills, keyed as they type them."""

    renames: Mapping[str, str] = field(
        default_factory=dict
    )  # "users.name" -> "full_name"; "users" -> "people"
    no_renames: frozenset[str] = frozenset()  # "users.bio", "users"
    fills: Mapping[str, str] = field(default_factory=dict)  # "users.email" -> "''"

    @classmethod
    def parse(
        cls, renames: Iterable[str] = (), no_renames: Iterable[str] = (), fills: Iterable[str] = ()
    ) -> Choices:
        """From ``--rename TABLE.OLD:NEW``, ``--no-rename TABLE.COLUMN`` and ``--fill TABLE.COLUMN=SQL``."""
        parsed: dict[str, str] = {}
        for item in renames:
            old, sep, new = item.partition(":")
            if not sep or not old.strip() or not new.strip() or "." in new:
                raise BadInput(
                    f"--rename {item!r}: expected TABLE.OLD:NEW for a column or OLD:NEW for a table "
                    "(the new name without a table or schema)"
                )
            parsed[old.strip()] = new.strip()
        filled: dict[str, str] = {}
        for item in fills:
            target, sep, sql = item.partition("=")
            if not sep or "." not in target or not sql.strip():
                raise BadInput(f"--fill {item!r}: expected TABLE.COLUMN=SQL (e.g. users.email=\"''\")")
            filled[target.strip()] = sql.strip()
        return cls(parsed, frozenset(n.strip() for n in no_renames if n.strip()), filled)


@dataclass(frozen=True)
class Question:
    """Something only the user can decide; ``how`` says which option answers it."""

    key: str  # "users.name" (a column) or "users" (a table)
    kind: Literal["rename", "fill"]
    text: str
    options: tuple[str, ...] = ()  # rename targets
    how: str = ""


@dataclass
class Decision:
    """What happens to one difference Alembic found."""

    action: Action
    what: str  # "drop column users.name"
    why: str
    op: Operation | None = None  # the plan's operation (action "plan")
    sources: list[MigrateOperation] = field(
        default_factory=list
    )  # Alembic ops this takes out of the revision
    keep: MigrateOperation | None = None  # what stays in the revision instead (part of an alter_column)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"action": self.action, "what": self.what, "why": self.why}
        if self.op is not None:
            doc["operation"] = self.op.kind
            doc["command"] = command_line(self.op)
        return doc


@dataclass
class Result:
    decisions: list[Decision]
    questions: list[Question]

    @property
    def plans(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "plan"]

    @property
    def refused(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "refused"]


def command_line(op: Operation) -> str:
    """The ``ecm plan …`` command that plans the same thing by hand."""
    import shlex
    import typing

    from ..plan.ops.base import Param

    words = ["ecm", "plan", op.kind]
    options: list[str] = []
    hints = typing.get_type_hints(type(op))
    for f in dataclasses.fields(op):
        spec = f.metadata.get("cli")
        if not isinstance(spec, Param):
            continue
        value = getattr(op, f.name)
        if value is None or value is False or value == () or (spec.option and value == f.default):
            continue
        values = list(value) if typing.get_origin(hints[f.name]) is tuple else [value]
        if spec.option is None:
            words += [shlex.quote(str(v)) for v in values]
        elif value is True:
            options.append(spec.option)
        else:
            for v in values:
                options += [spec.option, shlex.quote(str(v))]
    return " ".join(words + options)


# -- reading the diff -----------------------------------------------------------------------


def _flatten(upgrade_ops: UpgradeOps) -> Iterator[tuple[TableKey | None, MigrateOperation]]:
    """Every operation with the table it belongs to (None for whole-table operations)."""
    from alembic.operations import ops

    for item in upgrade_ops.ops:
        if isinstance(item, ops.ModifyTableOps):
            for inner in item.ops:
                yield (item.schema, item.table_name), inner
        else:
            yield None, item


def _table_of(op: Any) -> TableKey:
    return (getattr(op, "schema", None), str(op.table_name))


def _types_compatible(old: str | None, new: str | None) -> bool:
    """A rename candidate's types: the same, or one every old value fits in (a widening; unknown:
    ask). A narrower type (varchar(100) -> varchar(50)) is no candidate: a rename would lose data."""
    from ..plan import types

    if old is None or new is None:
        return True
    try:
        a, b = types.parse(old), types.parse(new)
    except BadInput:
        return old == new
    return a.same(b) or types.same_name(a, b)


def _same_type(old: str | None, new: str | None) -> bool:
    from ..plan import types

    if old is None or new is None:
        return old == new
    try:
        return types.parse(old).same(types.parse(new))
    except BadInput:
        return old == new


@dataclass
class _Diff:
    """The diff, indexed: tables created and dropped, columns added and dropped per table."""

    created: dict[TableKey, Any] = field(default_factory=dict)
    dropped: dict[TableKey, Any] = field(default_factory=dict)
    added: dict[TableKey, dict[str, Any]] = field(default_factory=dict)
    removed: dict[TableKey, dict[str, Any]] = field(default_factory=dict)
    altered: dict[tuple[TableKey, str], Any] = field(default_factory=dict)

    @classmethod
    def of(cls, upgrade_ops: UpgradeOps, owner: Owner | None = None) -> _Diff:
        from alembic.operations import ops

        diff = cls()
        for table, op in _flatten(upgrade_ops):
            if isinstance(op, ops.CreateTableOp):
                diff.created[_table_of(op)] = op
            elif isinstance(op, ops.DropTableOp):
                diff.dropped[_table_of(op)] = op
            elif isinstance(op, ops.AddColumnOp) and table is not None:
                if owner is None or owner(table, frozenset({op.column.name})) is None:
                    diff.added.setdefault(table, {})[op.column.name] = op
            elif isinstance(op, ops.DropColumnOp) and table is not None:
                if owner is None or owner(table, frozenset({op.column_name})) is None:
                    diff.removed.setdefault(table, {})[op.column_name] = op
            elif isinstance(op, ops.AlterColumnOp) and table is not None:
                diff.altered[(table, op.column_name)] = op
        return diff


def _dropped_type(op: Any) -> str | None:
    reverse = getattr(op, "_reverse", None)
    column = getattr(reverse, "column", None)
    return pg_type(getattr(column, "type", None)) if column is not None else None


def _table_columns(op: Any) -> dict[str, str | None]:
    """Column name -> type of a CreateTableOp / DropTableOp (a dropped one carries the reflected table)."""
    from sqlalchemy import Column

    columns = getattr(op, "columns", None)
    if columns is None:
        table = op.to_table() if hasattr(op, "to_table") else None
        columns = list(table.columns) if table is not None else []
    return {c.name: pg_type(c.type) for c in columns if isinstance(c, Column)}


# -- renames ------------------------------------------------------------------------------------


@dataclass
class _Renames:
    columns: dict[tuple[TableKey, str], str] = field(default_factory=dict)  # (table, old) -> new
    tables: dict[TableKey, str] = field(default_factory=dict)  # old -> new name
    questions: list[Question] = field(default_factory=list)

    def new_columns(self, table: TableKey) -> set[str]:
        return {new for (t, _), new in self.columns.items() if t == table}

    def renamed_into(self) -> dict[TableKey, TableKey]:
        return {(old[0], new): old for old, new in self.tables.items()}


def _resolve_renames(diff: _Diff, choices: Choices) -> _Renames:
    out = _Renames()
    used = set()
    # Tables: a dropped table whose columns a created table (same schema) has, compatible.
    for old_key, drop in diff.dropped.items():
        key = qualified_key(*old_key)
        old_cols = _table_columns(drop)
        candidates = [
            new_key[1]
            for new_key, create in diff.created.items()
            if new_key[0] == old_key[0]
            and (new_cols := _table_columns(create)).keys() == old_cols.keys()
            and all(_types_compatible(old_cols[c], new_cols[c]) for c in old_cols)
        ]
        chosen = choices.renames.get(key)
        if chosen is not None:
            used.add(key)
            if (old_key[0], chosen) not in diff.created:
                raise BadInput(f"--rename {key}:{chosen}: the models create no table {chosen!r}")
            out.tables[old_key] = chosen
        elif candidates and key not in choices.no_renames:
            out.questions.append(
                Question(
                    key,
                    "rename",
                    f"table {key} is dropped and {', '.join(candidates)} created with the same columns: a rename?",
                    tuple(candidates),
                    f"--rename {key}:{candidates[0]} (a rename) or --no-rename {key} (a drop)",
                )
            )
    # Columns: a dropped and an added column of one table, compatible types. Explicit answers
    # first, so that a column they claim is no one else's candidate.
    for table, removed in diff.removed.items():
        added = diff.added.get(table, {})
        for old in removed:
            key = qualified_key(*table, old)
            chosen = choices.renames.get(key)
            if chosen is None:
                continue
            used.add(key)
            if chosen not in added:
                raise BadInput(f"--rename {key}:{chosen}: the models add no column {chosen!r} to {table[1]}")
            out.columns[(table, old)] = chosen
    for table, removed in diff.removed.items():
        added = diff.added.get(table, {})
        claimed = out.new_columns(table)
        for old, drop in removed.items():
            key = qualified_key(*table, old)
            if (table, old) in out.columns or key in choices.no_renames:
                continue
            old_type = _dropped_type(drop)
            candidates = [
                name
                for name, add in added.items()
                if name not in claimed
                and qualified_key(*table, name) not in choices.no_renames
                and _types_compatible(old_type, pg_type(add.column.type))
            ]
            if candidates:
                out.questions.append(
                    Question(
                        key,
                        "rename",
                        f"column {key} is dropped and {', '.join(candidates)} added"
                        f" ({old_type or 'compatible type'}): a rename?",
                        tuple(candidates),
                        f"--rename {key}:{candidates[0]} (a rename) or --no-rename {key} (a drop)",
                    )
                )
    unknown = sorted(set(choices.renames) - used)
    if unknown:
        raise BadInput(
            f"--rename {unknown[0]}:{choices.renames[unknown[0]]}: the models neither drop that column nor that table"
        )
    return out


# -- the decisions ------------------------------------------------------------------------------


#: Which in-flight plan owns these columns of a table (None: no plan); "*" stands for the table.
Owner = Callable[[TableKey, frozenset[str]], "str | None"]


def classify(
    upgrade_ops: UpgradeOps, choices: Choices | None = None, metadata: Any = None, owner: Owner | None = None
) -> Result:
    """Sort every difference; questions left open mean nothing may be written yet.

    ``metadata`` (the models compared) tells primary keys and the foreign keys that reference
    them: an integer key widened to bigint is a ``bigint-key`` plan, which also widens the
    columns referencing it. ``owner`` names the in-flight plan that owns what an operation
    touches: such an operation is that plan's business until its contract (the hook passes it
    when env.py lacks the ``include_object`` filter that would have hidden it).
    """
    choices = choices or Choices()
    diff = _Diff.of(upgrade_ops, owner)
    renames = _resolve_renames(diff, choices)
    sorter = _Sorter(diff, renames, choices, _Keys.of(metadata), owner)
    for table, op in _flatten(upgrade_ops):
        sorter.add(table, op)
    return Result(sorter.decisions, renames.questions + sorter.questions)


@dataclass
class _Keys:
    """Single-column primary keys and the columns that reference them, from the models."""

    primary: dict[TableKey, str] = field(default_factory=dict)
    references: dict[tuple[TableKey, str], tuple[TableKey, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, metadata: Any) -> _Keys:
        keys = cls()
        if metadata is None:
            return keys
        for md in metadata if isinstance(metadata, (list, tuple)) else [metadata]:
            for table in md.tables.values():
                pk = list(table.primary_key.columns)
                if len(pk) == 1:
                    keys.primary[(table.schema, table.name)] = pk[0].name
                for fk in table.foreign_keys:
                    target = fk.column
                    keys.references[((table.schema, table.name), fk.parent.name)] = (
                        (target.table.schema, target.table.name),
                        target.name,
                    )
        return keys


_TO_BIGINT = {("int4", "int8"), ("int2", "int8")}


class _Sorter:
    def __init__(
        self,
        diff: _Diff,
        renames: _Renames,
        choices: Choices,
        keys: _Keys | None = None,
        owner: Owner | None = None,
    ) -> None:
        self.diff, self.renames, self.choices = diff, renames, choices
        self.keys = keys or _Keys()
        self.owner = owner
        self.decisions: list[Decision] = []
        self.questions: list[Question] = []
        self.renamed_into = renames.renamed_into()

    # Columns that do not exist in the database before this revision's work has run.
    def _new_columns(self, table: TableKey) -> set[str]:
        return set(self.diff.added.get(table, {})) | self.renames.new_columns(table)

    def _decide(self, action: Action, what: str, why: str, source: Any, op: Operation | None = None) -> None:
        self.decisions.append(Decision(action, what, why, op, [source] if action != "alembic" else []))

    def _plan(self, kind: str, what: str, why: str, source: Any, **params: Any) -> None:
        from ..plan.ops import REGISTRY

        self._decide("plan", what, why, source, REGISTRY[kind](**params))

    def add(self, table: TableKey | None, op: Any) -> None:
        from alembic.operations import ops

        owned = self._owned(table, op)
        if owned is not None:
            return self._decide(
                "covered",
                _describe(op, qualified_key(*(table or _table_of(op)))),
                f"plan {owned} is in flight on it; its contract decides (add "
                "include_object=expandcontract.autogen.include_object to env.py to keep it out of the diff)",
                op,
            )
        if table is None:
            if isinstance(op, ops.CreateTableOp):
                return self._create_table(op)
            if isinstance(op, ops.DropTableOp):
                return self._drop_table(op)
            what = type(op).__name__
            return self._decide("alembic", what, "not a change ecm plans; kept as autogenerate wrote it", op)
        name = qualified_key(*table)
        if table in self.renamed_into:  # before "created": the table exists only once the rename ran
            return self._decide(
                "deferred",
                _describe(op, name),
                f"{name} is the new name of a table being renamed (its indexes and constraints follow it): "
                "whatever still differs shows when autogenerate runs again after its expand",
                op,
            )
        if table in self.diff.created:
            return self._decide(
                "alembic", _describe(op, name), f"on the new table {name}: nothing reads it yet", op
            )
        if table in self.diff.dropped:
            verb = "rename-table" if table in self.renames.tables else "drop-table"
            return self._decide("covered", _describe(op, name), f"the {verb} plan for {name} handles it", op)
        handler = {
            ops.AddColumnOp: self._add_column,
            ops.DropColumnOp: self._drop_column,
            ops.AlterColumnOp: self._alter_column,
            ops.CreateIndexOp: self._create_index,
            ops.DropIndexOp: self._drop_index,
            ops.CreateUniqueConstraintOp: self._create_unique,
            ops.CreateForeignKeyOp: self._create_fk,
            ops.CreateCheckConstraintOp: self._create_check,
            ops.DropConstraintOp: self._drop_constraint,
        }.get(type(op))
        if handler is None:
            return self._decide("alembic", _describe(op, name), "not a change ecm plans; kept as written", op)
        return handler(table, op)

    def _owned(self, table: TableKey | None, op: Any) -> str | None:
        if self.owner is None:
            return None
        if table is None:
            return self.owner(_table_of(op), frozenset({"*"})) if hasattr(op, "table_name") else None
        columns = set(_columns_of(op))
        return self.owner(table, frozenset(columns)) if columns else None

    # -- tables
    def _create_table(self, op: Any) -> None:
        key = _table_of(op)
        name = qualified_key(*key)
        if key in self.renamed_into:
            old_key = self.renamed_into[key]
            old = qualified_key(*old_key)
            if _table_columns(op).keys() != _table_columns(self.diff.dropped[old_key]).keys():
                return self._decide(
                    "deferred",
                    f"create table {name}",
                    f"the rename-table plan {old} -> {key[1]} renames it; its columns differ from {old}'s: "
                    "run autogenerate again after the rename's expand for the difference",
                    op,
                )
            return self._decide(
                "covered", f"create table {name}", f"the rename-table plan {old} -> {key[1]}", op
            )
        self._decide("alembic", f"create table {name}", "a new table: no running code reads it yet", op)

    def _drop_table(self, op: Any) -> None:
        key = _table_of(op)
        name = qualified_key(*key)
        if any(q.key == name for q in self.renames.questions):
            return self._decide("deferred", f"drop table {name}", "a rename candidate: decide first", op)
        if key in self.renames.tables:
            new = self.renames.tables[key]
            return self._plan(
                "rename-table",
                f"rename table {name} -> {new}",
                "old code keeps the old name through an updatable view until the contract",
                op,
                table=key[1],
                new_name=new,
                schema=key[0],
            )
        self._plan(
            "drop-table",
            f"drop table {name}",
            "a guarded contract: dropped only once no live code maps it",
            op,
            table=key[1],
            schema=key[0],
        )

    # -- columns
    def _add_column(self, table: TableKey, op: Any) -> None:
        column = op.column
        name = qualified_key(*table, column.name)
        if column.name in self.renames.new_columns(table):
            return self._decide("covered", f"add column {name}", "the rename plan adds it", op)
        if any(
            q.kind == "rename" and column.name in q.options and q.key.startswith(qualified_key(*table) + ".")
            for q in self.renames.questions
        ):
            return self._decide("deferred", f"add column {name}", "a rename candidate: decide first", op)
        if column.computed is not None or column.identity is not None:
            what = "a generated column" if column.computed is not None else "an identity column"
            return self._decide(
                "refused",
                f"add column {name}",
                f"{what} added to an existing table rewrites it under ACCESS EXCLUSIVE; add a plain column "
                f"(ecm plan add-column … --default …) and fill it instead",
                op,
            )
        type_sql = pg_type(column.type)
        default = server_default(column.server_default)
        fill = self.choices.fills.get(name)
        if type_sql is None:
            return self._decide(
                "alembic", f"add column {name}", "its type has no PostgreSQL spelling ecm can read; kept", op
            )
        if column.nullable and default is None and fill is None:
            return self._decide("alembic", f"add column {name}", "nullable, no default: catalog only", op)
        if not column.nullable and default is None and fill is None:
            self.questions.append(
                Question(
                    name,
                    "fill",
                    f"column {name} is added NOT NULL without a server default: old code that does not "
                    "know it cannot insert. What value do existing rows and old code's inserts get?",
                    how=f"--fill {name}=SQL (e.g. --fill \"{name}=''\")",
                )
            )
            return self._decide("deferred", f"add column {name}", "needs a fill: decide first", op)
        from ..plan.ops.add_column import AddColumn

        plan = AddColumn(
            table=table[1],
            schema=table[0],
            new=column.name,
            type_sql=type_sql,
            default=default if default is not None else fill,
            not_null=not column.nullable,
            fill=fill if default is not None and fill is not None else None,
        )
        try:
            value = plan.fill_expression() or plan.default_expression()
        except BadInput as exc:
            return self._decide("refused", f"add column {name}", str(exc), op)
        if fill is None and (value is None or value.catalog_only):
            return self._decide(
                "alembic",
                f"add column {name}",
                "its default is not volatile: catalog only (PostgreSQL 11+)",
                op,
            )
        why = (
            "NOT NULL without a server default: the fill becomes its default so old code keeps inserting"
            if default is None
            else "its value for existing rows is volatile or reads other columns: backfilled in batches"
        )
        self._decide("plan", f"add column {name}", why, op, plan)

    def _drop_column(self, table: TableKey, op: Any) -> None:
        name = qualified_key(*table, op.column_name)
        if any(q.key == name for q in self.renames.questions):
            return self._decide("deferred", f"drop column {name}", "a rename candidate: decide first", op)
        new = self.renames.columns.get((table, op.column_name))
        if new is not None:
            added = self.diff.added[table][new]
            old_type, new_type = _dropped_type(op), pg_type(added.column.type)
            if _same_type(old_type, new_type) or new_type is None:
                return self._plan(
                    "rename-column",
                    f"rename column {name} -> {new}",
                    "both names kept in step by a trigger until old code is gone",
                    op,
                    table=table[1],
                    schema=table[0],
                    old=op.column_name,
                    new=new,
                )
            return self._plan(
                "change-type",
                f"rename column {name} -> {new} as {new_type}",
                f"a new column of type {new_type} kept in step both ways (casts) until old code is gone",
                op,
                table=table[1],
                schema=table[0],
                column_name=op.column_name,
                type=new_type,
                rename_to=new,
            )
        self._plan(
            "drop-column",
            f"drop column {name}",
            "a guarded contract: dropped only once no live code maps it",
            op,
            table=table[1],
            schema=table[0],
            column_name=op.column_name,
            fill=self.choices.fills.get(name),
        )

    def _alter_column(self, table: TableKey, op: Any) -> None:
        from ..plan import types

        name = qualified_key(*table, op.column_name)
        if op.column_name in self._new_columns(table):
            return self._decide("deferred", f"alter column {name}", "the column is new in this revision", op)
        changes_type = op.modify_type is not None
        sets_not_null = op.modify_nullable is False and op.existing_nullable is not False
        if not changes_type and not sets_not_null:
            return self._decide("alembic", f"alter column {name}", _safe_alter(op), op)
        keep = _without(op, type_=changes_type, not_null=sets_not_null)
        source = [op]
        if changes_type and keep is not None:
            # A type change may swap a shadow column in at its contract, which re-creates the column's
            # default and comment as the plan read them: a change made beside it would be lost.
            self.decisions.append(
                Decision(
                    "deferred",
                    f"default/comment of {name}",
                    "changed with its type: run autogenerate again after the type change's contract",
                    None,
                    [],
                )
            )
            keep = None
        if changes_type:
            old, new = pg_type(op.existing_type), pg_type(op.modify_type)
            what = f"change type of {name} ({old or '?'} -> {new or '?'})"
            if self._bigint_key(table, op, old, new, what, keep, sets_not_null):
                pass
            elif old is None or new is None:
                self.decisions.append(
                    Decision(
                        "refused",
                        what,
                        "ecm cannot read one of the two types; write this change by hand",
                        None,
                        source,
                        keep,
                    )
                )
            else:
                try:
                    same = types.same_name(types.parse(old), types.parse(new))
                except BadInput:
                    same = False
                if same:
                    from ..plan.ops.change_type import ChangeType

                    self.decisions.append(
                        Decision(
                            "plan",
                            what,
                            "old and new code can share the column: in place when only the catalog changes, "
                            "else a shadow column swapped in under the same name",
                            ChangeType(table=table[1], schema=table[0], column_name=op.column_name, type=new),
                            source,
                            keep,
                        )
                    )
                else:
                    self.decisions.append(
                        Decision(
                            "refused",
                            what,
                            f"old code would write {old} values into a {new} column (or fail reading them): "
                            f"the new type needs a new name. Map the column under a new name in the models "
                            f'(e.g. mapped_column("{op.column_name}_new", …)) and run again with '
                            f"--rename {name}:{op.column_name}_new",
                            None,
                            source,
                            keep,
                        )
                    )
            if sets_not_null:
                self.decisions.append(
                    Decision(
                        "deferred",
                        f"set {name} NOT NULL",
                        "one plan per column at a time: run autogenerate again after the type change's contract",
                        None,
                        [],
                    )
                )
            return None
        fill = self.choices.fills.get(name)
        if fill is None:
            self.questions.append(
                Question(
                    name,
                    "fill",
                    f"column {name} becomes NOT NULL: old code may still write NULL. What value replaces NULL "
                    "(existing rows and old code's writes)?",
                    how=f"--fill {name}=SQL (e.g. --fill \"{name}=''\")",
                )
            )
            self.decisions.append(
                Decision("deferred", f"set {name} NOT NULL", "needs a fill: decide first", None, source, keep)
            )
            return None
        from ..plan.ops.set_not_null import SetNotNull

        self.decisions.append(
            Decision(
                "plan",
                f"set {name} NOT NULL",
                "NULLs replaced by the fill (trigger + backfill); NOT NULL proven by a validated check at contract",
                SetNotNull(table=table[1], schema=table[0], target=op.column_name, fill=fill),
                source,
                keep,
            )
        )
        return None

    def _widens_to_bigint(self, op: Any) -> bool:
        from ..plan import types

        old, new = pg_type(op.existing_type), pg_type(op.modify_type)
        try:
            return (
                old is not None
                and new is not None
                and (types.parse(old).base, types.parse(new).base) in _TO_BIGINT
            )
        except BadInput:
            return False

    def _bigint_key(
        self, table: TableKey, op: Any, old: str | None, new: str | None, what: str, keep: Any, not_null: bool
    ) -> bool:
        """An integer primary key (or a column referencing one) widened to bigint: bigint-key's job."""
        if not self._widens_to_bigint(op):
            return False
        column = op.column_name
        parent = self.keys.references.get((table, column))
        if parent is not None and self.keys.primary.get(parent[0]) == parent[1]:
            parent_alter = self.diff.altered.get((parent[0], parent[1]))
            if parent_alter is not None and self._widens_to_bigint(parent_alter):
                self.decisions.append(
                    Decision(
                        "covered",
                        what,
                        f"the bigint-key plan for {qualified_key(*parent[0])} widens the columns referencing its key",
                        None,
                        [op],
                        keep,
                    )
                )
                return True
        if self.keys.primary.get(table) != column:
            return False
        from ..plan.ops.bigint_key import BigintKey

        self.decisions.append(
            Decision(
                "plan",
                what,
                "the primary key and every column referencing it get shadow bigint columns, backfilled, "
                "then swapped in one short transaction per table",
                BigintKey(table=table[1], schema=table[0], column_name=column),
                [op],
                keep,
            )
        )
        return True

    # -- indexes and constraints
    def _needs_new(self, table: TableKey, columns: Iterable[str], what: str, op: Any) -> bool:
        wanted = set(columns)
        renamed = self.renames.new_columns(table) & wanted
        added = set(self.diff.added.get(table, {})) & wanted - renamed
        if renamed:
            self._decide(
                "deferred",
                what,
                f"on {', '.join(sorted(renamed))}, which a rename plan creates with the old column's indexes and "
                "constraints; whatever still differs shows after its contract",
                op,
            )
        elif added:
            self._decide(
                "deferred",
                what,
                f"needs column(s) {', '.join(sorted(added))} this revision adds: run autogenerate again once it ran",
                op,
            )
        return bool(renamed or added)

    def _create_index(self, table: TableKey, op: Any) -> None:
        from sqlalchemy import Column
        from sqlalchemy.sql.elements import UnaryExpression

        index = op.to_index()
        name = qualified_key(*table)
        what = f"create index {op.index_name} on {name}"
        if self._needs_new(table, [c.name for c in index.columns], what, op):
            return None
        columns: list[str] = []
        expressions: list[Any] = []
        for element in index.expressions:
            if isinstance(element, Column) and not expressions:
                columns.append(element.name)
            elif isinstance(element, UnaryExpression) and element.modifier is not None:
                return self._refuse_index(what, "a key with a sort order (ASC/DESC, NULLS FIRST/LAST)", op)
            elif isinstance(element, Column) or expressions:
                return self._refuse_index(
                    what, "a column key after an expression key, or two expressions", op
                )
            else:
                expressions.append(element)
        pg = index.dialect_options["postgresql"]
        unsupported = [
            label
            for key, label in (
                ("ops", "operator classes (postgresql_ops)"),
                ("with", "storage parameters (postgresql_with)"),
                ("tablespace", "a tablespace"),
                ("nulls_not_distinct", "NULLS NOT DISTINCT"),
            )
            if pg.get(key)
        ]
        if unsupported:
            return self._refuse_index(what, ", ".join(unsupported), op)
        where, include, using = pg.get("where"), pg.get("include") or (), pg.get("using")
        return self._plan(
            "add-index",
            what,
            "built CONCURRENTLY: writes continue",
            op,
            table=table[1],
            schema=table[0],
            columns=tuple(columns),
            index=op.index_name,
            unique=bool(index.unique),
            where_sql=expression(where) if where is not None else None,
            using=str(using) if using else None,
            include=tuple(str(getattr(c, "name", c)) for c in include),
            expression=expression(expressions[0]) if expressions else None,
        )

    def _refuse_index(self, what: str, feature: str, op: Any) -> None:
        self._decide(
            "refused",
            what,
            f"{feature}: ecm plan add-index cannot build that; create it with `ecm plan custom` "
            "(CREATE INDEX CONCURRENTLY in its expand file) and leave it out of this revision",
            op,
        )

    def _drop_index(self, table: TableKey, op: Any) -> None:
        name = qualified_key(*table)
        what = f"drop index {op.index_name} on {name}"
        reverse = getattr(op, "_reverse", None)
        columns = {c.name for c in reverse.to_index().columns} if reverse is not None else set()
        gone = set(self.diff.removed.get(table, {}))
        if columns and columns <= gone:
            return self._decide("covered", what, "the plan that drops or renames its column handles it", op)
        self._plan(
            "drop-index",
            what,
            "DROP INDEX CONCURRENTLY; a unique one is guarded on live code that declares it",
            op,
            index=str(op.index_name),
            schema=table[0],
        )

    def _create_unique(self, table: TableKey, op: Any) -> None:
        what = f"add unique constraint {op.constraint_name or '(unnamed)'} on {qualified_key(*table)}"
        if self._needs_new(table, op.columns, what, op):
            return None
        self._plan(
            "add-unique",
            what,
            "duplicates counted first, then a concurrent unique index becomes the constraint",
            op,
            table=table[1],
            schema=table[0],
            columns=tuple(op.columns),
            constraint=op.constraint_name,
        )

    def _create_fk(self, table: TableKey, op: Any) -> None:
        from ..sql.quoting import q, qualified

        what = f"add foreign key {op.constraint_name or ''} {qualified_key(*table)}({', '.join(op.local_cols)})".replace(
            "  ", " "
        )
        if self._needs_new(table, op.local_cols, what, op):
            return None
        ref_schema = op.kw.get("referent_schema")
        ref_key = (ref_schema, op.referent_table)
        new_remote = self._new_columns(ref_key) & set(op.remote_cols)
        if new_remote:
            return self._decide(
                "deferred",
                what,
                f"references {op.referent_table}.{', '.join(sorted(new_remote))}, which this change adds or renames: "
                "run again after that plan's contract",
                op,
            )
        if ref_key in self.diff.created or ref_key in self.renamed_into:
            return self._decide(
                "deferred",
                what,
                f"references {op.referent_table}, which this revision creates: run again once it ran",
                op,
            )
        options = [o for o in ("deferrable", "initially", "match") if op.kw.get(o)]
        if options:
            return self._decide(
                "refused",
                what,
                f"{', '.join(options).upper()}: ecm plan add-foreign-key builds immediate keys only; add it with "
                "`ecm plan custom` (NOT VALID in the expand, VALIDATE in the contract)",
                op,
            )
        references = f"{qualified(ref_schema, op.referent_table)}({', '.join(q(c) for c in op.remote_cols)})"
        self._plan(
            "add-foreign-key",
            what,
            "orphans counted first; NOT VALID, then validated at contract without blocking writes",
            op,
            table=table[1],
            schema=table[0],
            columns=tuple(op.local_cols),
            references=references,
            on_delete=op.kw.get("ondelete"),
            on_update=op.kw.get("onupdate"),
            constraint=op.constraint_name,
        )

    def _create_check(self, table: TableKey, op: Any) -> None:
        what = f"add check {op.constraint_name} on {qualified_key(*table)}"
        if not op.constraint_name:
            return self._decide("refused", what, "an unnamed check: name it in the models", op)
        self._plan(
            "add-check",
            what,
            "violations counted first; NOT VALID, then validated at contract",
            op,
            table=table[1],
            schema=table[0],
            constraint=str(op.constraint_name),
            expression=expression(op.condition),
        )

    def _drop_constraint(self, table: TableKey, op: Any) -> None:
        from alembic.operations import ops

        what = f"drop {op.constraint_type or 'constraint'} {op.constraint_name} on {qualified_key(*table)}"
        reverse = getattr(op, "_reverse", None)
        gone = set(self.diff.removed.get(table, {}))
        columns = set(getattr(reverse, "columns", None) or getattr(reverse, "local_cols", None) or ())
        if isinstance(reverse, ops.CreateForeignKeyOp):
            ref_key = (reverse.kw.get("referent_schema"), reverse.referent_table)
            if (
                set(reverse.remote_cols) <= set(self.diff.removed.get(ref_key, {}))
                or ref_key in self.diff.dropped
            ):
                return self._decide(
                    "covered",
                    what,
                    "the plan that drops or renames the referenced column moves or drops this key at its contract",
                    op,
                )
        if columns and columns <= gone:
            return self._decide("covered", what, "the plan that drops or renames its column handles it", op)
        why = "catalog only, brief lock"
        if op.constraint_type == "unique":
            why += "; code that relies on it (ON CONFLICT on these columns) breaks once it is gone"
        self._decide("alembic", what, why, op)


def _columns_of(op: Any) -> list[str]:
    """The columns of its table an operation adds, drops, alters or covers."""
    from alembic.operations import ops

    if isinstance(op, ops.AddColumnOp):
        return [op.column.name]
    if isinstance(op, (ops.DropColumnOp, ops.AlterColumnOp)):
        return [op.column_name]
    if isinstance(op, ops.CreateIndexOp):
        return [c.name for c in op.to_index().columns]
    if isinstance(op, (ops.CreateUniqueConstraintOp,)):
        return [str(c) for c in op.columns]
    if isinstance(op, ops.CreateForeignKeyOp):
        return [str(c) for c in op.local_cols]
    reverse = getattr(op, "_reverse", None)
    if isinstance(op, ops.DropIndexOp) and reverse is not None:
        return [c.name for c in reverse.to_index().columns]
    if isinstance(op, ops.DropConstraintOp) and reverse is not None:
        return _columns_of(reverse)
    return []


def _describe(op: Any, table: str) -> str:
    kind = type(op).__name__.removesuffix("Op")
    detail = (
        getattr(op, "column_name", None)
        or getattr(op, "index_name", None)
        or getattr(op, "constraint_name", None)
    )
    column = getattr(op, "column", None)
    detail = detail or getattr(column, "name", None)
    return f"{kind} {table}{'.' + str(detail) if detail else ''}"


def _safe_alter(op: Any) -> str:
    parts = []
    if op.modify_nullable is True:
        parts.append("DROP NOT NULL is catalog only")
    if op.modify_server_default is not False:
        parts.append("a default changes only the catalog")
    if op.modify_comment is not False:
        parts.append("a comment changes only the catalog")
    return "; ".join(parts) or "catalog only"


def _without(op: Any, *, type_: bool, not_null: bool) -> Any:
    """The part of an alter_column that stays with Alembic (default, comment), or None."""
    import copy

    rest = copy.copy(op)
    if type_:
        rest.modify_type = None
    if not_null:
        rest.modify_nullable = None
    if (
        rest.modify_type is None
        and rest.modify_nullable is None
        and rest.modify_server_default is False
        and (rest.modify_comment is False)
    ):
        return None
    return rest


def apply(upgrade_ops: UpgradeOps, decisions: Iterable[Decision]) -> None:
    """Take out of the revision what the decisions moved to plans (or refused, or deferred);
    put back the part of an alter_column that stays (its default or comment)."""
    from alembic.operations import ops

    replace: dict[int, Any] = {}
    for d in decisions:
        for source in d.sources:
            replace[id(source)] = d.keep
    kept: list[Any] = []
    for item in upgrade_ops.ops:
        if isinstance(item, ops.ModifyTableOps):
            inner = [replace.get(id(o), o) if id(o) in replace else o for o in item.ops]
            item.ops = [o for o in inner if o is not None]
            if item.ops:
                kept.append(item)
        elif id(item) in replace:
            if replace[id(item)] is not None:
                kept.append(replace[id(item)])
        else:
            kept.append(item)
    upgrade_ops.ops = kept
