"""ecm's own connections use psycopg 3 whatever URL a project uses; revisions keep the project's driver."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import structlog
import structlog.testing
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from expandcontract.db.engine import bind_url, own_engine
from expandcontract.errors import BadInput
from expandcontract.urls import for_driver, normalize

from .conftest import run_ecm


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgres://u:p@h:6543/db", "postgresql+psycopg://u:p@h:6543/db"),
        (
            "postgresql+psycopg2://u:p%40w@h/db?sslmode=require",
            "postgresql+psycopg://u:p%40w@h/db?sslmode=require",
        ),
        (
            "postgresql+asyncpg://u@h/db?ssl=verify-full&prepared_statement_cache_size=0",
            "postgresql+psycopg://u@h/db?sslmode=verify-full",
        ),
        (
            "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgresql+psycopg://u@/db?host=h1%3A5432&host=h2%3A5433&target_session_attrs=read-write",
        ),
        (
            "postgresql+psycopg2://u@/db?host=/var/run/postgresql&options=-csearch_path%3Dapp&application_name=web",
            "postgresql+psycopg://u@/db?application_name=web&host=%2Fvar%2Frun%2Fpostgresql&options=-csearch_path%3Dapp",
        ),
    ],
)
def test_any_driver_becomes_psycopg3(given: str, expected: str) -> None:
    assert make_url(normalize(given)) == make_url(expected)


def test_parameters_only_another_driver_knows_are_dropped_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Through structlog when something configured it (the CLI), else through stdlib logging.
    with structlog.testing.capture_logs() as events:
        normalize("postgresql+asyncpg://u@h/db?prepared_statement_cache_size=0&ssl=require")
    dropped = {(e["parameter"], e["detail"]) for e in events if e["event"] == "url_parameter_dropped"}
    assert ("prepared_statement_cache_size", "libpq (psycopg 3) does not know it") in dropped
    assert ("ssl", "used as sslmode=require") in dropped
    structlog.reset_defaults()
    with caplog.at_level(logging.INFO, logger="expandcontract.urls"):
        normalize("postgresql+asyncpg://u@h/db?prepared_statement_cache_size=0")
    assert any("prepared_statement_cache_size" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "sqlite:///x.db", "  "])
def test_other_databases_are_bad_input(bad: str) -> None:
    with pytest.raises(BadInput):
        normalize(bad)


def test_a_bare_url_takes_the_projects_driver() -> None:
    assert for_driver("postgresql://u:p@h/db?sslmode=require", "postgresql+asyncpg://x@y/z") == (
        "postgresql+asyncpg://u:p@h/db?ssl=require"
    )
    assert for_driver("postgresql://u@h/db", "postgresql+psycopg2://x@y/z") == "postgresql+psycopg2://u@h/db"
    # The template's placeholder names no driver: psycopg 3, which ecm ships.
    assert (
        for_driver("postgresql://u@h/db", "driver://user:pass@localhost/dbname")
        == "postgresql+psycopg://u@h/db"
    )
    assert (
        for_driver("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://x@y/z")
        == "postgresql+psycopg2://u@h/db"
    )


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "psycopg"])
def test_every_command_accepts_any_drivers_url(database_url: str, driver: str) -> None:
    url = make_url(database_url).set(drivername=f"postgresql+{driver}")
    extra = {"asyncpg": {"prepared_statement_cache_size": "0"}, "psycopg2": {"sslmode": "disable"}}.get(
        driver, {}
    )
    url = url.update_query_dict(extra)
    result = run_ecm("status", "--json", "--database-url", url.render_as_string(hide_password=False))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["control_schema"]["initialized"] is False


def test_the_password_comes_back_from_the_live_connection(database_url: str) -> None:
    """An engine built with its password in connect_args still yields a full URL for ecm's own engine."""
    url = make_url(database_url)
    engine = create_engine(url.set(drivername="postgresql+psycopg2"), connect_args={"password": "s3cret"})
    try:
        with engine.connect() as conn:
            assert bind_url(conn).password == "s3cret"
            mine = own_engine(conn)
            try:
                assert mine.url.drivername == "postgresql+psycopg"
                assert mine.url.password == "s3cret"
                with mine.connect() as own:
                    assert own.exec_driver_sql("SELECT 1").scalar() == 1
            finally:
                mine.dispose()
    finally:
        engine.dispose()


def test_an_async_engine_is_a_bind_too(database_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main() -> str:
        engine = create_async_engine(make_url(database_url).set(drivername="postgresql+asyncpg"))
        try:
            async with engine.connect() as conn:
                sync_url = await conn.run_sync(lambda c: bind_url(c).render_as_string(hide_password=False))
            assert bind_url(engine).drivername == "postgresql+asyncpg"
            return sync_url
        finally:
            await engine.dispose()

    got = asyncio.run(main())
    assert make_url(normalize(got)).database == make_url(database_url).database
