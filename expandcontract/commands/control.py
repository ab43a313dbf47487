"""``ecm init`` and ``ecm status``: the control schema and what it knows."""

from __future__ import annotations

from typing import Any

import typer

from .common import Common, command


def register(app: typer.Typer) -> None:
    @command(app, "init")
    def init(common: Common) -> None:
        """Create or upgrade the control schema (idempotent, safe to run concurrently)."""
        from ..db import control
        from ..db.engine import connect, server_version

        with connect(common.engine()) as conn:
            result = control.ensure(conn)
            result["server_version"] = server_version(conn)
        if result["changed"]:
            common.say(
                f"control schema [bold]{result['schema']}[/] upgraded "
                f"{result['before'] or '(none)'} -> {result['version']}"
            )
        else:
            common.say(f"control schema [bold]{result['schema']}[/] already at {result['version']}")
        common.emit(result)

    @command(app, "status")
    def status(common: Common) -> None:
        """Show the control-schema version, plans in flight and live instances."""
        from ..db.engine import connect
        from ..db.status import collect

        with connect(common.engine()) as conn:
            doc = collect(conn)
        common.emit(doc)
        if not common.json_output:
            _render_status(common, doc)


def _render_status(common: Common, doc: dict[str, Any]) -> None:
    from rich.table import Table

    cs = doc["control_schema"]
    if not cs["initialized"]:
        common.say(f"control schema [bold]{cs['name']}[/]: not initialized (run `ecm init`)")
    else:
        note = "up to date" if cs["up_to_date"] else f"behind head {cs['head']} (run `ecm init`)"
        common.say(f"control schema [bold]{cs['name']}[/]: version {cs['version']} ({note})")
    common.say(f"server: PostgreSQL {doc['server_version']}")
    if doc["plans"]:
        table = Table(title="plans")
        for col in ("plan", "operation", "table", "phase", "backfill"):
            table.add_column(col)
        for p in doc["plans"]:
            backfill = p["backfill_status"]
            if p.get("backfill_rows_estimate"):
                backfill += f" {p['backfill_rows_done']}/{p['backfill_rows_estimate']}"
            elif p.get("backfill_rows_done"):
                backfill += f" {p['backfill_rows_done']} rows"
            table.add_row(
                p["plan_id"], p["operation"], f"{p['table_schema']}.{p['table_name']}", p["phase"], backfill
            )
        common.say(table)
    else:
        common.say("plans: none")
    if doc["instances"]:
        from .live import instances_table

        common.say(instances_table(doc["instances"], title="application instances", maps=False))
    else:
        common.say("live instances: none reported")
