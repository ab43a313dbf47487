"""custom: the escape hatch, the user's own SQL run as expand / backfill / contract.

Pure: the SQL files' text and the server's facts in, a :class:`Plan` out.

The files are read at plan time and frozen into the revisions: a revision must still run
years later, when the files are long gone or changed. Each statement becomes a step of its
own, so it gets what every ecm step gets (lock_timeout and bounded retries, its own short
transaction); statements that must not run under a statement timeout or in a transaction
(``CONCURRENTLY``, ``VALIDATE CONSTRAINT``) are recognised from the parse tree, and a
``BEGIN … COMMIT`` block is kept as one step because the user asked for one transaction.

ecm cannot see what the user's contract takes away from running code, so the user says it
(``--removes``, ``--retypes``) and the guard holds the contract on that. What the plan can
see, it warns about: statements that are unsafe online (:mod:`expandcontract.sql.unsafe`).
Without ``--expand-down`` / ``--contract-down`` ecm cannot know how to undo the SQL, so it
refuses the rollback instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pglast import ast
from pglast.enums.parsenodes import AlterTableType, ObjectType
from pglast.stream import RawStream

from ...errors import BadInput
from ...sql import statements as st
from ...sql import unsafe
from ...sql.quoting import literal, qualified
from .. import checks
from ..facts import TableFacts
from ..model import Phase, Plan, Step
from .base import Operation, param

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,47}")
#: Phases whose SQL the user gives, and the option that gives each.
FILES = {
    "expand": "--expand",
    "backfill": "--backfill",
    "contract": "--contract",
    "expand_down": "--expand-down",
    "contract_down": "--contract-down",
}


@dataclass(frozen=True)
class Source:
    """One SQL file as read at plan time: what it said, and the steps it becomes."""

    option: str
    path: str
    text: str
    units: tuple[st.Unit, ...]

    @property
    def label(self) -> str:
        return f"{self.option} {Path(self.path).name}"


def read_source(option: str, path: str) -> Source:
    """The file, parsed; BadInput (exit 2, nothing changed) when missing, empty or not SQL."""
    file = Path(path)
    if not file.is_file():
        why = "is a directory" if file.is_dir() else "does not exist"
        raise BadInput(f"{option} {path}: the file {why}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{option} {path}: cannot read it as UTF-8 text ({exc.__class__.__name__})") from None
    source = f"{option} {path}"
    return Source(option, path, text, st.units(st.split(text, source), source))


def _table_column(value: str, option: str, *, column_needed: bool) -> tuple[str, str]:
    """``TABLE`` or ``TABLE.COLUMN`` (``"*"``: the table itself)."""
    table, dot, column = value.partition(".")
    if not dot or column == "*":
        if column_needed:
            raise BadInput(f"{option} {value!r}: give TABLE.COLUMN")
        column = "*"
    checks.identifier(table, "table")
    if column != "*":
        checks.identifier(column, "column")
    return table, column


@dataclass(frozen=True)
class Custom(Operation):
    """The operation's parameters: file paths, read by :meth:`sources` at plan time."""

    kind: ClassVar[str] = "custom"
    needs_table: ClassVar[bool] = False
    summary: ClassVar[str] = (
        "Your own SQL as expand / backfill / contract: each statement a lock-safe step, the contract "
        "guarded on what you declare it removes or retypes, unsafe statements warned about."
    )
    phases_help: ClassVar[str] = (
        "expand: the statements of --expand FILE, each its own step under lock_timeout with bounded retries "
        "(CREATE/DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VALIDATE CONSTRAINT and DETACH PARTITION "
        "CONCURRENTLY without timeouts, outside a transaction; a BEGIN … COMMIT block as one step). "
        "backfill: the statements of --backfill FILE, run once each: batch them and make them idempotent "
        "yourself. contract (after code that uses the old shape is gone): the guard, on what --removes and "
        "--retypes declare, then the statements of --contract FILE. The files are frozen into the revisions. "
        "Rolling back runs --expand-down / --contract-down FILE; without them it is refused."
    )

    table: str = field(default="", kw_only=True)  # not a CLI argument: NAME names the change
    change: str = param(
        "Name of the change (lowercase letters, digits, _ and -): the plan id is custom_NAME.", metavar="NAME"
    )
    expand: str = param(
        "SQL file of the expand phase (read now, frozen into the revision).", "--expand", metavar="FILE"
    )
    contract: str = param(
        "SQL file of the contract phase (read now, frozen into the revision).", "--contract"
    )
    backfill: str | None = param(
        "SQL file of the backfill phase: batched, idempotent statements.",
        "--backfill",
        default=None,
        metavar="FILE",
    )
    removes: tuple[str, ...] = param(
        "What the contract removes, TABLE (the table) or TABLE.COLUMN; repeat it. The guard holds the "
        "contract while live code maps it.",
        "--removes",
        default=(),
        metavar="TABLE[.COLUMN]",
    )
    retypes: tuple[str, ...] = param(
        "A column whose type the contract changes, TABLE.COLUMN; repeat it. The guard holds the contract "
        "while live code maps it with another type.",
        "--retypes",
        default=(),
        metavar="TABLE.COLUMN",
    )
    expand_down: str | None = param(
        "SQL file that undoes the expand (without it, rolling the expand back is refused).",
        "--expand-down",
        default=None,
        metavar="FILE",
    )
    contract_down: str | None = param(
        "SQL file that undoes the contract (without it, rolling the contract back is refused).",
        "--contract-down",
        default=None,
        metavar="FILE",
    )

    # -- what the plan flow asks ------------------------------------------------------
    def check_input(self) -> None:
        if not _NAME.fullmatch(self.change):
            raise BadInput(
                f"NAME {self.change!r} must be lowercase letters, digits, _ and - (starting with a letter, at "
                "most 48): it becomes the plan id"
            )
        if self.schema is not None:
            checks.identifier(self.schema, "schema")
        for value in self.removes:
            _table_column(value, "--removes", column_needed=False)
        for value in self.retypes:
            _table_column(value, "--retypes", column_needed=True)
        self.sources()

    def sources(self) -> dict[str, Source]:
        """Every file given, read and parsed, by phase key (``expand_down`` …)."""
        out = {}
        for key, option in FILES.items():
            path = getattr(self, key)
            if path is not None:
                out[key] = read_source(option, path)
        return out

    def base_plan_id(self, table: str) -> str:
        return "custom_" + self.change.replace("-", "_")

    def id_for(self, facts: TableFacts) -> str:
        return self.plan_id or self.base_plan_id("")

    def related(self, facts: TableFacts) -> tuple[tuple[str, str], ...]:
        """Tables removed whole: the flow reads them, so a name that does not exist is exit 2."""
        found = [_table_column(v, "--removes", column_needed=False) for v in self.removes]
        wanted = [t for t, c in found if c == "*"]
        return tuple((facts.schema, t) for t in dict.fromkeys(wanted))

    def related_columns(self, facts: TableFacts) -> tuple[tuple[str, str, str], ...]:
        """Columns removed or retyped: read so they must exist, and so a retype knows its old type."""
        found = [_table_column(v, "--removes", column_needed=False) for v in self.removes]
        found += [_table_column(v, "--retypes", column_needed=True) for v in self.retypes]
        return tuple(dict.fromkeys((facts.schema, t, c) for t, c in found if c != "*"))

    def validate(self, facts: TableFacts) -> None:
        """Nothing about one table to check: the files were read by check_input."""

    def build(self, facts: TableFacts) -> Plan:
        self.check_input()
        return _Planner(self, facts).plan()


# -- reading what the SQL changes ------------------------------------------------------------


def _rel(node: Any, schema: str) -> tuple[str, str]:
    return (str(node.schemaname or schema), str(node.relname)) if isinstance(node, ast.RangeVar) else ("", "")


def _cmds(node: Any) -> list[ast.AlterTableCmd]:
    if not isinstance(node, ast.AlterTableStmt):
        return []
    return [c for c in node.cmds or () if isinstance(c, ast.AlterTableCmd)]


def _nodes(source: Source | None) -> list[st.Statement]:
    return [s for u in source.units for s in u.statements] if source else []


#: ALTER TABLE commands whose ``name`` is a column.
_COLUMN_COMMANDS = frozenset(
    getattr(AlterTableType, n)
    for n in (
        "AT_DropColumn",
        "AT_AlterColumnType",
        "AT_SetNotNull",
        "AT_DropNotNull",
        "AT_ColumnDefault",
        "AT_AddIdentity",
        "AT_SetIdentity",
        "AT_DropIdentity",
        "AT_DropExpression",
        "AT_SetExpression",
    )
    if hasattr(AlterTableType, n)
)


def _key(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def _add(out: dict[str, list[str]], key: str, column: str) -> None:
    cols = out.setdefault(key, [])
    if column not in cols:
        cols.append(column)


def added(source: Source, schema: str) -> dict[str, list[str]]:
    """What the expand adds for code to map: new columns, and new tables (``"*"``)."""
    out: dict[str, list[str]] = {}
    for stmt in _nodes(source):
        node = stmt.node
        if isinstance(node, ast.CreateStmt):
            _add(out, _key(*_rel(getattr(node, "relation", None), schema)), "*")
        for cmd in _cmds(node):
            if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
                _add(out, _key(*_rel(getattr(node, "relation", None), schema)), str(cmd.def_.colname))
    return out


def changed(sources: list[Source], schema: str) -> dict[str, list[str]]:
    """Tables and columns the statements change: two plans in flight on them would conflict."""
    out: dict[str, list[str]] = {}
    for source in sources:
        for stmt in _nodes(source):
            node = stmt.node
            if isinstance(node, ast.RenameStmt) and node.relation is not None:
                key = _key(*_rel(getattr(node, "relation", None), schema))
                if node.renameType == ObjectType.OBJECT_COLUMN:
                    _add(out, key, str(node.subname))
                    _add(out, key, str(node.newname))
                else:
                    _add(out, key, "*")
            elif isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
                for obj in node.objects or ():
                    names = [str(n.sval) for n in obj if isinstance(n, ast.String)]
                    if names:
                        _add(out, _key(names[-2] if len(names) > 1 else schema, names[-1]), "*")
            for cmd in _cmds(node):
                if cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
                    _add(out, _key(*_rel(getattr(node, "relation", None), schema)), str(cmd.def_.colname))
                elif cmd.name and cmd.subtype in _COLUMN_COMMANDS:
                    _add(out, _key(*_rel(getattr(node, "relation", None), schema)), str(cmd.name))
    return out


def new_type(sources: dict[str, Source], schema: str, table: str, column: str) -> str | None:
    """The type the contract gives ``table.column``, read from its SQL: an ALTER COLUMN … TYPE,
    or a column renamed onto it that the plan added with a type."""
    contract = _nodes(sources.get("contract"))
    for stmt in contract:
        if _rel(getattr(stmt.node, "relation", None), schema) != (schema, table):
            continue
        for cmd in _cmds(stmt.node):
            if cmd.subtype == AlterTableType.AT_AlterColumnType and cmd.name == column:
                assert isinstance(cmd.def_, ast.ColumnDef)
                return _type(cmd.def_.typeName)
    for stmt in contract:
        node = stmt.node
        if (
            isinstance(node, ast.RenameStmt)
            and node.renameType == ObjectType.OBJECT_COLUMN
            and node.newname == column
            and _rel(node.relation, schema) == (schema, table)
        ):
            for other in _nodes(sources.get("expand")) + contract:
                if _rel(getattr(other.node, "relation", None), schema) != (schema, table):
                    continue
                for cmd in _cmds(other.node):
                    if (
                        cmd.subtype == AlterTableType.AT_AddColumn
                        and isinstance(cmd.def_, ast.ColumnDef)
                        and cmd.def_.colname == node.subname
                    ):
                        return _type(cmd.def_.typeName)
    return None


def _type(node: ast.TypeName | None) -> str | None:
    return str(RawStream()(node)) if node is not None else None


# -- the plan --------------------------------------------------------------------------------


def _dollar(body: str) -> str:
    tag, n = "$ecm$", 0
    while tag in body:
        n += 1
        tag = f"$ecm{n}$"
    return tag


def refusal(plan_id: str, phase: str, option: str) -> str:
    return (
        f"the {phase} of plan {plan_id} has no downgrade: ecm cannot know how to undo your SQL; write the "
        f"SQL that undoes it and plan again with {option} FILE, or undo it by hand"
    )


class _Planner:
    def __init__(self, op: Custom, facts: TableFacts) -> None:
        self.op = op
        self.s = facts.schema
        self.facts = facts
        self.plan_id = op.id_for(facts)
        self.src = op.sources()
        self.removes: dict[str, list[str]] = {}
        for value in op.removes:
            table, column = _table_column(value, "--removes", column_needed=False)
            _add(self.removes, _key(self.s, table), column)
        self.notes: list[str] = []

    # -- steps -------------------------------------------------------------------------
    def step(self, unit: st.Unit, source: Source, phase: str) -> Step:
        first, last = unit.statements[0], unit.statements[-1]
        if unit.block:
            body = "BEGIN\n" + "".join(f"    EXECUTE {literal(s.sql)};\n" for s in unit.statements) + "END"
            tag = _dollar(body)
            return Step(
                f"{source.label} lines {first.line}-{last.line} (BEGIN … COMMIT: one transaction)",
                "ddl",
                f"DO {tag}\n{body}\n{tag}",
                lock="what its statements take, all held until it commits; lock_timeout + retries",
            )
        node = first.node
        name = f"{source.label} line {first.line}: {_short(first.sql)}"
        if st.concurrent(node):
            built = st.built_index(node, self.s)
            return Step(
                name,
                "concurrent",
                first.sql,
                lock="SHARE UPDATE EXCLUSIVE (reads and writes go on); no timeouts",
                index=qualified(*built) if built else None,
            )
        return Step(
            name,
            "ddl" if phase != "backfill" else "sql",
            first.sql,
            lock="as the statement takes it; lock_timeout + retries",
            squawk_ignore=self.declared_drop(node) if phase == "contract" else (),
        )

    def declared_drop(self, node: Any) -> tuple[tuple[str, str], ...]:
        """squawk's ban on drops, lifted for what --removes declares (the guard protects it)."""
        reason = "declared with --removes: the guard holds the contract while live code maps it"
        if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
            names = [[str(p.sval) for p in obj] for obj in node.objects or ()]
            keys = [_key(n[-2] if len(n) > 1 else self.s, n[-1]) for n in names]
            if keys and all("*" in self.removes.get(k, ()) for k in keys):
                return (("ban-drop-table", reason),)
            return ()
        if any(c.subtype == AlterTableType.AT_DropColumn for c in _cmds(node)):
            key = _key(*_rel(node.relation, self.s))
            cols = set(self.removes.get(key, ()))
            if all(
                c.name in cols or "*" in cols
                for c in _cmds(node)
                if c.subtype == AlterTableType.AT_DropColumn
            ):
                return (("ban-drop-column", reason),)
        return ()

    def steps(self, key: str, phase: str) -> tuple[Step, ...]:
        source = self.src.get(key)
        if source is None:
            return ()
        return tuple(self.step(u, source, phase) for u in source.units)

    def down(self, key: str, phase: str) -> tuple[Step, ...]:
        if key in self.src:
            return self.steps(key, phase)
        message = "ecm: " + refusal(self.plan_id, phase, FILES[key])
        body = f"BEGIN\n    RAISE EXCEPTION USING MESSAGE = {literal(message)}, ERRCODE = 'feature_not_supported';\nEND"
        tag = _dollar(body)
        return (
            Step(
                f"no downgrade: plan with {FILES[key]} FILE", "sql", f"DO {tag}\n{body}\n{tag}", lock="none"
            ),
        )

    # -- phases ------------------------------------------------------------------------
    def phases(self) -> tuple[Phase, ...]:
        expand_back = (
            f"Downgrade this revision: runs {self.src['expand_down'].label}."
            if "expand_down" in self.src
            else "Refused: no --expand-down FILE was given; undo the expand by hand."
        )
        out = [
            Phase(
                "expand",
                f"Your expand SQL ({self.src['expand'].label}), each statement its own step.",
                self.steps("expand", "expand"),
                self.down("expand_down", "expand"),
                before="Nothing: the expand must keep old code working (nothing checks that it does).",
                after="Code that uses the new shape may deploy.",
                rollback=expand_back,
            )
        ]
        if "backfill" in self.src:
            out.append(
                Phase(
                    "backfill",
                    f"Your backfill SQL ({self.src['backfill'].label}), each statement once, in its own "
                    "transaction under statement_timeout: batched and idempotent by you.",
                    self.steps("backfill", "backfill"),
                    (),
                    before="The expand.",
                    after="Nothing changes for running code.",
                    rollback="Downgrade this revision: nothing to undo (the expand's downgrade removes what it filled).",
                )
            )
        declared = ", ".join([*self.op.removes, *(f"{r} (retyped)" for r in self.op.retypes)]) or "nothing"
        out.append(
            Phase(
                "contract",
                f"The guard (on what you declared: {declared}), then your contract SQL "
                f"({self.src['contract'].label}).",
                (Step("contract-guard", "guard", "", lock="none"), *self.steps("contract", "contract")),
                self.down("contract_down", "contract"),
                before=f"Every application instance that uses the old shape must be gone; the guard checks {declared}.",
                after="Only code that uses the new shape.",
                rollback=(
                    f"Downgrade this contract revision: runs {self.src['contract_down'].label}."
                    if "contract_down" in self.src
                    else "Refused: no --contract-down FILE was given; undo the contract by hand."
                ),
            )
        )
        return tuple(out)

    # -- what the plan says about itself ---------------------------------------------------
    def lint(self) -> list[str]:
        ctx = unsafe.Context(removes={t.rpartition(".")[2]: set(c) for t, c in self.removes.items()})
        out: list[str] = []
        for key in ("expand", "backfill", "contract"):
            source = self.src.get(key)
            ctx.contract = key == "contract"
            for stmt in _nodes(source):
                assert source is not None
                out += [f.message(source.label) for f in unsafe.findings(stmt.node, stmt.line, stmt.sql, ctx)]
        return out

    def breaks(self) -> tuple[dict[str, Any], ...]:
        old_types = {
            (f["schema"], f["name"], f["column"]["name"]): f["column"]["type_sql"]
            for f in self.facts.extra.get("columns", [])
            if f.get("column")
        }
        out = []
        for value in self.op.retypes:
            table, column = _table_column(value, "--retypes", column_needed=True)
            new = new_type(self.src, self.s, table, column)
            if new is None:
                raise BadInput(
                    f"--retypes {value}: the contract SQL gives {column} no new type ecm can read (ALTER TABLE "
                    f"{table} ALTER COLUMN {column} TYPE …, or a column added with a type and renamed to "
                    f"{column}); the guard needs it to tell old code from new"
                )
            old = old_types.get((self.s, table, column))
            if old is None:
                raise BadInput(f"--retypes {value}: column {column} of {self.s}.{table} was not found")
            out.append(
                {
                    "table": _key(self.s, table),
                    "column": column,
                    "kind": "retype",
                    "old_type": old,
                    "new_type": new,
                }
            )
        return tuple(out)

    def plan(self) -> Plan:
        breaks = self.breaks()
        adds = added(self.src["expand"], self.s)
        touches: dict[str, list[str]] = {}
        for side in (self.removes, adds, changed(list(self.src.values()), self.s)):
            for key, cols in side.items():
                for c in cols:
                    _add(touches, key, c)
        for brk in breaks:
            _add(touches, brk["table"], brk["column"])
        notes = self.lint()
        if not self.removes and not breaks:
            notes.append(
                "the contract declares nothing it removes or retypes (--removes, --retypes): the guard cannot "
                "hold it for code that still uses the old shape"
            )
        for key, phase in (("expand_down", "expand"), ("contract_down", "contract")):
            if key not in self.src:
                notes.append(
                    f"no {FILES[key]} FILE: rolling back the {phase} (and ecm abort after it) is refused"
                )
        if "backfill" in self.src:
            notes.append(
                "the backfill statements run once each, each in one transaction under statement_timeout: "
                "batch them and make them safe to run twice"
            )
        first = next(iter(self.removes), None) or (breaks[0]["table"] if breaks else None)
        schema, table = (self.s, first.partition(".")[2]) if first else (self.s, "")
        irreversible = {
            p: refusal(self.plan_id, p, FILES[k])
            for k, p in (("expand_down", "expand"), ("contract_down", "contract"))
            if k not in self.src
        }
        n = {k: sum(len(u.statements) for u in s.units) for k, s in self.src.items()}
        return Plan(
            plan_id=self.plan_id,
            operation=self.op.kind,
            schema=schema,
            table=table,
            title=f"custom {self.op.change}: "
            + ", ".join(
                f"{n[k]} {k} statement{'s' if n[k] != 1 else ''}"
                for k in ("expand", "backfill", "contract")
                if k in n
            ),
            phases=self.phases(),
            removes=self.removes,
            adds=adds,
            touches=touches,
            breaks=breaks,
            spec={
                "operation": self.op.kind,
                "name": self.op.change,
                "schema": self.s,
                "files": {k: s.path for k, s in self.src.items()},
                "sql": {k: s.text for k, s in self.src.items()},
                "removes": list(self.op.removes),
                "retypes": list(self.op.retypes),
                "irreversible": irreversible,
                "facts": self.facts.to_json(),
            },
            notes=tuple(notes),
        )


def _short(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 60 else text[:57] + "..."
