"""``ecm instances``, ``ecm check-app`` and ``ecm guard check``: the live-code guard from a shell.

Only typer is imported at module load (``ecm --help`` stays fast); everything else is
imported inside the command bodies.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import Common, command

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection

    from ..guard import Decision


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _instances_doc(conn: Connection, include_all: bool) -> dict[str, Any]:
    from sqlalchemy import text

    from ..guard import parse_ttl, state, ttl_for, types_json
    from ..live import registry
    from ..settings import control_schema, get

    ttl = parse_ttl(get("ECM_LIVE_TTL"))
    schema = control_schema()
    exists = conn.execute(text("SELECT to_regclass(:t)"), {"t": registry.table(schema)}).scalar()
    doc: dict[str, Any] = {
        "control_schema": schema,
        "initialized": exists is not None,
        "ttl_override_s": ttl,
        "instances": [],
    }
    if exists is None:
        return doc
    for row in registry.read(conn, ttl=ttl, recent_s=None if include_all else registry.RECENT_SECONDS):
        instance = registry.to_instance(row)
        doc["instances"].append(
            {
                "id": instance.id,
                "app": instance.app,
                "version": instance.version,
                "host": instance.host,
                "pid": instance.pid,
                "role": instance.role,
                "state": state(instance, ttl),
                "started_at": row["started_at"].isoformat(),
                "last_heartbeat": row["last_heartbeat"].isoformat(),
                "deregistered_at": row["deregistered_at"].isoformat() if row["deregistered_at"] else None,
                "seconds_since_heartbeat": instance.seconds_since_heartbeat,
                "interval_s": instance.interval_s,
                "ttl_s": ttl_for(instance, ttl),
                "uses": {t: list(c) for t, c in instance.uses.items()},
                "types": types_json(instance.columns),
            }
        )
    order = {"live": 0, "expired": 1, "deregistered": 2}
    doc["instances"].sort(key=lambda i: (order[i["state"]], i["app"], i["version"], i["host"], i["pid"]))
    return doc


def _render_instances(common: Common, doc: dict[str, Any]) -> None:

    if not doc["initialized"]:
        common.say(f"control schema [bold]{doc['control_schema']}[/] not initialized: no instances")
        return
    if not doc["instances"]:
        common.say("no instances reported")
        return
    common.say(instances_table(doc["instances"], title="instances", maps=True))


def instances_table(instances: list[dict[str, Any]], *, title: str, maps: bool) -> Any:
    """The instances as a Rich table; `ecm instances` and `ecm status` show the same rows."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("app", "version", "role", "host", "pid", "state", "last seen"):
        table.add_column(col, no_wrap=col not in ("app", "version", "host"))
    if maps:
        table.add_column("maps")
    for i in instances:
        row = [
            i["app"],
            i["version"],
            str(i.get("role") or "server"),
            i["host"],
            str(i["pid"]),
            i["state"],
            f"{_seconds(i['seconds_since_heartbeat'])} ago",
        ]
        if maps:
            row.append("; ".join(f"{t}({', '.join(c)})" for t, c in i["uses"].items()))
        table.add_row(*row)
    return table


def _load_metadata(target: str) -> MetaData:
    """``module:attribute`` (attribute may be dotted) -> MetaData, resolved like Alembic's env.py would."""
    import importlib

    from ..errors import BadInput
    from ..live.usage import as_metadata

    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise BadInput(f"expected module:attribute (e.g. myapp.models:Base), got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(f"cannot import {module_name}: {exc}") from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BadInput(f"{module_name} has no attribute {attribute}") from None
    try:
        return as_metadata(obj)
    except TypeError as exc:
        raise BadInput(f"{target}: {exc}") from None


def _pending_plans(conn: Connection, plan: str | None) -> list[dict[str, Any]]:
    from sqlalchemy import text

    from ..errors import BadInput
    from ..guard import guard_input
    from ..settings import control_schema
    from ..sql.quoting import q

    schema = control_schema()
    plans_table = f"{q(schema)}.{q('plans')}"
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": plans_table}).scalar() is None:
        if plan is not None:
            raise BadInput(f"unknown plan {plan!r}: control schema {schema} is not initialized")
        return []
    if plan is not None:
        row = conn.execute(
            text(f"SELECT plan_id, phase, spec FROM {plans_table} WHERE plan_id = :p"), {"p": plan}
        ).first()
        if row is None:
            raise BadInput(f"unknown plan {plan!r}")
        if row.phase in ("contracted", "aborted"):
            return []
        rows = [row]
    else:
        rows = list(
            conn.execute(
                text(
                    f"SELECT plan_id, phase, spec FROM {plans_table} "
                    "WHERE phase NOT IN ('contracted', 'aborted') AND (spec ? 'removes' OR spec ? 'breaks') "
                    "ORDER BY created_at, plan_id"
                )
            )
        )
    conn.rollback()
    pending: list[dict[str, Any]] = []
    for r in rows:
        spec = r.spec if isinstance(r.spec, dict) else {}
        if not isinstance(spec.get("removes", {}), dict):
            continue
        # The ledger's spec carries removes and breaks as the revision files froze them.
        pending.append({"plan_id": r.plan_id, "phase": r.phase, "guard": guard_input(spec, contract=True)})
    return pending


def register(app: typer.Typer) -> None:
    @command(app, "instances")
    def instances(
        common: Common,
        include_all: Annotated[
            bool, typer.Option("--all", help="Also instances gone more than an hour ago.")
        ] = False,
    ) -> None:
        """List live and recently expired or deregistered application instances (database clock)."""
        from ..db.engine import connect
        from ..errors import BadInput

        with connect(common.engine()) as conn:
            try:
                doc = _instances_doc(conn, include_all)
            except ValueError as exc:  # a malformed ECM_LIVE_TTL
                raise BadInput(str(exc)) from None
        common.emit(doc)
        if not common.json_output:
            _render_instances(common, doc)

    @command(app, "check-app")
    def check_app(
        common: Common,
        target: Annotated[
            str,
            typer.Argument(
                metavar="MODULE:ATTRIBUTE", help="MetaData or declarative Base, e.g. app.models:Base"
            ),
        ],
        check_types: Annotated[
            bool,
            typer.Option(
                "--check-types/--no-check-types",
                help="Also report mapped columns whose type the database column does not have (yet).",
            ),
        ] = True,
    ) -> int:
        """Readiness: exit 0 when the database has every table, column and type the code maps, 3 if not."""
        from ..db.engine import connect
        from ..live.readiness import missing

        metadata = _load_metadata(target)
        with connect(common.engine()) as conn:
            problems = missing(conn, metadata, check_types=check_types)
        common.emit({"target": target, "ready": not problems, "missing": problems})
        if not problems:
            common.say(f"{target}: schema ready")
            return 0
        common.say(f"{target}: schema [bold]not ready[/], the database lacks:")
        for item in problems:
            common.say(f"  - {item}")
        return 3

    guard_app = typer.Typer(
        name="guard",
        help="The live-code guard: may the pending contracts run now?",
        no_args_is_help=True,
    )
    app.add_typer(guard_app)

    @command(guard_app, "check")
    def guard_check(
        common: Common,
        plan: Annotated[
            str | None,
            typer.Argument(metavar="PLAN", help="Only this plan (default: every pending contract)."),
        ] = None,
        allow_no_reporters: Annotated[
            bool,
            typer.Option(
                "--allow-no-reporters",
                help="Accept an empty registry (no application reported within its TTL).",
            ),
        ] = False,
    ) -> None:
        """Exit 0 when every pending contract may run now; 3 with the reasons otherwise."""
        from ..db.engine import connect
        from ..errors import Refused
        from ..live.guard_check import check_contract

        results: list[tuple[dict[str, Any], Decision]] = []
        with connect(common.engine()) as conn:
            for p in _pending_plans(conn, plan):
                decision = check_contract(
                    conn,
                    removes=p["guard"].removes,
                    breaks=p["guard"].breaks,
                    plan_id=p["plan_id"],
                    allow_no_reporters=allow_no_reporters,
                )
                results.append((p, decision))
        refused = [(p, d) for p, d in results if not d.allowed]
        common.emit(
            {
                "allowed": not refused,
                "allow_no_reporters": allow_no_reporters,
                "plans": [
                    {"plan_id": p["plan_id"], "phase": p["phase"], **p["guard"].to_json(), **d.to_json()}
                    for p, d in results
                ],
            }
        )
        if not results:
            common.say("no pending contracts")
        for p, d in results:
            if d.allowed:
                note = " (no reporters: allowed by --allow-no-reporters)" if d.no_reporters else ""
                common.say(f"contract {p['plan_id']}: [green]may run[/]{note}")
        if refused:
            raise Refused(
                f"{len(refused)} of {len(results)} pending contract(s) refused",
                [f"{p['plan_id']}: {reason}" for p, d in refused for reason in d.reasons],
            )
