"""The contract guard's decision, as a pure function of what the registry and the backfill say.

Pure on purpose: no driver, no connection, no clock. The database side
(:mod:`expandcontract.live.guard_check`) reads the registry with the database clock and
hands the ages in, so every rule here can be tested as a table and reasoned about
without a server, and the same rules serve contracts and expand downgrades alike.

Rules, in the order their reasons are listed:

1. Every backfill problem the caller passes refuses (the caller verified; we only report).
2. An instance is *live* while it has not deregistered and its last heartbeat is at most
   its TTL old: ``ECM_LIVE_TTL`` when set (the ``ttl`` argument), else 3x its own interval.
   A live instance that maps a table or column the change removes refuses, and the reason
   names it (app, version, host, pid, seconds since its heartbeat, the columns).
3. No evidence refuses: when no instance of any application reported during its TTL
   (a heartbeat, or a deregistration that recent), an empty registry proves nothing —
   the fleet may simply not run a reporter. ``allow_no_reporters`` accepts that
   knowingly; :attr:`Decision.no_reporters` tells the caller to record it.

Two rules keep processes that never served from deciding anything by their mere presence:

* The process doing the check (``current_process``: its host and pid) is left out
  entirely. An ``ecm`` or ``alembic`` run whose ``env.py`` imports the application starts
  the application's reporter; that instance maps the old column and would otherwise hold
  the very contract its own process is running.
* An instance whose ``role`` is ``cli`` (``flask db upgrade``, a management command, a
  one-off script) is no evidence that the serving fleet reports: a deregistered CLI run
  says nothing about servers. While it is live it still blocks like any instance, since
  its code is running and may touch the old shape.

A contract may also break running code without removing anything: a column whose type
changes under the same name, or a column that becomes NOT NULL (once the expand's fill
trigger is gone, code that writes NULL fails). A plan declares those as ``breaks``, and
instances register each mapped column's type (as SQLAlchemy compiles it for PostgreSQL)
and nullability. A live instance that maps a retyped column with its old type, or a
column made NOT NULL as nullable, holds the contract like one that maps a removed
column; one whose mapping cannot be judged (no type registered, a type the database
does not know, a third type) holds it too, with a reason saying the guard cannot tell.

Types are compared as the database sees them, never as text: the caller resolves every
type name through the server (``to_regtype``) into :class:`SqlType` and passes the
mapping in, so this module stays pure. Two names are the same type when they resolve to
one type (``int4`` and ``INTEGER``; typmods are not part of a type, so ``varchar(100)``
and ``varchar(200)`` are one), and equivalent when PostgreSQL converts between them both
ways without a conversion function (``text`` and ``character varying``, so a ``String()``
mapping reads a ``text`` column as itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import BadInput

#: A ``removes`` entry holding this name means the table itself goes (drop or rename):
#: every instance mapping the table blocks, whatever columns it maps.
WHOLE_TABLE = "*"

#: The TTL is this many of an instance's own heartbeat intervals.
TTL_INTERVALS = 3.0

State = Literal["live", "expired", "deregistered"]

#: What an instance is. ``server`` and ``worker`` processes serve the application; ``cli``
#: processes (migrations, management commands) run its code briefly and prove nothing
#: about whether the serving fleet runs reporters.
Role = Literal["server", "worker", "cli"]
ROLES: tuple[Role, ...] = ("server", "worker", "cli")
CLI: Role = "cli"


#: What a contract does to a column beyond removing it (``Plan.breaks`` entries' ``kind``).
RETYPE = "retype"
NOT_NULL = "not-null"
#: A unique index the contract drops: ``INSERT … ON CONFLICT (columns)`` infers its arbiter from
#: it, so code whose MetaData declares that unique key fails once it is gone (drop-index).
#: ``columns`` holds the key (empty for an expression key: then nobody's mapping can be judged);
#: ``column`` its first column, or :data:`WHOLE_TABLE` for an expression key.
UNIQUE_KEY = "unique-key"

Verdict = Literal["old-type", "nullable", "cannot-tell", "unique-key"]


@dataclass(frozen=True)
class Break:
    """One column the contract changes under code that still runs: retyped, or made NOT NULL.

    ``old_type``/``new_type`` (retype only) are as ``format_type`` printed them when the
    plan was made; they are resolved by the server at guard time, never compared as text.
    """

    table: str
    column: str
    kind: str
    old_type: str | None = None
    new_type: str | None = None
    columns: tuple[str, ...] = ()  # unique-key only: the key's columns
    index: str | None = None  # unique-key only: the index the contract drops

    @property
    def name(self) -> str:
        if self.kind == UNIQUE_KEY:
            return f"{self.table}.({', '.join(self.columns) or 'expression'})"
        return f"{self.table}.{self.column}"

    @classmethod
    def from_json(cls, data: Any) -> Break:
        """A frozen plan's ``breaks`` entry; a malformed one is refused, never skipped."""
        if not isinstance(data, Mapping):
            raise BadInput(f"malformed breaks entry in the plan: {data!r} is not an object")
        table, column, kind = data.get("table"), data.get("column"), data.get("kind")
        if not (isinstance(table, str) and isinstance(column, str) and isinstance(kind, str)):
            raise BadInput(f"malformed breaks entry in the plan: {dict(data)!r} needs table, column and kind")
        old, new = data.get("old_type"), data.get("new_type")
        if kind == RETYPE and not (isinstance(old, str) and isinstance(new, str)):
            raise BadInput(
                f"malformed breaks entry in the plan: retype of {table}.{column} needs old_type and new_type"
            )
        columns = data.get("columns") or ()
        if not (isinstance(columns, list | tuple) and all(isinstance(c, str) for c in columns)):
            raise BadInput(
                f"malformed breaks entry in the plan: columns of {table}.{column} is not a list of names"
            )
        index = data.get("index")
        return cls(
            table=table,
            column=column,
            kind=kind,
            old_type=old if isinstance(old, str) else None,
            new_type=new if isinstance(new, str) else None,
            columns=tuple(columns),
            index=index if isinstance(index, str) else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"table": self.table, "column": self.column, "kind": self.kind}
        if self.kind == RETYPE:
            out.update(old_type=self.old_type, new_type=self.new_type)
        if self.kind == UNIQUE_KEY:
            out.update(columns=list(self.columns), index=self.index)
        return out


@dataclass(frozen=True)
class GuardInput:
    """What a change takes away from code that still runs: the guard's whole question."""

    #: ``{"schema.table": [columns]}``; :data:`WHOLE_TABLE` for a dropped or renamed table.
    removes: dict[str, list[str]] = field(default_factory=dict)
    breaks: tuple[Break, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"removes": self.removes, "breaks": [b.to_json() for b in self.breaks]}


def guard_input(plan: Mapping[str, Any], *, contract: bool) -> GuardInput:
    """The guard's input from a frozen plan (a revision file's ``PLAN``, or a ledger ``spec``).

    One function for every caller (the runner, the contract revision, ``ecm guard check``,
    the offline script), so they cannot disagree on what a plan protects. A contract
    protects what it removes and what it breaks; an expand's rollback protects what the
    expand added (it breaks nothing else). Plans frozen before ``breaks`` existed have none.
    """
    side = plan.get("removes" if contract else "adds") or {}
    if not isinstance(side, Mapping):
        raise BadInput(f"malformed plan: {'removes' if contract else 'adds'} is not an object")
    removes = {str(t): [str(c) for c in cols] for t, cols in side.items()}
    raw = (plan.get("breaks") or ()) if contract else ()
    if not isinstance(raw, list | tuple):
        raise BadInput("malformed plan: breaks is not a list")
    return GuardInput(removes=removes, breaks=tuple(Break.from_json(b) for b in raw))


@dataclass(frozen=True)
class SqlType:
    """A type name as the server resolved it: ``name`` is its canonical spelling
    (``regtype::text``), ``same`` the types it converts to and from without a function."""

    name: str
    same: frozenset[str] = frozenset()

    def equivalent(self, other: SqlType) -> bool:
        return self.name == other.name or other.name in self.same or self.name in other.same


def _as_written(raw: str) -> SqlType:
    return SqlType(" ".join(raw.lower().split()))


@dataclass(frozen=True)
class MappedColumn:
    """A mapped column's type (as SQLAlchemy compiled it for PostgreSQL) and nullability.

    ``type`` is None when the type could not be compiled; ``nullable`` None when unknown.
    """

    type: str | None
    nullable: bool | None
    #: The unique keys its MetaData declares that include the column (constraints and unique
    #: indexes, each as its columns); None when the reporter registered none (older reporters).
    unique: tuple[tuple[str, ...], ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "nullable": self.nullable}
        if self.unique is not None:
            out["unique"] = [list(k) for k in self.unique]
        return out


@dataclass(frozen=True)
class Instance:
    """One reporting process, as the guard sees it: identity, age by the DB clock, schema usage."""

    id: str
    app: str
    version: str
    host: str
    pid: int
    seconds_since_heartbeat: float
    interval_s: float
    uses: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Set when the instance deregistered: seconds since it did (by the DB clock).
    seconds_since_deregistered: float | None = None
    #: ``server``, ``worker`` or ``cli``; rows written before roles existed are servers.
    role: str = "server"
    #: ``{"schema.table": {column: MappedColumn}}`` for the columns its MetaData maps; None
    #: when its reporter registered no types (older than type reports): "cannot tell".
    columns: Mapping[str, Mapping[str, MappedColumn]] | None = None

    @property
    def deregistered(self) -> bool:
        return self.seconds_since_deregistered is not None

    @property
    def serves(self) -> bool:
        """Whether its reports show that the serving fleet runs reporters (anything but cli)."""
        return self.role != CLI

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "app": self.app,
            "version": self.version,
            "host": self.host,
            "pid": self.pid,
            "role": self.role,
            "seconds_since_heartbeat": self.seconds_since_heartbeat,
            "interval_s": self.interval_s,
            "seconds_since_deregistered": self.seconds_since_deregistered,
            "uses": {table: list(columns) for table, columns in self.uses.items()},
            "types": types_json(self.columns),
        }


def types_json(columns: Mapping[str, Mapping[str, MappedColumn]] | None) -> dict[str, Any] | None:
    if columns is None:
        return None
    return {t: {c: m.to_json() for c, m in cols.items()} for t, cols in columns.items()}


@dataclass(frozen=True)
class Finding:
    """How one live instance's mapping of a column fares under one break."""

    brk: Break
    column: str  # "schema.table.column" as the instance maps it
    verdict: Verdict
    #: What it maps: the type as the database names it (or as registered when the database
    #: does not know it), ``nullable``, or None when unknown.
    mapped: str | None
    #: The reason's text after "maps <column>": `` as integer; the contract makes it bigint``.
    detail: str

    def clause(self, verb: str = "maps") -> str:
        return f"{verb} {self.column}{self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.brk.to_json(),
            "column": self.column,
            "maps": self.mapped,
            "verdict": self.verdict,
            "cannot_tell": self.verdict == "cannot-tell",
            "reason": self.clause(),
        }


@dataclass(frozen=True)
class Blocker:
    """A live instance, what it still maps of what the change removes, and what it breaks."""

    instance: Instance
    maps: tuple[str, ...]  # "schema.table.column", or "schema.table" for a whole-table removal
    breaks: tuple[Finding, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            **self.instance.to_json(),
            "maps": list(self.maps),
            "breaks": [f.to_json() for f in self.breaks],
        }


@dataclass(frozen=True)
class Decision:
    """Allow or refuse, with one human-readable reason per problem (empty when allowed)."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)
    blocking: list[Blocker] = field(default_factory=list)
    #: Instances that count as live (blocking or not).
    live: list[Instance] = field(default_factory=list)
    #: True when no instance reported within its TTL: refused, or allowed only because
    #: ``allow_no_reporters`` was given (the caller must then record that in the ledger).
    no_reporters: bool = False
    #: True when the refusal is because the registry could not be read (fail closed).
    unknown: bool = False
    #: Instances of the checking process itself, left out of the decision.
    ignored: list[Instance] = field(default_factory=list)

    @property
    def cannot_tell(self) -> bool:
        """True when a live instance holds it only because its mapping cannot be judged."""
        return any(f.verdict == "cannot-tell" for b in self.blocking for f in b.breaks)

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "blocking": [b.to_json() for b in self.blocking],
            "live": [i.to_json() for i in self.live],
            "no_reporters": self.no_reporters,
            "unknown": self.unknown,
            "cannot_tell": self.cannot_tell,
            "ignored": [i.to_json() for i in self.ignored],
        }


def refuse_unknown(why: str) -> Decision:
    """The fail-closed decision: we could not tell which code is live, so nothing may go."""
    return Decision(allowed=False, reasons=[why], unknown=True)


def ttl_for(instance: Instance, ttl: float | None = None) -> float:
    return ttl if ttl is not None else TTL_INTERVALS * instance.interval_s


def state(instance: Instance, ttl: float | None = None) -> State:
    if instance.deregistered:
        return "deregistered"
    return "live" if instance.seconds_since_heartbeat <= ttl_for(instance, ttl) else "expired"


def reported_recently(instance: Instance, ttl: float | None = None) -> bool:
    """A heartbeat, or a deregistration, within the TTL."""
    if instance.seconds_since_deregistered is not None:
        return instance.seconds_since_deregistered <= ttl_for(instance, ttl)
    return instance.seconds_since_heartbeat <= ttl_for(instance, ttl)


def is_evidence(instance: Instance, ttl: float | None = None) -> bool:
    """Evidence that the fleet reports: a serving instance (not cli) that reported within its TTL."""
    return instance.serves and reported_recently(instance, ttl)


def parse_ttl(value: str | None) -> float | None:
    """``ECM_LIVE_TTL`` as seconds; empty means "3x each instance's interval"."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"ECM_LIVE_TTL must be a number of seconds, not {value!r}") from None
    if not seconds > 0:
        raise ValueError(f"ECM_LIVE_TTL must be positive, not {value!r}")
    return seconds


def _table_matches(removed: str, used: str) -> bool:
    # An unqualified name in ``removes`` matches that table in any schema: over-blocking is
    # the safe side when the caller could not say which schema it meant.
    if "." in removed:
        return removed == used
    return used.rpartition(".")[2] == removed


def what_it_maps(removes: Mapping[str, Sequence[str]], instance: Instance) -> tuple[str, ...]:
    """What of ``removes`` the instance maps, as qualified names, sorted."""
    hits: set[str] = set()
    for removed_table, removed_columns in removes.items():
        for used_table, used_columns in instance.uses.items():
            if not _table_matches(removed_table, used_table):
                continue
            if WHOLE_TABLE in removed_columns:
                hits.add(used_table)
                continue
            hits.update(f"{used_table}.{c}" for c in removed_columns if c in set(used_columns))
    return tuple(sorted(hits))


Types = Mapping[str, SqlType | None]


def _resolver(types: Types | None) -> Callable[[str | None], SqlType | None]:
    """Raw type name -> SqlType. Without ``types`` (no server at hand) names compare as
    written, lower-cased; with it, a name it does not resolve is unknown (None)."""

    def resolve(raw: str | None) -> SqlType | None:
        if raw is None:
            return None
        if types is None:
            return _as_written(raw)
        return types.get(raw)

    return resolve


def type_names(guard: GuardInput, instances: Iterable[Instance]) -> set[str]:
    """Every type name the decision will need resolved: the plan's and what instances map.

    For the caller that resolves them through the server before calling :func:`decide`.
    """
    names: set[str] = set()
    for brk in guard.breaks:
        if brk.kind != RETYPE:
            continue
        names.update(t for t in (brk.old_type, brk.new_type) if t)
        for instance in instances:
            for used_table, mapped in (instance.columns or {}).items():
                if _table_matches(brk.table, used_table) and brk.column in mapped:
                    raw = mapped[brk.column].type
                    if raw:
                        names.add(raw)
    return names


def is_retype_for_the_guard(brk: Break, types: Types | None = None) -> bool:
    """A retype whose old and new names resolve to one type (``varchar(100)`` to
    ``varchar(200)``: typmods are not part of a type) changes nothing the guard can see."""
    if brk.kind != RETYPE:
        return True
    resolve = _resolver(types)
    old, new = resolve(brk.old_type), resolve(brk.new_type)
    return not (old is not None and new is not None and old.name == new.name)


def _unknown_type_why(instance: Instance, used_table: str, column: str, types: Types | None) -> str | None:
    if instance.columns is None:
        return "its reporter registers no column types"
    mapped = instance.columns.get(used_table, {}).get(column)
    if mapped is None:
        return "listed in uses=, which carries no types"
    if mapped.type is None:
        return "SQLAlchemy could not compile its type for PostgreSQL"
    if _resolver(types)(mapped.type) is None:
        return f"{mapped.type!r} is not a type this database knows"
    return None


def _judge(brk: Break, instance: Instance, used_table: str, types: Types | None) -> Finding | None:
    """One instance's mapping of one broken column: None when it survives the contract."""
    resolve = _resolver(types)
    column = f"{used_table}.{brk.column}"
    mapped = (instance.columns or {}).get(used_table, {}).get(brk.column)
    if brk.kind == UNIQUE_KEY:
        return _judge_unique(brk, instance, used_table, mapped)
    if brk.kind == NOT_NULL:
        if mapped is not None and mapped.nullable is False:
            return None
        if mapped is not None and mapped.nullable is True:
            return Finding(
                brk, column, "nullable", "nullable", " as nullable; the contract makes it NOT NULL"
            )
        why = (
            "its reporter registers no nullability"
            if instance.columns is None
            else "listed in uses=, which carries no nullability"
            if mapped is None
            else "no nullability registered"
        )
        return Finding(
            brk,
            column,
            "cannot-tell",
            None,
            f" but its nullability is unknown ({why}): cannot tell whether it writes NULL, which fails "
            "once the contract makes it NOT NULL",
        )
    if brk.kind != RETYPE:
        return Finding(
            brk,
            column,
            "cannot-tell",
            mapped.type if mapped else None,
            f": cannot tell whether it is safe once the contract changes it ({brk.kind!r} is a change "
            "this version of ecm does not know)",
        )
    old, new = resolve(brk.old_type), resolve(brk.new_type)
    new_name = new.name if new else str(brk.new_type)
    old_name = old.name if old else str(brk.old_type)
    once = f"once the contract makes it {new_name} (from {old_name})"
    unknown = _unknown_type_why(instance, used_table, brk.column, types)
    if unknown is not None:
        return Finding(
            brk,
            column,
            "cannot-tell",
            mapped.type if mapped else None,
            f" but its type is unknown ({unknown}): cannot tell whether it reads {column} safely {once}",
        )
    assert mapped is not None and mapped.type is not None
    t = resolve(mapped.type)
    assert t is not None
    if new is not None and t.name == new.name:
        return None
    if old is not None and t.name == old.name:
        return Finding(brk, column, "old-type", t.name, f" as {t.name}; the contract makes it {new_name}")
    like_new = new is not None and t.equivalent(new)
    like_old = old is not None and t.equivalent(old)
    if like_new and not like_old:
        return None
    if like_old and not like_new:
        return Finding(brk, column, "old-type", t.name, f" as {t.name}; the contract makes it {new_name}")
    return Finding(
        brk,
        column,
        "cannot-tell",
        t.name,
        f" as {t.name}: cannot tell whether it reads {column} safely {once}",
    )


def _judge_unique(
    brk: Break, instance: Instance, used_table: str, mapped: MappedColumn | None
) -> Finding | None:
    """Whether an instance declares the unique key the contract drops: it may then rely on it
    in ``ON CONFLICT``; when its reporter registered no unique keys, nobody can tell."""
    key = f"({', '.join(brk.columns)})"
    index = f"unique index {brk.index}" if brk.index else "its unique index"
    column = f"{used_table}.{brk.column}" if brk.columns else used_table
    why = (
        "its reporter registers no column types or unique keys"
        if instance.columns is None
        else "listed in uses=, which carries no unique keys"
        if mapped is None
        else "its reporter registers no unique keys"
        if mapped.unique is None
        else "an expression key, which reporters do not register"
        if not brk.columns
        else None
    )
    if why is not None:
        return Finding(
            brk,
            column,
            "cannot-tell",
            None,
            f" but whether it declares the unique key {key if brk.columns else ''} is unknown ({why}): "
            f"cannot tell whether its ON CONFLICT relies on {index}, which the contract drops",
        )
    assert mapped is not None and mapped.unique is not None
    if any(set(k) == set(brk.columns) for k in mapped.unique):
        return Finding(
            brk,
            column,
            "unique-key",
            "unique",
            f" declaring the unique key {key}; the contract drops {index} (ON CONFLICT {key} fails without it)",
        )
    return None


def what_it_breaks(
    breaks: Sequence[Break], instance: Instance, types: Types | None = None
) -> tuple[Finding, ...]:
    """What the breaks do to the instance's mapped columns: one finding per column it would hurt.

    Only columns it maps count (in ``uses``); a retype that is none for the guard
    (:func:`is_retype_for_the_guard`) hurts no one.
    """
    found: list[Finding] = []
    for brk in breaks:
        if not is_retype_for_the_guard(brk, types):
            continue
        for used_table, used_columns in instance.uses.items():
            column_used = brk.column in set(used_columns) or (
                brk.kind == UNIQUE_KEY and brk.column == WHOLE_TABLE
            )
            if _table_matches(brk.table, used_table) and column_used:
                finding = _judge(brk, instance, used_table, types)
                if finding is not None:
                    found.append(finding)
    return tuple(sorted(found, key=lambda f: (f.column, f.brk.kind)))


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def blocker_reason(group: Sequence[Blocker]) -> str:
    """One reason for the instances of one app version (and role) that map the same things.

    ``2 instances of web 1.4.2 still map public.users.name; last seen 0.4 s ago
    (host web-1 pid 4242 seen 0.4 s ago, host web-2 pid 4343 seen 3.1 s ago)``; a role
    other than ``server`` is named: ``1 cli instance of web 1.4.2 still maps …``.
    """
    return blocker_reasons(group)[0]


def blocker_reasons(group: Sequence[Blocker]) -> list[str]:
    """The group's reasons: what it maps of the removals, then one per broken column.

    ``1 instance of web 1.4.2 maps public.items.qty as integer; the contract makes it
    bigint; last seen 0.4 s ago (host web-1 pid 4242)``: each line stands alone, so a list
    of reasons reads the same whether an instance is held by one thing or several.
    """
    first = group[0].instance
    n = len(group)
    noun = "instance" if n == 1 else "instances"
    if first.role != "server":
        noun = f"{first.role} {noun}"
    verb = "maps" if n == 1 else "map"
    newest = min(b.instance.seconds_since_heartbeat for b in group)
    if n == 1:
        who = f"host {first.host} pid {first.pid}"
    else:
        who = ", ".join(
            f"host {b.instance.host} pid {b.instance.pid} seen {_seconds(b.instance.seconds_since_heartbeat)} s ago"
            for b in group
        )
    clauses = [f"still {verb} {', '.join(group[0].maps)}"] if group[0].maps else []
    clauses.extend(f.clause(verb) for f in group[0].breaks)
    tail = f"; last seen {_seconds(newest)} s ago ({who})"
    return [f"{n} {noun} of {first.app} {first.version} {clause}{tail}" for clause in clauses]


def decide(
    removes: Mapping[str, Sequence[str]],
    instances: Sequence[Instance],
    *,
    ttl: float | None = None,
    backfill_problems: Sequence[str] = (),
    allow_no_reporters: bool = False,
    current_process: tuple[str, int] | None = None,
    breaks: Sequence[Break] = (),
    types: Types | None = None,
) -> Decision:
    """Whether a change that removes ``removes`` (``{"schema.table": [columns]}``) and breaks
    ``breaks`` may run now.

    ``ttl`` overrides every instance's own TTL (``ECM_LIVE_TTL``). ``removes`` columns may
    include :data:`WHOLE_TABLE` for a dropped or renamed table. ``current_process``
    (host, pid) is the process asking: its own instances are left out (:attr:`Decision.ignored`).
    ``types`` maps every type name in play (:func:`type_names`) to what the server resolved
    it to (None: not a type it knows); without it, names compare as written.
    """
    reasons = [str(p) for p in backfill_problems]
    ignored = [i for i in instances if (i.host, i.pid) == current_process]
    instances = [i for i in instances if (i.host, i.pid) != current_process]
    live = [i for i in instances if state(i, ttl) == "live"]
    blocking = [
        Blocker(i, maps, found)
        for i in live
        if (maps := what_it_maps(removes, i)) + (found := what_it_breaks(breaks, i, types))
    ]

    groups: dict[tuple[Any, ...], list[Blocker]] = {}
    for blocker in sorted(
        blocking, key=lambda b: (b.instance.seconds_since_heartbeat, b.instance.host, b.instance.pid)
    ):
        i = blocker.instance
        found_key = tuple((f.column, f.detail) for f in blocker.breaks)
        groups.setdefault((i.app, i.version, i.role, blocker.maps, found_key), []).append(blocker)
    for key in sorted(groups):
        reasons.extend(blocker_reasons(groups[key]))

    # Removing nothing and breaking nothing can hurt no one, so it needs no evidence either.
    removes_anything = any(list(columns) for columns in removes.values()) or any(
        is_retype_for_the_guard(b, types) for b in breaks
    )
    no_reporters = removes_anything and not any(is_evidence(i, ttl) for i in instances)
    if no_reporters and not allow_no_reporters:
        rule = f"{ttl:g} s (ECM_LIVE_TTL)" if ttl is not None else f"{TTL_INTERVALS:g}x its interval"
        cli_runs = _cli_runs([i for i in instances if not i.serves and reported_recently(i, ttl)])
        reasons.append(
            "no instance of any application reported within its TTL "
            + (
                f"({rule}) other than command-line runs ({cli_runs}), which prove nothing about the "
                "serving fleet: start LiveReporter in the serving processes, "
                if cli_runs
                else f"({rule}): an empty registry proves nothing; start LiveReporter in the applications, "
            )
            + "or pass --allow-no-reporters to accept that knowingly (recorded in the ledger)"
        )
    return Decision(
        allowed=not reasons,
        reasons=reasons,
        blocking=blocking,
        live=live,
        no_reporters=no_reporters,
        ignored=ignored,
    )


def _cli_runs(instances: Sequence[Instance]) -> str:
    """``2 of microblog v1, 1 of worker 3``: CLI instances that reported, per app version."""
    counts: dict[tuple[str, str], int] = {}
    for i in instances:
        counts[(i.app, i.version)] = counts.get((i.app, i.version), 0) + 1
    return ", ".join(f"{n} of {app} {version}" for (app, version), n in sorted(counts.items()))
