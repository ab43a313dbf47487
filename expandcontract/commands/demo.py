"""``ecm demo``: watch a column rename under live traffic, with nothing to set up and nothing left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Common, command


def register(app: typer.Typer) -> None:
    @command(
        app,
        "demo",
        database_url_help="Server to run the demo on (it creates and drops its own database there). "
        "Default: the embedded PostgreSQL 18 (`embedded`); the Alembic config is not used.",
    )
    def demo(
        common: Common,
        rows: Annotated[
            int, typer.Option("--rows", min=1, help="Rows in the demo table (the backfill copies them all).")
        ] = 200_000,
        keep: Annotated[
            Path | None,
            typer.Option(
                "--keep",
                metavar="DIR",
                help="Write the Alembic project to DIR (new or empty) and keep the database; "
                "prints how to connect.",
            ),
        ] = None,
    ) -> int:
        """Rename a column under live traffic from two app versions: expand, backfill, refused and applied contract.

        Runs on the embedded PostgreSQL unless --database-url (or ECM_DATABASE_URL) names a server; alembic.ini is not read. It creates its own database and Alembic project and removes both at the end unless --keep DIR.
        """
        import sys

        from ..demo.scenario import DemoOptions, Scenario
        from ..errors import EcmError, OperationalError

        if not common.verbose:
            _quiet_logs()
        options = DemoOptions(
            database_url=common.database_url or "embedded",
            rows=rows,
            keep=keep,
            tty=sys.stderr.isatty(),
        )
        # Soft wrap: a narration line stays one line in a CI log or a pipe.
        scenario = Scenario(options, say=lambda message: common.say(message, soft_wrap=True))
        try:
            doc = scenario.run()
        except EcmError:
            common.emit(scenario.doc)
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            common.emit(scenario.doc)
            from ..errors import first_line

            raise OperationalError(f"the demo failed: {first_line(exc)}") from exc
        common.emit(doc)
        if not common.json_output:
            from ..demo.summary import render

            common.say()
            render(common.console, doc)
        _closing(common, doc)
        if not doc["ok"]:
            samples = doc.get("error_samples") or ["(no sample)"]
            raise OperationalError(f"the demo finished with {doc['errors_total']} errors, e.g. {samples[0]}")
        return 0


def _quiet_logs() -> None:
    """The narration is the demo's output; library INFO events would drown it."""
    import logging

    import structlog

    from ..log import configure_now

    configure_now()  # the CLI's set-up first (deferred until an event needs it), then the level
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _closing(common: Common, doc: dict[str, object]) -> None:
    from rich.markup import escape

    cleanup = doc.get("cleanup")
    kept = cleanup.get("kept") if isinstance(cleanup, dict) else None
    errors = doc.get("errors_total")
    verdict = "[bold green]zero errors[/]" if errors == 0 else f"[bold red]{errors} errors[/]"
    common.say(f"{verdict} in {doc.get('elapsed_s')} s.", soft_wrap=True)
    if isinstance(kept, dict):
        url = str(kept.get("database_url"))
        common.say(
            soft_wrap=True,
            message=f"kept: the project in {escape(str(kept.get('project')))} (cd there and run `ecm status`), "
            f"the database {doc.get('database')}:\n  psql '{escape(url)}'\n"
            f"  drop it with: psql '{escape(str(kept.get('server_url')))}' "
            f"-c 'DROP DATABASE {doc.get('database')} WITH (FORCE)'",
        )
    elif isinstance(cleanup, dict) and cleanup.get("database_dropped"):
        common.say(
            f"cleaned up: database {doc.get('database')} dropped, temporary project removed "
            "(keep them with --keep DIR).",
            soft_wrap=True,
        )
