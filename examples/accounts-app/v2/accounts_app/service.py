"""The service: startup (LiveReporter), a health check (schema_ready) and two endpoints, as plain WSGI.

Dependency-free on purpose (SQLAlchemy and the standard library). With a framework the shape is
the same: start the reporter on startup, stop it on shutdown, answer the readiness probe from
``schema_ready``; docs/live.md shows it with FastAPI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from expandcontract import LiveReporter, schema_ready

from . import VERSION
from .models import Account, metadata

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

# The one line that differs between v1 and v2: the column this version reads and writes.
NAME = "full_name"


class Service:
    def __init__(self, database_url: str, *, heartbeat: float = 10.0) -> None:
        self.engine: Engine = create_engine(database_url, pool_pre_ping=True)
        # Reports which tables and columns this code maps, so no contract drops them while it runs.
        self.reporter = LiveReporter(
            self.engine, app="accounts", version=VERSION, metadata=metadata, interval=heartbeat
        )

    def start(self) -> None:
        """Register before taking traffic: rolling back the expand (dropping `full_name`) is held for us."""
        self.reporter.start()

    def stop(self) -> None:
        self.reporter.stop()
        self.engine.dispose()

    def health(self) -> tuple[int, dict[str, Any]]:
        """Readiness: 503 while the database lacks a table or column this version maps."""
        missing = schema_ready(self.engine, metadata)
        return (503 if missing else 200), {"ready": not missing, "version": VERSION, "missing": missing}

    def list_accounts(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.scalars(select(Account).order_by(Account.id)).all()
            return [{"id": a.id, NAME: getattr(a, NAME), "email": a.email} for a in rows]

    def create_account(self, body: dict[str, Any]) -> dict[str, Any]:
        with Session(self.engine) as session, session.begin():
            account = Account(**{NAME: body[NAME]}, email=body.get("email"))
            session.add(account)
            session.flush()
            return {"id": account.id, NAME: getattr(account, NAME)}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        status, body = 404, {"error": "not found"}
        if path == "/healthz":
            status, body = self.health()
        elif path == "/accounts" and method == "GET":
            status, body = 200, {"accounts": self.list_accounts()}
        elif path == "/accounts" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            status, body = 201, self.create_account(json.loads(environ["wsgi.input"].read(length)))
        payload = json.dumps(body).encode()
        reason = {200: "OK", 201: "Created", 404: "Not Found", 503: "Service Unavailable"}[status]
        start_response(
            f"{status} {reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


def database_url() -> str:
    url = os.environ["DATABASE_URL"]
    # psycopg 3 is the driver expandcontract installs; plain postgresql:// would ask for psycopg2.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
