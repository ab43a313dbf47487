"""Which database a command acts on: the one the project's ``env.py`` connects to.

Real projects compute their URL in ``env.py`` (pydantic settings, Flask's
``SQLALCHEMY_DATABASE_URI``) and overwrite ``sqlalchemy.url``; their ``alembic.ini``
holds a placeholder. If ecm connected to its own idea of the database while the
revisions it runs went wherever ``env.py`` sends them, it would report work it never
saw. So ecm runs ``env.py`` the way ``alembic current`` does (online, nothing migrated,
nothing written: ``dont_mutate``), takes the connection Alembic is configured with, and
derives its own psycopg 3 URL from it. An explicit URL (``--database-url`` /
``ECM_DATABASE_URL``) is handed to ``env.py`` as ``sqlalchemy.url`` in the project's own
driver; if ``env.py`` still connects elsewhere, the command is refused before anything
changes. Databases are compared by what the server says (database name and oid, server
start time), not by URL spelling: ``localhost`` and ``127.0.0.1`` are the same server,
and two servers with the same host name behind different tunnels are not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..log import get_logger

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection

    from .project import Project

log = get_logger("expandcontract.target")

_IDENTITY_SQL = (
    "SELECT current_database(), "
    "(SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())::text, "
    "pg_catalog.pg_postmaster_start_time()::text"
)


@dataclass(frozen=True)
class Identity:
    """A database as the server names it."""

    database: str
    oid: str
    started: str

    def same(self, other: Identity) -> bool:
        return (self.database, self.oid, self.started) == (other.database, other.oid, other.started)


def identity(conn: Connection) -> Identity:
    row = conn.exec_driver_sql(_IDENTITY_SQL).one()
    return Identity(str(row[0]), str(row[1]), str(row[2]))


@dataclass
class EnvConnection:
    url: URL
    identity: Identity
    version_table: str = "alembic_version"
    version_table_schema: str | None = None


def probe(project: Project) -> list[EnvConnection]:
    """Run the project's env.py online, migrating nothing; the connection(s) it configured.

    Several distinct databases mean a multi-database env.py; none means it never
    configured a connection (an env.py that only renders SQL).
    """
    from alembic.runtime.environment import EnvironmentContext

    from ..db.control import preserved_alembic_proxies
    from ..db.engine import bind_url

    seen: list[EnvConnection] = []

    def capture(rev: Any, context: Any) -> list[Any]:
        conn = getattr(context, "connection", None)
        if conn is not None:
            seen.append(
                EnvConnection(
                    bind_url(conn),
                    identity(conn),
                    str(getattr(context, "version_table", None) or "alembic_version"),
                    getattr(context, "version_table_schema", None),
                )
            )
        return []

    script = project.script()
    # env.py's fileConfig() switches Alembic's INFO lines on ("Context impl PostgresqlImpl."); for a
    # lookup that migrates nothing they are noise on every command, so INFO and below stay quiet.
    # (`ecm -v` sets Alembic's logger to INFO: then they stay.)
    quiet = logging.root.manager.disable < logging.INFO and not logging.getLogger("alembic").isEnabledFor(
        logging.INFO
    )
    if quiet:
        logging.disable(logging.INFO)
    try:
        # Inside a running Alembic command (a contract lineage run by hand), leaving our
        # EnvironmentContext would remove that command's `context`/`op` proxies.
        with (
            preserved_alembic_proxies(),
            EnvironmentContext(project.config, script, fn=capture, as_sql=False, dont_mutate=True),
        ):
            script.run_env()
    finally:
        if quiet:
            logging.disable(logging.NOTSET)
    return seen


def resolve(project: Project, explicit: str | None) -> tuple[str, str]:
    """(psycopg 3 URL for ecm's own connections, where it came from)."""
    from ..errors import first_line
    from ..urls import for_driver, is_embedded, normalize, redact, to_psycopg

    if explicit:
        if is_embedded(explicit.strip()):
            explicit = normalize(explicit)
        project.set_url(for_driver(explicit, project.configured_url()))
    try:
        found = probe(project)
    except BadInput:
        raise
    except Exception as exc:
        message = first_line(exc)
        if explicit:
            log.warning(
                "env_probe_failed",
                error=message,
                detail="using the explicit database URL; could not check that env.py connects to the same one",
            )
            return normalize(explicit), "explicit"
        configured = project.configured_url()
        if configured and "application context" not in message:
            log.warning(
                "env_probe_failed",
                error=message,
                detail="using sqlalchemy.url from the Alembic config; env.py may connect elsewhere",
            )
            return normalize(configured), "sqlalchemy.url"
        hint = ""
        if "application context" in message:
            hint = " (a Flask-Migrate project: run `flask ecm …` so env.py has its application)"
        raise BadInput(
            f"cannot tell which database this project uses: its env.py failed ({type(exc).__name__}: "
            f"{message}){hint}; pass --database-url or set ECM_DATABASE_URL"
        ) from exc
    distinct: list[EnvConnection] = []
    for item in found:
        if not any(item.identity.same(d.identity) for d in distinct):
            distinct.append(item)
    if len(distinct) > 1:
        names = ", ".join(d.identity.database for d in distinct)
        raise BadInput(
            f"this project's env.py migrates {len(distinct)} databases ({names}); ecm plans one database at a "
            "time: give it a single-database Alembic config (-c) for the database the table lives in"
        )
    if not distinct:
        if explicit:
            return normalize(explicit), "explicit"
        configured = project.configured_url()
        if configured:
            return normalize(configured), "sqlalchemy.url"
        raise BadInput("no database URL: pass --database-url, set ECM_DATABASE_URL, or set sqlalchemy.url")
    env = distinct[0]
    project.version_table, project.version_table_schema = env.version_table, env.version_table_schema
    if explicit:
        own = normalize(explicit)
        theirs = _identity_of(own)
        if not theirs.same(env.identity):
            raise BadInput(
                f"the database URL given to ecm ({redact(own)}, database {theirs.database}) is not the database "
                f"the project's env.py connects to ({redact(env.url.render_as_string(hide_password=False))}, "
                f"database {env.identity.database}): env.py computes its own URL. Unset ECM_DATABASE_URL / "
                "--database-url to act on env.py's database, or point both at the same one"
            )
        return own, "explicit"
    return to_psycopg(env.url).render_as_string(hide_password=False), "env.py"


def _identity_of(url: str) -> Identity:
    from sqlalchemy import pool

    from ..db.engine import connect, create

    engine = create(url, poolclass=pool.NullPool)
    try:
        with connect(engine) as conn:
            return identity(conn)
    finally:
        engine.dispose()
