"""The harness gives each test a real server of the expected major version."""

from __future__ import annotations

import os

import psycopg
import pytest

from .conftest import Server


def test_server_major_version_is_what_ci_expects(pg_server: Server) -> None:
    expected = os.environ.get("ECM_EXPECT_PG_MAJOR")
    if not expected:
        pytest.skip("ECM_EXPECT_PG_MAJOR not set (CI sets it for each run)")
    assert pg_server.major == int(expected), (
        f"{pg_server.source} server is {pg_server.major}, expected {expected}"
    )


def test_each_test_gets_a_fresh_database(database_url: str, db: psycopg.Connection) -> None:
    tables = db.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchone()
    assert tables == (0,)
    db.execute("CREATE TABLE leftover (id int)")
