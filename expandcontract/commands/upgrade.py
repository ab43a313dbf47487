"""``ecm upgrade`` and ``ecm abort``: run phases in a deploy pipeline, or roll a plan back."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ..errors import EXIT_REFUSED, BadInput
from .common import Common, command, env_flag


def register(app: typer.Typer) -> None:
    @command(app, "upgrade")
    def upgrade(
        common: Common,
        phase: Annotated[
            str,
            typer.Option(
                "--phase",
                help="expand: app revisions + expand steps (backfills deferred); backfill: + run and verify "
                "backfills; contract: + every contract whose guard passes.",
            ),
        ] = "contract",
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show what would run; change nothing.")
        ] = False,
        sql: Annotated[
            bool,
            typer.Option(
                "--sql", help="Print the pending steps through PHASE as a psql script; change nothing."
            ),
        ] = False,
        force_contract: Annotated[
            list[str] | None,
            typer.Option(
                "--force-contract", metavar="PLAN", help="Apply PLAN's contract despite live instances."
            ),
        ] = None,
        reason: Annotated[
            str | None, typer.Option("--reason", help="Why the contract is forced (recorded in the ledger).")
        ] = None,
        allow_no_reporters: Annotated[
            bool,
            typer.Option(
                "--allow-no-reporters",
                help="Accept an empty registry as proof that old code is gone (recorded in the ledger).",
            ),
        ] = False,
        final: Annotated[
            bool,
            typer.Option(
                "--final",
                help="For databases no deployed code uses (CI, a new developer's, a new region's): every phase "
                "and every contract in plan order, accepting an empty registry (live instances still hold).",
            ),
        ] = False,
    ) -> int:
        """Apply pending revisions through a phase; held contracts exit 3 with their reasons."""
        from ..revisions import runner

        if phase not in runner.PHASE_ORDER:
            raise BadInput(f"--phase must be expand, backfill or contract, not {phase!r}")
        if force_contract and not (reason and reason.strip()):
            raise BadInput("--force-contract needs --reason TEXT saying why (it is recorded in the ledger)")
        if final and phase != "contract":
            raise BadInput("--final runs every phase; it cannot be combined with --phase " + phase)
        if final and sql:
            raise BadInput("--final cannot be combined with --sql: it decides contracts as it goes")
        project = common.project()
        engine = common.engine()
        if sql and force_contract:
            raise BadInput(
                "--force-contract cannot be combined with --sql: a script cannot record who forced it"
            )
        if sql:
            from ..revisions.offline_script import offline_sql

            flags = {"ECM_ALLOW_NO_REPORTERS": "1"} if allow_no_reporters else {}
            with runner.env(**flags):
                sys.stdout.write(offline_sql(project, engine, phase))
            return 0
        force = {p: (reason or "").strip() for p in (force_contract or [])}
        # The environment variable means the same as the flag (and is recorded the same way).
        allow_no_reporters = allow_no_reporters or env_flag("ECM_ALLOW_NO_REPORTERS")
        report = runner.upgrade(
            project,
            engine,
            phase,
            dry_run=dry_run,
            force=force,
            allow_no_reporters=allow_no_reporters,
            final=final,
        )
        doc = report.to_json()
        common.emit(doc)
        if not common.json_output:
            _render(common, doc)
        else:  # held contracts are always explained on stderr, also in --json mode
            _render_held(common, doc)
        return EXIT_REFUSED if report.held else 0

    @command(app, "abort")
    def abort(
        common: Common,
        plan: Annotated[str, typer.Argument(help="Plan id (from `ecm plan` / `ecm status`).")],
        allow_no_reporters: Annotated[
            bool,
            typer.Option(
                "--allow-no-reporters",
                help="Accept an empty registry as proof that no code uses the new column (recorded).",
            ),
        ] = False,
    ) -> int:
        """Roll a plan back from whatever phase it reached, as far as is safe."""
        from ..revisions.abort import abort_plan
        from ..revisions.runner import env

        project = common.project()
        with env(**({"ECM_ALLOW_NO_REPORTERS": "1"} if allow_no_reporters else {})):
            doc = abort_plan(project, common.engine(), plan)
        common.emit(doc)
        if not common.json_output:
            for step in doc["steps"]:
                common.say(f"  {step}")
            common.say(f"plan [bold]{plan}[/] rolled back to: {doc['state']}")
        return EXIT_REFUSED if doc.get("refused") else 0


def _render(common: Common, doc: dict[str, Any]) -> None:
    verb = "would apply" if doc["dry_run"] else "applied"
    for rev in doc["applied"] or []:
        common.say(f"{verb} {rev['revision']}  {rev['doc']}")
    for rev in doc["pending"] or []:
        extra = ""
        if "allowed" in rev:
            extra = " (guard: allowed)" if rev["allowed"] else " (guard: held)"
        common.say(f"pending {rev['revision']}  {rev['doc']}{extra}")
        for reason in rev.get("reasons", []) if not rev.get("allowed", True) else []:
            common.say(f"    - {reason}")
    for bf in doc["backfills"]:
        state = bf.get("action") or ("verified" if bf.get("verified") else "NOT verified")
        if bf.get("rows"):
            state += f", {bf['rows']} rows"
        if bf.get("problems"):
            state += ": " + "; ".join(bf["problems"])
        common.say(f"backfill {bf['plan_id']}: {state}")
    for c in doc["contracts"]["applied"]:
        common.say(f"contract {c['plan_id']} applied" + (" (forced)" if c.get("forced") else ""))
    _render_held(common, doc)
    for c in doc["contracts"].get("skipped", []):
        common.say(f"contract {c['plan_id']} skipped: {c['reason']}")
    if not any(
        (
            doc["applied"],
            doc["pending"],
            doc["backfills"],
            doc["contracts"]["applied"],
            doc["contracts"]["held"],
        )
    ):
        common.say("nothing to do: the database is up to date")


def _render_held(common: Common, doc: dict[str, Any]) -> None:
    for c in doc["contracts"]["held"]:
        common.say(f"[bold]contract {c['plan_id']} held[/] (exit 3):")
        for reason in c["reasons"]:
            common.say(f"    - {reason}")
