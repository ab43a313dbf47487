"""The demo's script: a column rename under live traffic, end to end, on a throwaway database.

Every step is the real thing a team would do, in the order they would do it, so what
the demo shows is evidence rather than animation: real application processes (version
1 on ``name``, version 2 on ``full_name``) keep serving while ``ecm upgrade`` runs each
phase; the contract is refused, by the same guard production uses, while version 1 is
live; a real SIGTERM stops version 1, whose reporter deregisters; then the contract
goes through. Each application process counts its requests, errors and slowest query
per phase, which is what the summary reports.

Isolation is a fresh database inside the given server and a temporary Alembic project;
both are removed at the end, also on failure or Ctrl-C, unless the user asked to keep them.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, OperationalError
from . import APP_NAME, NEW_COLUMN, OLD_COLUMN, TABLE
from .proc import EcmRun, Fleet, ecm

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: The phases of the story, in order: (key in --json, label in the table).
PHASES: tuple[tuple[str, str], ...] = (
    ("v1_only", "v1 only"),
    ("expand", "expand"),
    ("backfill", "backfill"),
    ("v1_v2", "v1 + v2"),
    ("contract_refused", "contract refused"),
    ("stop_v1", "SIGTERM v1"),
    ("contract", "contract"),
    ("v2_only", "v2 only"),
)
LABELS = dict(PHASES)

# The application's first revision, as a team would have it: `name` is NOT NULL without a
# default, the hard case for the contract (version 2's inserts leave `name` to the trigger, so
# the contract drops OLD's NOT NULL before it drops the trigger).
REVISION_0001 = '''"""create accounts

Revision ID: 0001_accounts
Revises:
Create Date: (ecm demo)
"""

from alembic import op
import sqlalchemy as sa

revision = "0001_accounts"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("balance", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("accounts_name_idx", "accounts", ["name"])


def downgrade() -> None:
    op.drop_table("accounts")
'''


@dataclass
class DemoOptions:
    database_url: str
    rows: int = 200_000
    keep: Path | None = None
    tty: bool = False
    processes: int = 2
    pause_s: float = 1.5
    pace_ms: float = 5.0


class Scenario:
    """Runs the story once; :meth:`run` returns the ``--json`` document (also on failure)."""

    def __init__(self, options: DemoOptions, say: Callable[[str], None]) -> None:
        if options.rows < 1:
            raise BadInput(f"--rows must be at least 1, not {options.rows}")
        if options.processes < 1:
            raise BadInput("the demo needs at least one process per version")
        if options.keep is not None:
            keep = options.keep.expanduser()
            if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
                raise BadInput(f"--keep {keep}: must be a new or empty directory")
        self.options = options
        self.say = say
        self.started = time.monotonic()
        self.server_url = ""
        self.demo_url = ""
        self.database = f"ecm_demo_{secrets.token_hex(4)}"
        self.database_created = False
        self.tmp: Path | None = None
        self.project: Path | None = None
        self.run_dir: Path | None = None
        self.admin: Engine | None = None
        self.engine: Engine | None = None
        self.fleets: dict[str, Fleet] = {}
        self.timeline: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.stats: dict[str, list[dict[str, Any]]] = {}
        self.doc: dict[str, Any] = {"ok": False, "rows": options.rows, "database": self.database}

    # -- the story ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        previous = _terminate_as_interrupt()
        try:
            self._setup()
            self._story()
        except BaseException as exc:
            self.doc["error"] = _first_line(exc)
            raise
        finally:
            self._phase(None)
            self._cleanup()
            self._summarize()
            _restore(previous)
        return self.doc

    def _setup(self) -> None:
        self._server()
        self._create_database()
        self._create_project()
        self._seed()

    def _story(self) -> None:
        o = self.options
        assert self.run_dir is not None
        self._phase("v1_only")
        v1 = self.fleets["1"] = Fleet("1", o.processes, self.demo_url, self.run_dir, o.pace_ms).start()
        v1.wait_ready()
        live, _ = self._registry("1")
        self.say(
            f"[bold]v1 traffic[/]: {live} processes of {APP_NAME} 1 serving and reporting live "
            f"(pids {_pids(v1)}); they map {TABLE}.{OLD_COLUMN}"
        )
        time.sleep(o.pause_s)

        plan = self._ecm(["plan", "rename-column", TABLE, OLD_COLUMN, NEW_COLUMN])
        doc = plan.doc or {}
        self.doc["plan_id"] = doc.get("plan_id")
        self.doc["revisions"] = [
            {"phase": f.get("phase"), "revision": f.get("revision"), "path": f.get("path")}
            for f in doc.get("files", [])
        ]
        phases = ", ".join(str(f["phase"]) for f in self.doc["revisions"])
        self.say(
            f"[bold]plan[/]: {doc.get('plan_id')} written as Alembic revisions ({phases}) "
            f"in {plan.seconds:.1f} s"
        )

        self._phase("expand")
        expand = self._ecm(["upgrade", "--phase", "expand"])
        self.say(
            f"[bold]expand[/] applied in {expand.seconds:.1f} s while v1 traffic ran: {NEW_COLUMN} added, "
            "sync trigger (its index comes with the backfill)"
        )

        self._phase("backfill")
        self.say(f"[bold]backfill[/]: copying {OLD_COLUMN} into {NEW_COLUMN} in short batches under traffic")
        backfill = self._ecm(["upgrade", "--phase", "backfill"], tty=o.tty)
        entries = (backfill.doc or {}).get("backfills") or [{}]
        rows = entries[0].get("rows")
        verified = bool(entries[0].get("verified"))
        self.doc["backfill"] = {"rows": rows, "verified": verified, "seconds": round(backfill.seconds, 2)}
        if not verified:
            raise OperationalError(f"the backfill did not verify: {entries[0]}")
        self.say(
            f"[bold]backfill[/]: {rows or 0:,} rows backfilled, {NEW_COLUMN}'s index built concurrently and "
            f"verified in {backfill.seconds:.1f} s (ecm upgrade --phase backfill); version 2 may roll out now"
        )

        self._phase("v1_v2")
        v2 = self.fleets["2"] = Fleet("2", o.processes, self.demo_url, self.run_dir, o.pace_ms).start()
        v2.wait_ready()
        live, _ = self._registry("2")
        self.say(
            f"[bold]v2 traffic[/]: {live} processes of {APP_NAME} 2 serving and reporting live "
            f"(pids {_pids(v2)}); they map {TABLE}.{NEW_COLUMN}, the trigger keeps {OLD_COLUMN} in step for v1"
        )
        time.sleep(o.pause_s)

        self._phase("contract_refused")
        refused = self._ecm(["upgrade", "--phase", "contract"], expect=(3,))
        held = ((refused.doc or {}).get("contracts") or {}).get("held") or []
        reasons = [str(r) for h in held for r in h.get("reasons", [])]
        names_v1 = any(f"{APP_NAME} 1 " in r for r in reasons)
        self.doc["refusal"] = {"exit_code": refused.code, "reasons": reasons, "names_version_1": names_v1}
        if not names_v1:
            raise OperationalError(f"the contract was refused, but not for version 1: {reasons}")
        self.say(
            f"[bold]contract refused[/] (exit {refused.code}): " + "; ".join(_escape(r) for r in reasons)
        )

        self._phase("stop_v1")
        codes = v1.terminate()
        live, gone = self._registry("1")
        self.doc["stop_v1"] = {
            "signal": "SIGTERM",
            "exit_codes": codes,
            "seconds": round(v1.stop_seconds or 0.0, 3),
            "deregistered": gone,
            "still_live": live,
        }
        if any(codes) or live:
            raise OperationalError(
                f"version 1 did not stop cleanly on SIGTERM: exit codes {codes}, {live} still live"
            )
        self.say(
            f"[bold]SIGTERM[/] to version 1 (pids {_pids(v1)}): exited {'/'.join(map(str, codes))} "
            f"in {v1.stop_seconds or 0:.1f} s, {gone} instances deregistered"
        )

        self._phase("contract")
        contract = self._ecm(["upgrade", "--phase", "contract"])
        done = ((contract.doc or {}).get("contracts") or {}).get("applied") or []
        self.doc["contract"] = {
            "applied": bool(done),
            "exit_code": contract.code,
            "seconds": round(contract.seconds, 2),
        }
        if not done:
            raise OperationalError(f"{contract.display} applied no contract")
        self.say(
            f"[bold]contract applied[/] in {contract.seconds:.1f} s: {TABLE}.{OLD_COLUMN} dropped "
            f"while version 2 kept serving"
        )

        self._phase("v2_only")
        time.sleep(o.pause_s / 2)
        v2.terminate()
        self._final_schema()

    # -- steps --------------------------------------------------------------------------

    def _server(self) -> None:
        from sqlalchemy import text

        from ..db.engine import create
        from ..urls import is_embedded, normalize, redact

        given = self.options.database_url
        cold: bool | None = None
        directory: Path | None = None
        if is_embedded(given):
            from ..embedded import default_dir
            from ..settings import get

            directory = Path(given.partition(":")[2] or get("ECM_EMBEDDED_DIR") or default_dir()).expanduser()
            cold = not (directory / "PG_VERSION").exists()
            if cold:  # initdb takes a few seconds: say so before it starts
                self.say(
                    f"[bold]server[/]: first run of the embedded PostgreSQL: initdb in {_escape(str(directory))}"
                )
        started = time.monotonic()
        self.server_url = normalize(given)
        self.admin = create(self.server_url, isolation_level="AUTOCOMMIT", poolclass=_null_pool())
        with self.admin.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar_one()).split()[0]
        seconds = time.monotonic() - started
        self.doc["server"] = {
            "url": redact(self.server_url),
            "version": version,
            "embedded": cold is not None,
            "cold_start": cold,
            "startup_s": round(seconds, 2),
        }
        where = f"embedded, data in {directory}" if directory is not None else redact(self.server_url)
        self.say(f"[bold]server[/]: PostgreSQL {version} ({_escape(where)}) ready in {seconds:.1f} s")

    def _create_database(self) -> None:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        from ..db.engine import create

        assert self.admin is not None
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.database}"'))
        self.database_created = True
        self.demo_url = (
            make_url(self.server_url).set(database=self.database).render_as_string(hide_password=False)
        )
        self.engine = create(self.demo_url, pool_size=2)

    def _create_project(self) -> None:
        from alembic import command
        from alembic.config import Config

        self.tmp = Path(tempfile.mkdtemp(prefix="ecm-demo-"))
        self.run_dir = self.tmp / "run"
        self.run_dir.mkdir()
        if self.options.keep is not None:
            self.project = self.options.keep.expanduser().resolve()
            self.project.mkdir(parents=True, exist_ok=True)
        else:
            self.project = self.tmp / "project"
            self.project.mkdir()
        self.doc["project"] = str(self.project)
        self.doc["kept"] = self.options.keep is not None
        quiet = io.StringIO()
        ini = self.project / "alembic.ini"
        with contextlib.redirect_stdout(quiet):  # alembic's messages would break the --json contract
            command.init(Config(str(ini), stdout=quiet), str(self.project / "migrations"), template="generic")
        url = self.demo_url.replace("%", "%%")
        lines = [
            f"sqlalchemy.url = {url}" if line.startswith("sqlalchemy.url") else line
            for line in ini.read_text().splitlines()
        ]
        ini.write_text("\n".join(lines) + "\n")
        (self.project / "migrations" / "versions" / "0001_create_accounts.py").write_text(REVISION_0001)
        # Applied without the ini file, so env.py's fileConfig() leaves our logging alone.
        cfg = Config(stdout=quiet)
        cfg.set_main_option("script_location", str(self.project / "migrations"))
        cfg.set_main_option("sqlalchemy.url", url)
        with contextlib.redirect_stdout(quiet):
            command.upgrade(cfg, "head")

    def _seed(self) -> None:
        from sqlalchemy import text

        from ..db import control

        assert self.engine is not None
        started = time.monotonic()
        with self.engine.connect() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {TABLE} ({OLD_COLUMN}, email, balance) "
                    "SELECT 'customer ' || g, 'customer' || g || '@example.com', (g * 37) % 1000 "
                    "FROM generate_series(1, :rows) AS g"
                ),
                {"rows": self.options.rows},
            )
            conn.commit()
            conn.execute(text(f"ANALYZE {TABLE}"))
            conn.commit()
            control.ensure(conn)  # `ecm init`
            conn.commit()
        self.say(
            f"[bold]setup[/]: database {self.database}, Alembic project {_escape(str(self.project))}, "
            f"{TABLE} with {self.options.rows:,} rows ({time.monotonic() - started:.1f} s)"
        )

    def _ecm(self, args: list[str], *, tty: bool = False, expect: tuple[int, ...] = (0,)) -> EcmRun:
        assert self.project is not None
        result = ecm(
            args, cwd=self.project, config=self.project / "alembic.ini", url=_libpq(self.demo_url), tty=tty
        )
        self.steps.append(
            {
                "command": result.display,
                "phase": self.timeline[-1]["name"] if self.timeline else None,
                "exit_code": result.code,
                "seconds": round(result.seconds, 2),
            }
        )
        if result.code not in expect:
            raise OperationalError(f"{result.display} exited {result.code}: {result.failure()}")
        return result

    def _registry(self, version: str) -> tuple[int, int]:
        """(live, deregistered) instances of the demo app's ``version``, as the guard sees them."""
        from ..guard import parse_ttl, state
        from ..live import registry
        from ..settings import get

        assert self.engine is not None
        with self.engine.connect() as conn:
            rows = registry.read(conn, recent_s=None)
            conn.rollback()
        ttl = parse_ttl(get("ECM_LIVE_TTL") or None)
        states = [
            state(registry.to_instance(r), ttl)
            for r in rows
            if r["app"] == APP_NAME and r["version"] == version
        ]
        return states.count("live"), states.count("deregistered")

    def _final_schema(self) -> None:
        from sqlalchemy import text

        assert self.engine is not None
        with self.engine.connect() as conn:
            cols = [
                str(r[0])
                for r in conn.execute(
                    text(
                        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                    ),
                    {"t": f"public.{TABLE}"},
                )
            ]
            count = conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
            conn.rollback()
        self.doc["final_columns"] = cols
        self.doc["rows_after"] = int(count)
        if OLD_COLUMN in cols or NEW_COLUMN not in cols:
            raise OperationalError(f"unexpected final columns of {TABLE}: {cols}")

    # -- phases, cleanup, summary -------------------------------------------------------

    def _phase(self, name: str | None) -> None:
        now = time.monotonic()
        if self.timeline and "duration_s" not in self.timeline[-1]:
            self.timeline[-1]["duration_s"] = round(now - self.timeline[-1]["_t"], 2)
        if name is None:
            return
        self.timeline.append({"name": name, "label": LABELS[name], "_t": now})
        if self.run_dir is not None:
            path = self.run_dir / "phase"
            tmp = self.run_dir / "phase.tmp"
            tmp.write_text(name)
            os.replace(tmp, path)

    def _cleanup(self) -> None:
        cleanup: dict[str, Any] = {}
        for fleet in self.fleets.values():
            with contextlib.suppress(Exception):
                fleet.kill()
        if self.engine is not None:
            self.engine.dispose()
        keep = self.options.keep is not None
        if self.database_created and self.admin is not None and not keep:
            cleanup["database_dropped"] = _drop_database(self.admin, self.database)
        if self.admin is not None:
            self.admin.dispose()
        # Stats are read before the run directory goes.
        self.stats = {v: f.stats() for v, f in self.fleets.items()}
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            cleanup["temp_removed"] = not self.tmp.exists()
        if keep:
            cleanup["kept"] = {
                "project": str(self.project),
                "database_url": _libpq(self.demo_url) if self.demo_url else None,
                "server_url": _libpq(self.server_url) if self.server_url else None,
            }
        self.doc["cleanup"] = cleanup

    def _summarize(self) -> None:
        from .summary import summarize

        self.doc.update(summarize(self.timeline, self.steps, self.stats))
        self.doc["elapsed_s"] = round(time.monotonic() - self.started, 2)
        self.doc.setdefault("error", None)
        self.doc["ok"] = self.doc["error"] is None and self.doc["errors_total"] == 0


def _drop_database(admin: Engine, name: str) -> bool:
    from sqlalchemy import text

    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            gone = conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name})
            return int(gone.scalar_one()) == 0
    except Exception:
        return False


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def _libpq(url: str) -> str:
    from ..urls import libpq

    return libpq(url)


def _pids(fleet: Fleet) -> str:
    return ", ".join(str(p) for p in fleet.pids)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    from ..errors import first_line

    return first_line(exc)


def _terminate_as_interrupt() -> Any:
    """A SIGTERM to the demo (a CI timeout, `kill`) still stops the fleet and drops the database."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _restore(previous: Any) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
