"""The service: an AsyncEngine (asyncpg), its LiveReporter, readiness, and the account operations.

Reads, inserts and updates each go through the ORM (``AsyncSession``) or through Core (an
``AsyncConnection``), chosen per request with ``?via=orm|core``, so both paths meet the rename.
With a framework the shape is the same: ``async with service`` in its lifespan, readiness
from ``await schema_ready(...)``; docs/live.md shows FastAPI.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from expandcontract import LiveReporter, schema_ready

from . import VERSION
from .models import Account, accounts, metadata

# The one line that differs between v1 and v2: the column this version reads and writes.
NAME = "name"


class Service:
    def __init__(self, database_url: str, *, heartbeat: float = 10.0) -> None:
        self.engine: AsyncEngine = create_async_engine(database_url, pool_size=5, pool_pre_ping=True)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reports which tables and columns this code maps, so no contract drops them while it runs.
        # It heartbeats on a connection of its own (psycopg 3), never on this engine's pool.
        # The server below handles SIGTERM itself and deregisters once it has drained.
        self.reporter = LiveReporter(
            self.engine,
            app="async-accounts",
            version=VERSION,
            metadata=metadata,
            interval=heartbeat,
            handle_signals=False,
        )

    async def __aenter__(self) -> Service:
        """Register before taking traffic: from here on, what this version maps is held for it."""
        await self.reporter.astart()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.reporter.astop()
        await self.engine.dispose()

    async def health(self) -> tuple[int, dict[str, Any]]:
        """Readiness: 503 while the database lacks a table or column this version maps."""
        missing = await schema_ready(self.engine, metadata)
        return (503 if missing else 200), {"ready": not missing, "version": VERSION, "missing": missing}

    async def get_account(self, account_id: int, via: str) -> dict[str, Any] | None:
        if via == "core":
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(accounts.c.id, accounts.c[NAME]).where(accounts.c.id == account_id)
                    )
                ).first()
            return None if row is None else {"id": row[0], NAME: row[1]}
        async with self.sessions() as session:
            account = await session.get(Account, account_id)
            return None if account is None else {"id": account.id, NAME: getattr(account, NAME)}

    async def list_accounts(self, after: int, limit: int) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(accounts.c.id, accounts.c[NAME])
                .where(accounts.c.id > after)
                .order_by(accounts.c.id)
                .limit(limit)
            )
            return [{"id": r[0], NAME: r[1]} for r in rows]

    async def create_account(self, body: dict[str, Any], via: str) -> dict[str, Any]:
        if via == "core":
            async with self.engine.begin() as conn:
                new_id = (
                    await conn.execute(
                        insert(accounts)
                        .values({NAME: body[NAME], "email": body.get("email")})
                        .returning(accounts.c.id)
                    )
                ).scalar_one()
            return {"id": new_id, NAME: body[NAME]}
        async with self.sessions.begin() as session:
            account = Account(**{NAME: body[NAME]}, email=body.get("email"))
            session.add(account)
            await session.flush()
            return {"id": account.id, NAME: getattr(account, NAME)}

    async def update_account(self, account_id: int, body: dict[str, Any], via: str) -> int:
        """Rows updated (0 or 1)."""
        if via == "core":
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    update(accounts).where(accounts.c.id == account_id).values({NAME: body[NAME]})
                )
                return int(result.rowcount)
        async with self.sessions.begin() as session:
            account = await session.get(Account, account_id)
            if account is None:
                return 0
            setattr(account, NAME, body[NAME])
            return 1


def database_url() -> str:
    url = os.environ["DATABASE_URL"]
    # The application's driver is asyncpg; whatever URL the deploy hands it names the database.
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url
