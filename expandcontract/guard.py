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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
        }


@dataclass(frozen=True)
class Blocker:
    """A live instance and what it still maps of what the change removes."""

    instance: Instance
    maps: tuple[str, ...]  # "schema.table.column", or "schema.table" for a whole-table removal

    def to_json(self) -> dict[str, Any]:
        return {**self.instance.to_json(), "maps": list(self.maps)}


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

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "blocking": [b.to_json() for b in self.blocking],
            "live": [i.to_json() for i in self.live],
            "no_reporters": self.no_reporters,
            "unknown": self.unknown,
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


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def blocker_reason(group: Sequence[Blocker]) -> str:
    """One reason for the instances of one app version (and role) that map the same things.

    ``2 instances of web 1.4.2 still map public.users.name; last seen 0.4 s ago
    (host web-1 pid 4242 seen 0.4 s ago, host web-2 pid 4343 seen 3.1 s ago)``; a role
    other than ``server`` is named: ``1 cli instance of web 1.4.2 still maps …``.
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
    return (
        f"{n} {noun} of {first.app} {first.version} still {verb} {', '.join(group[0].maps)}; "
        f"last seen {_seconds(newest)} s ago ({who})"
    )


def decide(
    removes: Mapping[str, Sequence[str]],
    instances: Sequence[Instance],
    *,
    ttl: float | None = None,
    backfill_problems: Sequence[str] = (),
    allow_no_reporters: bool = False,
    current_process: tuple[str, int] | None = None,
) -> Decision:
    """Whether a change that removes ``removes`` (``{"schema.table": [columns]}``) may run now.

    ``ttl`` overrides every instance's own TTL (``ECM_LIVE_TTL``). ``removes`` columns may
    include :data:`WHOLE_TABLE` for a dropped or renamed table. ``current_process``
    (host, pid) is the process asking: its own instances are left out (:attr:`Decision.ignored`).
    """
    reasons = [str(p) for p in backfill_problems]
    ignored = [i for i in instances if (i.host, i.pid) == current_process]
    instances = [i for i in instances if (i.host, i.pid) != current_process]
    live = [i for i in instances if state(i, ttl) == "live"]
    blocking = [Blocker(i, maps) for i in live if (maps := what_it_maps(removes, i))]

    groups: dict[tuple[str, str, str, tuple[str, ...]], list[Blocker]] = {}
    for blocker in sorted(
        blocking, key=lambda b: (b.instance.seconds_since_heartbeat, b.instance.host, b.instance.pid)
    ):
        i = blocker.instance
        groups.setdefault((i.app, i.version, i.role, blocker.maps), []).append(blocker)
    reasons.extend(blocker_reason(groups[key]) for key in sorted(groups))

    # Removing nothing can break no one, so it needs no evidence either.
    removes_anything = any(list(columns) for columns in removes.values())
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
