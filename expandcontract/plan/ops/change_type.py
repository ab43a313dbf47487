"""change-type: a column's new type, in place, under the same name, or under a new name.

Three shapes, chosen from the pair of types (see :mod:`expandcontract.plan.types`):

* **in place** — the change only touches the catalog on this server (varchar(n) → longer or
  text, numeric precision at the same scale, timestamp → timestamptz with TimeZone pinned to
  UTC): one ``ALTER COLUMN … TYPE`` in the contract, under lock_timeout. Not when that statement
  would still read the table (a CHECK on the column, an expression or partial index, any index
  of a timestamp column): such a pair goes through a shadow column like the next shape.
* **same name** — old and new code can both use the column through the deploy (int → bigint,
  numeric widening, …): a shadow column of the new type kept in step by a trigger, backfilled,
  then swapped in under the old name in one short transaction in the contract.
* **--rename-to NEW** — any conversion (``--using`` / ``--down``): NEW beside the column, kept
  in step both ways, the old column dropped at the contract like rename-column's.

A conversion that can fail never fails a write: it runs in a function whose EXCEPTION block
holds only the conversion (no write inside it, so no transaction id per row) and yields NULL;
such rows are found afterwards by a set-based query (``ecm verify``, the contract's guard)
and hold the contract with their keys. Constraints the conversion could violate on the new
column (NOT NULL, checks, unique, foreign keys) are made only once none are left.

Same-name and in-place changes change the column's result type under the same name, which
breaks statements prepared before the swap (psycopg prepares after 5 executions): those
steps are ``swap`` steps, run only once live instances paused their prepared statements
(:mod:`expandcontract.live.swaps`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ...errors import BadInput
from ...sql.quoting import literal, q, qualified
from ...sql.transaction import one_transaction
from .. import checks, names, types
from ..blocks import Builder
from ..dependents import Dependents, carried, step
from ..facts import TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param


@dataclass(frozen=True)
class ChangeType(Operation):
    kind: ClassVar[str] = "change-type"
    summary: ClassVar[str] = (
        "Change a column's type with zero downtime: in place when only the catalog changes, "
        "else through a shadow column swapped in (same name) or a new column (--rename-to)."
    )
    phases_help: ClassVar[str] = (
        "In place (varchar longer or to text, numeric precision at the same scale, timestamp to "
        "timestamptz): contract only, one ALTER COLUMN TYPE under lock_timeout.\n\n"
        "Same name (int to bigint, numeric widening, ...): expand adds a shadow column of the new type "
        "kept in step by a trigger; backfill converts existing rows; contract (after old code is gone) "
        "swaps the shadow in under the old name in one short transaction.\n\n"
        "--rename-to NEW: expand adds NEW kept in step both ways (--using, --down); backfill converts; "
        "contract drops the old column. Unconvertible values never fail a write; they hold the contract."
    )

    column_name: str = param("Column to change.", metavar="COLUMN")
    type: str = param('The new type, as PostgreSQL spells it (quote it: "varchar(200)").')
    using: str | None = param(
        "SQL computing the new value from the column (default: COLUMN::TYPE).", "--using", default=None
    )
    down: str | None = param(
        "SQL computing the old value from the new one (--rename-to; default: a cast back).",
        "--down",
        default=None,
    )
    rename_to: str | None = param(
        "Put the new type under this new name instead.", "--rename-to", default=None
    )
    assume_injective: bool = param(
        "Trust that --using maps distinct values to distinct values (a unique column stays unique).",
        "--assume-injective",
        default=False,
    )

    def check_input(self) -> None:
        super().check_input()
        checks.identifier(self.column_name, "column")
        if self.rename_to is not None:
            checks.identifier(self.rename_to, "new column")
            if self.rename_to == self.column_name:
                raise BadInput("--rename-to names the column itself; leave it out to keep the name")
        types.parse(self.type)
        for option, sql in (("--using", self.using), ("--down", self.down)):
            if sql is not None:
                expression(sql, option)
        if self.down is not None and self.rename_to is None:
            raise BadInput(
                "--down only applies with --rename-to (the same-name swap never writes the old column)"
            )

    def column(self) -> str:
        return self.column_name

    def id_parts(self) -> tuple[str, ...]:
        return (self.column_name, self.rename_to or self.type)

    def validate(self, facts: TableFacts) -> None:
        super().validate(facts)
        col = facts.col
        where = self.where(facts, col.name)
        old, new = types.parse(col.type_sql), types.parse(self.type)
        if old.same(new):
            raise BadInput(f"column {where} already has type {col.type_sql}")
        if col.generated:
            raise BadInput(f"column {where} is a generated column; change its expression instead")
        dependents: dict[str, list[str]] = {}
        for kind, name in facts.dependents:
            dependents.setdefault(kind, []).append(name)
        if "generated column" in dependents:
            raise BadInput(
                f"generated column(s) {', '.join(dependents['generated column'])} of {self.where(facts)} "
                f"depend on {where}"
            )
        self.dependents(facts)  # views and policies are dropped and re-created around the change
        if col.name in facts.primary_key:
            raise BadInput(f"column {where} is part of the primary key; key columns are not supported yet")
        if not _in_place(self, facts, old, new):  # a shadow column would need a copy of the constraint
            checks.no_exclusion_constraint(facts, "change-type")
        if facts.referenced_by:
            fks = ", ".join(f"{fk.name} on {fk.table}" for fk in facts.referenced_by)
            raise BadInput(
                f"column {where} is referenced by foreign key(s) {fks}; they would need the new type too"
            )
        # What keeps the column from changing type (ALTER TYPE) or from being dropped (the swap and
        # --rename-to drop the old column); a trigger function reading NEW.column only breaks once
        # the name is gone.
        why = {
            "rule": "used by rule(s)",
            "trigger": "used by trigger(s) (UPDATE OF or WHEN)",
            "publication": "in the column list of publication(s)",
            "object": "needed by",
        }
        if self.rename_to is not None:
            why["trigger function"] = "read as NEW/OLD.column by trigger function(s)"
        for kind, what in why.items():
            if kind in dependents:
                raise BadInput(
                    f"column {where} is {what} {', '.join(dependents[kind])}; change-type cannot carry them over "
                    "to the new column: change or drop them first"
                )
        for option, sql in (("--using", self.using), ("--down", self.down)):
            if sql is not None:
                others = referenced_columns(sql) - {col.name}
                if others:
                    raise BadInput(
                        f"{option} may only use {col.name!r}; it references {', '.join(sorted(others))}"
                    )
        if self.rename_to is not None:
            self.require_new_column(facts, self.rename_to)
        elif not types.same_name(old, new) and not types.in_place(old, new, facts.server_version_num):
            # --using changes nothing here: new code maps the new type from the start.
            raise BadInput(
                f"{col.type_sql} -> {new.text} is not a change old and new code can both read and write under one "
                f"name (new code's queries would fail against the old column before the swap); use --rename-to NEW"
            )
        unique = any(ix.unique for ix in facts.indexes)
        if (
            unique
            and not self.assume_injective
            and (self.using is not None or not types.one_to_one(old, new))
        ):
            conversion = "--using" if self.using is not None else f"the cast {col.type_sql} -> {new.text}"
            raise BadInput(
                f"column {where} is unique and {conversion} may map two values to one; "
                "pass --assume-injective if it cannot"
            )

    def dependents(self, facts: TableFacts) -> tuple[Dependents, Dependents]:
        """The views and policies reading the column as they are, and as the contract re-creates
        them: the same text (it now reads the new type), or reading --rename-to's column."""
        found = carried(facts, self.where(facts, self.column_name), what="change-type")
        if self.rename_to is None or not found:
            return found, found
        return found, found.renamed(self.column_name, self.rename_to)

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        self.validate(facts)
        return _Planner(self, facts).plan()


def expression(sql: str, option: str) -> object:
    """One SQL expression, parsed by PostgreSQL's parser; BadInput otherwise."""
    import pglast

    try:
        statements = pglast.parse_sql(f"SELECT {sql}")
    except pglast.parser.ParseError as exc:
        raise BadInput(f"{option} is not one SQL expression: {exc}") from None
    targets = getattr(statements[0].stmt, "targetList", None) if len(statements) == 1 else None
    stmt = statements[0].stmt if len(statements) == 1 else None
    if (
        not targets
        or len(targets) != 1
        or getattr(stmt, "fromClause", None)
        or getattr(stmt, "whereClause", None)
    ):
        raise BadInput(f"{option} is not one SQL expression")
    return targets[0].val


def referenced_columns(sql: str) -> set[str]:
    """Names of the columns an expression reads (one-part references)."""
    import pglast
    from pglast import ast
    from pglast.visitors import Visitor

    found: set[str] = set()

    class Columns(Visitor):
        def visit_ColumnRef(self, ancestors: object, node: ast.ColumnRef) -> None:
            fields = [getattr(f, "sval", None) for f in node.fields or ()]
            if len(fields) == 1 and isinstance(fields[0], str):
                found.add(fields[0])

    Columns()(pglast.parse_sql(f"SELECT {sql}"))
    return found


def _dollar(body: str, tag: str = "ecm") -> str:
    """A dollar quote for ``body``: ``$ecm$``, or ``$ecm1$``… when names or --using hold ``$ecm$``."""
    chosen, n = tag, 0
    while f"${chosen}$" in body:
        n += 1
        chosen = f"{tag}{n}"
    return f"${chosen}$"


#: Column types a sequence can have, by size.
_INTEGER_SIZES = {"int2": 2, "int4": 4, "int8": 8}


def _cast(
    sql: str, source: types.PgType, target: types.PgType, target_sql: str, *, exact: bool = True
) -> str:
    """``sql`` (of type ``source``) as ``target``: a cast, except between timestamp and timestamptz,
    where the wall clock is read as UTC, as the in-place change reads it, and not in the TimeZone
    of whichever session writes the row."""
    if not (source.array or target.array) and {source.base, target.base} == {"timestamp", "timestamptz"}:
        return f"({sql} AT TIME ZONE 'UTC')::{target_sql}"
    if exact and _truncates(target):
        # An explicit cast to varchar(n) / char(n) cuts a longer value short without a word; cast to
        # text and let the conversion function's typed variable take it: an assignment checks the
        # length and raises, so the value counts as not convertible instead of changing.
        return f"{sql}::text{'[]' if target.array else ''}"
    return f"{sql}::{target_sql}"


def _truncates(target: types.PgType) -> bool:
    """An explicit cast to this type shortens a longer value silently (PostgreSQL's rule for length limits)."""
    return target.builtin and target.base in ("varchar", "bpchar") and bool(target.mods)


def _scans_in_place(facts: TableFacts, new: types.PgType) -> bool:
    """``ALTER COLUMN TYPE`` of an in-place pair still reads the whole table under ACCESS EXCLUSIVE
    (measured): it checks the column's CHECK constraints again and rebuilds its expression and
    partial indexes, and every index of a timestamp column made timestamptz (another operator class).
    Such a change goes through a shadow column instead."""
    if facts.checks:
        return True
    return any(ix.partial or ix.expression or new.base == "timestamptz" for ix in facts.indexes)


def _in_place(op: ChangeType, facts: TableFacts, old: types.PgType, new: types.PgType) -> bool:
    """Whether the plan is one ``ALTER COLUMN TYPE`` that changes only the catalog."""
    return (
        op.rename_to is None
        and op.using is None
        and types.in_place(old, new, facts.server_version_num)
        and not _scans_in_place(facts, new)
    )


def _conversion(sql: str, column: str, param_name: str) -> str:
    """The expression with the column replaced by the function's parameter."""
    from ...sql.rewrite import rewrite_column

    return rewrite_column(sql, column, param_name)


class _Planner(Builder):
    def __init__(self, op: ChangeType, facts: TableFacts) -> None:
        plan_id = op.id_for(facts)
        super().__init__(facts, plan_id)
        self.op = op
        self.col = facts.col
        self.c = op.column_name
        self.old_type = types.parse(self.col.type_sql)
        self.new_type = types.parse(op.type)
        self.new_sql = op.type.strip()
        self.in_place = _in_place(op, facts, self.old_type, self.new_type)
        self.shadow = op.rename_to or names.fit(f"{self.c}_{names.PREFIX}_new", key=plan_id + ":shadow")
        self.function = names.function_name(plan_id)
        self.trigger_name = names.trigger_name(plan_id)
        self.up_fn = names.fit(f"{names.PREFIX}_{plan_id}_up", key=plan_id + ":up")
        self.down_fn = names.fit(f"{names.PREFIX}_{plan_id}_down", key=plan_id + ":down")
        self.fails_fn = names.fit(f"{names.PREFIX}_{plan_id}_fails", key=plan_id + ":fails")
        self.nn = names.not_null_check(plan_id)
        self.fallible = op.using is not None or types.can_fail(self.old_type, self.new_type)
        self.down_fallible = op.down is not None or types.can_fail(self.new_type, self.old_type)
        self.indexes = [ix for ix in facts.indexes if not ix.primary]
        self.index_names = {
            ix.name: names.derived(ix.name, self.c, self.shadow, plan_id) for ix in self.indexes
        }
        self.checks = [
            c for c in facts.checks if c.expression.strip("() ").lower() != f"{q(self.c)} is not null".lower()
        ]
        self.check_names = {c.name: names.derived(c.name, self.c, self.shadow, plan_id) for c in self.checks}
        self.fk_names = {
            fk.name: names.derived(fk.name, self.c, self.shadow, plan_id) for fk in facts.foreign_keys
        }
        self.original, self.moved = op.dependents(facts)

    def around(self, statement: str, deps: Dependents) -> str:
        """``statement`` with the dependents dropped before and re-created after, in its transaction."""
        if not deps:
            return statement
        return one_transaction([*deps.drops(), statement, *deps.creates()])

    # -- conversions ----------------------------------------------------------------------
    def up_sql(self) -> str:
        return self.op.using or _cast(q(self.c), self.old_type, self.new_type, self.new_sql)

    def down_sql(self) -> str:
        # Not exact: the old column is old code's view until the contract drops it; a value too long
        # for it is shown shortened rather than as NULL (which a NOT NULL old column would refuse,
        # failing new code's write). The new column keeps the whole value.
        return self.op.down or _cast(
            q(self.shadow), self.new_type, self.old_type, self.col.type_sql, exact=False
        )

    def conversion_function(
        self, name: str, arg_type: str, result: str, body_sql: str, fallible: bool
    ) -> Step:
        """``name(v)``: the conversion; when it can fail, a failure is NULL (an EXCEPTION block around
        the conversion alone, so no write ever runs inside it)."""
        fn = qualified(self.s, name)
        if fallible:
            # Assigned to a variable of the full type (length limits included) before it is returned:
            # a function's declared result drops them, an assignment enforces them.
            body = (
                f"DECLARE\n    r {result};\nBEGIN\n    r := {body_sql};\n    RETURN r;\n"
                "EXCEPTION WHEN others THEN\n    RETURN NULL;\nEND"
            )
            d = _dollar(body)
            sql = f"CREATE OR REPLACE FUNCTION {fn}(v {arg_type}) RETURNS {result}\nLANGUAGE plpgsql STABLE AS {d}\n{body}\n{d}"
        else:
            d = _dollar(body_sql)
            sql = f"CREATE OR REPLACE FUNCTION {fn}(v {arg_type}) RETURNS {result}\nLANGUAGE sql IMMUTABLE AS {d} SELECT {body_sql} {d}"
        return Step(f"create conversion function {name}", "ddl", sql, lock="none")

    def fails_function(self) -> Step:
        """``fails(v)``: whether the conversion raises for ``v``, which tells a value that does not
        convert from one that converts to NULL on purpose (``--using "nullif(…)"``)."""
        body = (
            f"DECLARE\n    r {self.new_sql};\nBEGIN\n    r := {_conversion(self.up_sql(), self.c, 'v')};\n"
            "    RETURN false;\nEXCEPTION WHEN others THEN\n    RETURN true;\nEND"
        )
        d = _dollar(body)
        sql = (
            f"CREATE OR REPLACE FUNCTION {qualified(self.s, self.fails_fn)}(v {self.col.type_sql}) RETURNS boolean\n"
            f"LANGUAGE plpgsql STABLE AS {d}\n{body}\n{d}"
        )
        return Step(f"create conversion check {self.fails_fn}", "ddl", sql, lock="none")

    def up_call(self, arg: str) -> str:
        return f"{qualified(self.s, self.up_fn)}({arg})"

    def down_call(self, arg: str) -> str:
        return f"{qualified(self.s, self.down_fn)}({arg})"

    def functions(self) -> list[Step]:
        steps = [
            self.conversion_function(
                self.up_fn,
                self.col.type_sql,
                self.new_sql,
                _conversion(self.up_sql(), self.c, "v"),
                self.fallible,
            )
        ]
        if self.fallible:
            steps.append(self.fails_function())
        if self.op.rename_to:
            steps.append(
                self.conversion_function(
                    self.down_fn,
                    self.new_sql,
                    self.col.type_sql,
                    _conversion(self.down_sql(), self.shadow, "v"),
                    self.down_fallible,
                )
            )
        return steps

    def drop_functions(self) -> list[Step]:
        out = []
        for name, arg in (
            (self.up_fn, self.col.type_sql),
            (self.fails_fn, self.col.type_sql),
            (self.down_fn, self.new_sql),
        ):
            if (name == self.down_fn and not self.op.rename_to) or (
                name == self.fails_fn and not self.fallible
            ):
                continue
            out.append(
                Step(
                    f"drop conversion function {name}",
                    "ddl",
                    f"DROP FUNCTION IF EXISTS {qualified(self.s, name)}({arg})",
                    lock="none",
                    squawk_ignore=(
                        ("ban-drop-function", "the plan's own conversion function, no longer needed"),
                    ),
                )
            )
        return out

    def trigger_function(self) -> str:
        o, n = q(self.c), q(self.shadow)
        fn = qualified(self.s, self.function)
        if not self.op.rename_to:
            # Before the swap every writer writes the column itself: the shadow only follows.
            body = f"    NEW.{n} := {self.up_call(f'NEW.{o}')};\n"
        else:
            up, down = self.up_call(f"NEW.{o}"), self.down_call(f"NEW.{n}")
            body = (
                "    IF TG_OP = 'INSERT' THEN\n"
                f"        IF NEW.{n} IS NULL THEN\n            NEW.{n} := {up};\n"
                f"        ELSE\n            NEW.{o} := {down};\n        END IF;\n"
                f"    ELSIF NEW.{o} IS DISTINCT FROM OLD.{o} AND NEW.{n} IS NOT DISTINCT FROM OLD.{n} THEN\n"
                f"        NEW.{n} := {up};\n"
                f"    ELSIF NEW.{n} IS DISTINCT FROM OLD.{n} THEN\n        NEW.{o} := {down};\n"
                # Neither written: convert a row the backfill has not reached, never recompute the new
                # column from the old (it may hold what the old type cannot: recomputing would lose it).
                f"    ELSIF NEW.{n} IS NULL THEN\n        NEW.{n} := {up};\n    END IF;\n"
            )
        body = f"BEGIN\n{body}    RETURN NEW;\nEND"
        d = _dollar(body)
        return f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger\nLANGUAGE plpgsql AS {d}\n{body}\n{d}"

    # -- phases ---------------------------------------------------------------------------
    def expand(self) -> Phase:
        up: list[Step] = [
            self.add_column(
                self.shadow, self.new_sql, f"add column {self.shadow} ({self.new_sql})", copied=False
            ),
            *self.functions(),
            *self.trigger(self.function, self.trigger_name, self.trigger_function()),
        ]
        if not self.fallible:
            # Its indexes are built by the backfill once every row is converted (indexes_after_copy).
            up += self.shadow_constraints(indexes=False)
        if self.op.rename_to:
            up += self.comment(self.shadow, self.col.comment) + self.grants(self.col, self.shadow)
        down: list[Step] = [self.guard("expand-downgrade")]
        down += [
            self.drop_constraint(self.s, self.table, n, foreign_key=True) for n in self.fk_names.values()
        ]
        down += [self.drop_index(n) for n in self.index_names.values()]
        down += self.drop_trigger(self.function, self.trigger_name)
        down.append(
            self.drop_column(self.shadow, "rolling back expand: the new column only held conversions")
        )
        down += self.drop_functions()
        target = self.op.rename_to or f"a shadow column {self.shadow}"
        return Phase(
            "expand",
            f"Add {target} of type {self.new_sql} beside {self.c} on {self.table_sql}, kept in step by a trigger.",
            tuple(up),
            tuple(down),
            before="Nothing: old code keeps working.",
            after=(
                f"New code that maps {self.rename_to_or_column()} as {self.new_sql} may deploy once the backfill "
                "has run."
            ),
            rollback=f"Downgrade this revision: drops {self.shadow}, the trigger and the conversion functions.",
        )

    def rename_to_or_column(self) -> str:
        return self.op.rename_to or self.c

    def indexes_after_copy(self) -> tuple[dict[str, Any], ...]:
        """The shadow's copies of the column's indexes, built CONCURRENTLY by the backfill once
        every row is converted, when the conversion cannot fail: it is then one-to-one (a
        widening), so the column's own unique indexes enforce what the shadow's will, and the
        batches maintain no index row by row. A fallible conversion builds them in the contract."""
        if self.fallible:
            return ()
        from ...sql.rewrite import rewrite_index_definition

        return tuple(
            self.index_after_copy(
                self.index_names[ix.name],
                rewrite_index_definition(
                    ix.definition, self.c, self.shadow, self.index_names[ix.name], concurrently=True
                ),
                # schema_ready reports a missing one to code that maps the new name; under the
                # column's own name old code maps it too, and must stay ready.
                [self.op.rename_to] if self.op.rename_to else [],
            )
            for ix in self.indexes
        )

    def shadow_constraints(self, *, indexes: bool = True) -> list[Step]:
        """NOT NULL (as a NOT VALID check), checks, indexes and foreign keys of the column, on the shadow.

        At expand only when the conversion cannot fail (the shadow then always holds a value
        old code's write produced), the indexes then at the end of the backfill; otherwise in
        the contract, once no unconvertible value is left.
        """
        steps: list[Step] = []
        if not self.col.nullable:
            steps.append(self.add_not_null_check(self.shadow, self.nn))
        from ...sql.rewrite import rewrite_column, rewrite_index_definition

        for chk in self.checks:
            steps.append(
                self.add_check(
                    self.check_names[chk.name], rewrite_column(chk.expression, self.c, self.shadow)
                )
            )
        for ix in self.indexes if indexes else ():
            name = self.index_names[ix.name]
            steps.append(
                self.create_index(
                    name,
                    rewrite_index_definition(ix.definition, self.c, self.shadow, name, concurrently=True),
                )
            )
        for fk in self.f.foreign_keys:
            cols = [self.shadow if c == self.c else c for c in fk.columns]
            steps.append(
                self.add_foreign_key(
                    fk,
                    self.fk_names[fk.name],
                    cols,
                    fk.ref_columns,
                    f"add foreign key {self.fk_names[fk.name]} (NOT VALID)",
                )
            )
        return steps

    def backfill_phase(self) -> Phase:
        return Phase(
            "backfill",
            f"Convert {self.c} into {self.shadow} for rows written before the trigger existed"
            + (
                f", then build {self.shadow}'s indexes CONCURRENTLY ({', '.join(self.index_names.values())})."
                if self.indexes_after_copy()
                else "."
            ),
            (self.backfill(),),
            (),
            before="The expand revision of this plan.",
            after="Every row has its converted value; unconvertible ones (if any) are listed by `ecm verify` and hold the contract.",
            rollback="Nothing to undo.",
        )

    def validations(self) -> list[Step]:
        steps: list[Step] = []
        if not self.col.nullable:
            steps.append(self.validate_here(self.nn))
        for chk in self.checks:
            if chk.valid:
                steps.append(self.validate_here(self.check_names[chk.name], "SHARE UPDATE EXCLUSIVE"))
        for fk in self.f.foreign_keys:
            if fk.valid:
                steps.append(
                    self.validate(
                        self.s,
                        self.table,
                        self.fk_names[fk.name],
                        "SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the referenced",
                    )
                )
        return steps

    def contract(self) -> Phase:
        up: list[Step] = [self.guard("contract-guard")]
        if self.fallible:
            up += self.shadow_constraints()
        up += self.validations()
        if self.op.rename_to:
            up += self.rename_to_contract()
        else:
            up.append(self.swap_step())
            up.append(self.drop_trigger(self.function, self.trigger_name)[1])  # the swap dropped the trigger
            up += self.drop_functions()
        return Phase(
            "contract",
            (
                f"Drop {self.c}; {self.op.rename_to} takes over."
                if self.op.rename_to
                else f"Swap {self.shadow} in as {self.c} ({self.new_sql}) in one short transaction; drop the old column."
            ),
            tuple(up),
            tuple(self.contract_downgrade()),
            before=(
                f"Every application instance that maps {self.c} as {self.col.type_sql} must be gone (the guard checks), "
                "and the backfill complete with no unconvertible value."
            ),
            after=f"Only code that maps {self.rename_to_or_column()} as {self.new_sql}.",
            rollback=(
                f"Downgrade this contract revision: brings {self.c} back as {self.col.type_sql}, converted back from the new "
                "values, with the trigger."
            ),
        )

    def swap_step(self) -> Step:
        """Drop the trigger, swap the columns, carry NOT NULL, default, identity, sequence, indexes, constraints,
        grants and comment: one statement, so one short transaction under lock_timeout."""
        t, c, sh = self.table_sql, q(self.c), q(self.shadow)
        retired = names.fit(f"{self.c}_{names.PREFIX}_old", key=self.plan_id + ":old")
        lines = [
            f"DROP TRIGGER IF EXISTS {q(self.trigger_name)} ON {t};",
            f"ALTER TABLE {t} RENAME COLUMN {c} TO {q(retired)};",
            f"ALTER TABLE {t} RENAME COLUMN {sh} TO {c};",
        ]
        col = self.col
        if not col.nullable:
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL;")
            lines.append(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {q(self.nn)};")
        if col.default is not None and not col.identity:
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {q(retired)} DROP DEFAULT;")
            lines.append(f"ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {col.default};")
        if col.owned_sequence and not col.identity:  # an identity's sequence goes with DROP IDENTITY
            seq = col.owned_sequence
            lines.append(f"ALTER SEQUENCE {seq} OWNED BY {t}.{c};")
            size = _INTEGER_SIZES.get(self.new_type.base)
            if size and not self.new_type.array:
                # A serial's sequence is as wide as the column was: a bigint column fed by an integer
                # sequence still stops at 2^31 - 1. Widened with the column, never narrowed.
                alter = literal(f"ALTER SEQUENCE {seq} AS {self.new_sql}")
                lines.append(
                    f"EXECUTE (SELECT CASE WHEN t.typlen < {size} THEN {alter} ELSE 'SELECT' END "
                    "FROM pg_sequence s JOIN pg_type t ON t.oid = s.seqtypid "
                    f"WHERE s.seqrelid = {literal(seq)}::regclass);"
                )
        if col.identity:
            # The identity moves to the new column and continues where the old sequence stood.
            kind = "ALWAYS" if col.identity == "a" else "BY DEFAULT"
            lines.insert(
                0,
                f"EXECUTE 'SELECT nextval(' || quote_literal(pg_get_serial_sequence({literal(t)}, {literal(self.c)})) "
                "|| ')' INTO next_value;",
            )
            lines.insert(2, f"ALTER TABLE {t} ALTER COLUMN {c} DROP IDENTITY IF EXISTS;")
            lines.append(
                "EXECUTE format('ALTER TABLE %s ALTER COLUMN %I ADD GENERATED "
                f"{kind} AS IDENTITY (START WITH %s)', {literal(t)}, {literal(self.c)}, next_value);"
            )
        lines.append(f"ALTER TABLE {t} DROP COLUMN {q(retired)};")
        for ix in self.indexes:
            lines.append(
                f"ALTER INDEX IF EXISTS {qualified(self.s, self.index_names[ix.name])} RENAME TO {q(ix.name)};"
            )
            if ix.constraint and ix.unique:
                lines.append(
                    f"ALTER TABLE {t} ADD CONSTRAINT {q(ix.constraint)} UNIQUE USING INDEX {q(ix.name)};"
                )
        for chk in self.checks:
            lines.append(
                f"ALTER TABLE {t} RENAME CONSTRAINT {q(self.check_names[chk.name])} TO {q(chk.name)};"
            )
        for fk in self.f.foreign_keys:
            lines.append(f"ALTER TABLE {t} RENAME CONSTRAINT {q(self.fk_names[fk.name])} TO {q(fk.name)};")
        for g in col.grants:
            grantee = "PUBLIC" if g.grantee.upper() == "PUBLIC" else q(g.grantee)
            option = " WITH GRANT OPTION" if g.grantable else ""
            lines.append(f"GRANT {g.privilege} ({c}) ON {t} TO {grantee}{option};")
        if col.comment is not None:
            lines.append(f"COMMENT ON COLUMN {t}.{c} IS {literal(col.comment)};")
        # Views and policies reading the column go first and come back last, over the new type.
        lines = [f"{s};" for s in self.original.drops()] + lines + [f"{s};" for s in self.original.creates()]
        body = "\n".join(
            "    " + (line if line.startswith("EXECUTE") else f"EXECUTE {literal(line)};") for line in lines
        )
        body = f"DECLARE\n    next_value bigint;\nBEGIN\n{body}\nEND"
        d = _dollar(body, "ecm_swap")
        sql = f"DO {d}\n{body}\n{d}"
        done = (
            "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
            f"{literal(t)}::regclass AND attname = {literal(self.shadow)} AND NOT attisdropped)"
        )
        return Step(
            f"swap {self.shadow} in as {self.c}",
            "swap",
            sql,
            lock="ACCESS EXCLUSIVE, brief (catalog changes only: the shadow is filled and indexed)",
            skip_if=done,
            squawk_ignore=(("ban-drop-column", "the contract's deliberate drop of the retired old column"),),
        )

    def rename_to_contract(self) -> list[Step]:
        col = self.col
        steps: list[Step] = []
        if not col.nullable:
            steps.append(self.set_not_null(self.shadow))
            steps.append(self.drop_constraint(self.s, self.table, self.nn))
        for ix in self.indexes:
            if ix.constraint and ix.unique:
                name = self.index_names[ix.name]
                steps.append(self.unique_using_index(name, name))
        if not col.nullable:
            steps.append(
                self.drop_not_null(
                    self.c, reason="the old column loses NOT NULL only on its way out (trigger dropped next)"
                )
            )
        if self.moved:
            # While the trigger still keeps both columns in step (see rename-column).
            steps.append(
                step(
                    f"re-create views and policies on {self.shadow}: {self.moved.names()}",
                    [*self.moved.drops(), *self.moved.creates()],
                )
            )
        steps += self.drop_trigger(self.function, self.trigger_name)
        if col.default is not None:
            steps.append(
                self.set_default(self.shadow, f"({col.default})::{self.new_sql}", f"default of {self.shadow}")
            )
        steps.append(self.drop_column(self.c, "the contract's deliberate drop, guarded by live-code checks"))
        steps += self.drop_functions()
        return steps

    def contract_downgrade(self) -> list[Step]:
        """Back to the old type: re-create the old shape beside the new one and fill it converting back."""
        steps: list[Step] = [*self.functions()]
        if self.op.rename_to:
            steps.append(self.add_column(self.c, self.type_of(self.col), f"re-add column {self.c}"))
            steps += self.trigger(self.function, self.trigger_name, self.trigger_function())
            steps.append(self.backfill("reverse backfill"))
            if self.original:
                steps.append(
                    step(
                        f"restore views and policies on {self.c}: {self.original.names()}",
                        [*self.moved.drops(), *self.original.creates()],
                    )
                )
            if self.col.default is not None:
                steps.append(self.drop_default(self.shadow))
                steps.append(self.set_default(self.c, self.col.default, f"restore default of {self.c}"))
            if not self.col.nullable:
                steps += self.not_null_via_check(self.c, self.nn)
            return steps
        # Same name: the column goes back to the old type (a rewrite under ACCESS EXCLUSIVE: a
        # rollback, not an online change), then the expand's shadow state is rebuilt, so the plan
        # is backfilled again exactly as before its contract.
        t = self.table_sql
        steps.append(
            Step(
                f"convert {self.c} back to {self.col.type_sql}",
                "swap",
                self.around(
                    f"ALTER TABLE {t} ALTER COLUMN {q(self.c)} TYPE {self.type_of(self.col)} "
                    f"USING {_cast(q(self.c), self.new_type, self.old_type, self.col.type_sql)}",
                    self.original,
                ),
                lock="ACCESS EXCLUSIVE for a table rewrite: a rollback, not an online change",
                skip_if=(
                    "SELECT format_type(atttypid, atttypmod) = "
                    f"{literal(self.col.type_sql)} FROM pg_attribute WHERE attrelid = {literal(t)}::regclass "
                    f"AND attname = {literal(self.c)}"
                ),
            )
        )
        steps.append(
            self.add_column(self.shadow, self.new_sql, f"re-add shadow column {self.shadow}", copied=False)
        )
        steps += self.trigger(self.function, self.trigger_name, self.trigger_function())
        steps.append(self.backfill("backfill the shadow again"))
        if not self.fallible:
            steps += self.shadow_constraints()
        return steps

    # -- in place -----------------------------------------------------------------------------
    def in_place_contract(self) -> Phase:
        t, c = self.table_sql, q(self.c)
        pin = self.new_type.base == "timestamptz"
        alter = f"ALTER TABLE {t} ALTER COLUMN {c} TYPE {self.new_sql}"
        back = f"ALTER TABLE {t} ALTER COLUMN {c} TYPE {self.type_of(self.col)}"
        if pin:
            # The result depends on TimeZone: pinned to UTC in the same transaction (no rewrite then).
            alter, back = (
                f"DO {_dollar(sql)} BEGIN PERFORM set_config('TimeZone', 'UTC', true); EXECUTE {literal(sql)}; "
                f"END {_dollar(sql)}"
                for sql in (alter, back)
            )
        done = (
            "SELECT format_type(atttypid, atttypmod) = format_type("
            f"{literal(self.new_sql)}::regtype, NULL) OR format_type(atttypid, atttypmod) = {literal(self.new_sql)} "
            f"FROM pg_attribute WHERE attrelid = {literal(t)}::regclass AND attname = {literal(self.c)}"
        )
        up = (
            self.guard("contract-guard"),
            Step(
                f"change type of {self.c} to {self.new_sql} in place",
                "swap",
                self.around(alter, self.original),
                lock="ACCESS EXCLUSIVE, brief (catalog only on this server: no rewrite, no scan)",
                skip_if=done,
            ),
        )
        down = (
            Step(
                f"change type of {self.c} back to {self.col.type_sql}",
                "swap",
                self.around(back, self.original),
                lock="ACCESS EXCLUSIVE; narrowing back scans the table (and fails if a value no longer fits)",
            ),
        )
        return Phase(
            "contract",
            f"Change {self.c} to {self.new_sql} in place (catalog only).",
            up,
            down,
            before=f"Every application instance that maps {self.c} as {self.col.type_sql} must be gone (the guard checks).",
            after=f"Code that maps {self.c} as {self.new_sql}.",
            rollback=f"Downgrade this contract revision: changes {self.c} back to {self.col.type_sql}.",
        )

    # -- the plan ---------------------------------------------------------------------------------
    def plan(self) -> Plan:
        key = f"{self.s}.{self.table}"
        retype = {
            "table": key,
            "column": self.c,
            "kind": "retype",
            "old_type": self.col.type_sql,
            "new_type": self.new_sql,
        }
        notes = []
        if not self.op.rename_to:
            notes.append(
                f"{self.c} changes its result type under the same name, which breaks statements running code "
                "prepared before (psycopg prepares after 5 executions): the contract announces the swap and waits "
                "until every live instance that maps the table confirmed, from its LiveReporter, that its engine "
                "stopped preparing; pass the application's Engine to LiveReporter (docs/operations/change-type.md)"
            )
        spec = {
            "operation": self.op.kind,
            "schema": self.s,
            "table": self.table,
            "column": self.c,
            "type": self.new_sql,
            "using": self.op.using,
            "down": self.op.down,
            "rename_to": self.op.rename_to,
            "in_place": self.in_place,
            "facts": self.f.to_json(),
        }
        title = f"change type of {self.table_sql}.{q(self.c)} to {self.new_sql}" + (
            f" as {q(self.op.rename_to)}" if self.op.rename_to else ""
        )
        if self.in_place:
            return Plan(
                plan_id=self.plan_id,
                operation=self.op.kind,
                schema=self.s,
                table=self.table,
                title=title + " (in place)",
                phases=(self.in_place_contract(),),
                touches={key: [self.c]},
                breaks=(retype,),
                spec=spec,
                notes=tuple(notes),
            )
        verify = (
            f"{q(self.shadow)} IS DISTINCT FROM {self.up_call(q(self.c))} "
            f"OR ({q(self.c)} IS NOT NULL AND {q(self.shadow)} IS NULL)"
        )
        label, fix = None, None
        if self.fallible:
            # A NULL the conversion returned is a value (nullif …); a conversion that raised is not.
            # The new column of a NOT NULL one will be NOT NULL too: there, NULL is no value either.
            null = (
                f"{q(self.shadow)} IS NULL"
                if not self.col.nullable
                else f"({q(self.shadow)} IS NULL AND {qualified(self.s, self.fails_fn)}({q(self.c)}))"
            )
            verify = f"{q(self.shadow)} IS DISTINCT FROM {self.up_call(q(self.c))} OR {null}"
            target = self.new_sql + ("" if self.col.nullable else " NOT NULL")
            label = f"hold a value of {q(self.c)} that does not convert to {target}"
            fix = (
                "update them to values that convert (any UPDATE of the row converts it again), "
                "then run the contract again"
            )
        forward = self.backfill_spec(
            self.plan_id,
            set_sql=f"{q(self.shadow)} = {self.up_call(q(self.c))}",
            pending_sql=f"{q(self.shadow)} IS DISTINCT FROM {self.up_call(q(self.c))}",
            mismatch_sql=verify,
            mismatch_label=label,
            mismatch_fix=fix,
        )
        forward = replace(forward, indexes=self.indexes_after_copy())
        # Rolling back the same-name contract re-creates the shadow and fills it again: a spec of
        # its own, so the first backfill's completed checkpoints do not make it a no-op.
        reverse = self.backfill_spec(
            self.plan_id + ":rollback",
            set_sql=f"{q(self.shadow)} = {self.up_call(q(self.c))}",
            pending_sql=f"{q(self.shadow)} IS DISTINCT FROM {self.up_call(q(self.c))}",
            mismatch_sql=verify,
        ).to_json()
        if self.op.rename_to:
            reverse = self.backfill_spec(
                self.plan_id + ":reverse",
                set_sql=f"{q(self.c)} = {self.down_call(q(self.shadow))}",
                pending_sql=f"{q(self.c)} IS DISTINCT FROM {self.down_call(q(self.shadow))}",
            ).to_json()
        creates = [
            self.function,
            self.trigger_name,
            self.up_fn,
            *([self.fails_fn] if self.fallible else []),
            *self.index_names.values(),
            *self.check_names.values(),
            *self.fk_names.values(),
        ]
        if self.op.rename_to:
            creates.append(self.down_fn)
        if not self.col.nullable:
            creates.append(self.nn)
        return Plan(
            plan_id=self.plan_id,
            operation=self.op.kind,
            schema=self.s,
            table=self.table,
            title=title,
            phases=(self.expand(), self.backfill_phase(), self.contract()),
            removes={key: [self.c]} if self.op.rename_to else {},
            adds={key: [self.shadow]} if self.op.rename_to else {},
            touches={key: [self.c, self.shadow]},
            creates=tuple(creates),
            breaks=() if self.op.rename_to else (retype,),
            spec=spec,
            backfill=forward.to_json(),
            reverse_backfill=reverse,
            notes=tuple(notes),
        )
