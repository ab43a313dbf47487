"""Every row of the dual-write trigger's truth table, on a real expanded table."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from .project import make_project

PLAN = "rename_people_name_full_name"


@pytest.fixture
def conn(tmp_path: Path, database_url: str, db: psycopg.Connection) -> psycopg.Connection:
    db.execute(
        "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL DEFAULT 'anon', note text);"
        "INSERT INTO people (id, name) SELECT g, 'p' || g FROM generate_series(1, 20) g"
    )
    p = make_project(tmp_path / "app", database_url)
    assert p.ecm("plan", "rename-column", "people", "name", "full_name").returncode == 0
    result = p.ecm("upgrade", "--phase", "expand")  # backfill deferred: rows 1..20 are not copied yet
    assert result.returncode == 0, result.stderr
    return db


def row(conn: psycopg.Connection, id_: int) -> tuple[object, ...]:
    r = conn.execute("SELECT name, full_name FROM people WHERE id = %s", (id_,)).fetchone()
    assert r is not None
    return tuple(r)


def test_insert_new_side_null_copies_old(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO people (id, name) VALUES (100, 'old code')")
    assert row(conn, 100) == ("old code", "old code")


def test_insert_old_side_null_copies_new(conn: psycopg.Connection) -> None:
    # New code writes only full_name; name is NOT NULL and has a default, and still ends equal.
    conn.execute("INSERT INTO people (id, full_name) VALUES (101, 'new code')")
    assert row(conn, 101) == ("new code", "new code")
    conn.execute("INSERT INTO people (id, name, full_name) VALUES (102, NULL, 'explicit null old')")
    assert row(conn, 102) == ("explicit null old", "explicit null old")


def test_insert_both_set_and_different_new_wins(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO people (id, name, full_name) VALUES (103, 'old', 'new')")
    assert row(conn, 103) == ("new", "new")
    conn.execute("INSERT INTO people (id, name, full_name) VALUES (104, 'same', 'same')")
    assert row(conn, 104) == ("same", "same")


def test_update_only_old_changed_copies_to_new(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE people SET name = 'renamed by old code' WHERE id = 1")
    assert row(conn, 1) == ("renamed by old code", "renamed by old code")


def test_update_only_new_changed_copies_to_old(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE people SET full_name = 'renamed by new code' WHERE id = 2")
    assert row(conn, 2) == ("renamed by new code", "renamed by new code")


def test_update_neither_changed_brings_unbackfilled_row_in_step(conn: psycopg.Connection) -> None:
    """Old code updates an unrelated column of a row the backfill has not reached yet.

    full_name is NULL there and carries CHECK (full_name IS NOT NULL) NOT VALID, which
    PostgreSQL enforces on every row an UPDATE writes: the trigger must fill it first.
    """
    assert row(conn, 3) == ("p3", None)
    conn.execute("UPDATE people SET note = 'touched' WHERE id = 3")
    assert row(conn, 3) == ("p3", "p3")


def test_update_both_changed_and_different_new_wins(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE people SET name = 'old side', full_name = 'new side' WHERE id = 4")
    assert row(conn, 4) == ("new side", "new side")
    conn.execute("UPDATE people SET name = 'both', full_name = 'both' WHERE id = 5")
    assert row(conn, 5) == ("both", "both")


def test_not_null_carried_as_not_valid_check(conn: psycopg.Connection) -> None:
    """The NOT VALID check is enforced on every row written: a writer that bypasses the
    trigger (the backfill's own session) must write the new side itself."""
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute(f"SET LOCAL ecm.backfill = '{PLAN}'")
        conn.execute("UPDATE people SET note = 'x' WHERE id = 6")
    definition = conn.execute(
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conname = %s",
        (f"ecm_{PLAN}_nn",),
    ).fetchone()
    assert definition == ("CHECK ((full_name IS NOT NULL)) NOT VALID", False)


def test_backfill_session_setting_skips_the_trigger(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(f"SET LOCAL ecm.backfill = '{PLAN}'")
        conn.execute("UPDATE people SET name = 'as written', full_name = 'p7' WHERE id = 7")
    assert row(conn, 7) == ("as written", "p7")  # no trigger: the engine writes both sides itself


def test_another_plans_backfill_does_not_skip_the_trigger(conn: psycopg.Connection) -> None:
    """Only this plan's backfill writes both sides itself; another plan's (or an older ecm's 'on')
    leaves this trigger firing, so NEW follows the rows it updates."""
    for value in ("change_type_people_note_bigint", "on"):
        with conn.transaction():
            conn.execute(f"SET LOCAL ecm.backfill = '{value}'")
            conn.execute("UPDATE people SET name = %s WHERE id = 8", (f"by {value}",))
        assert row(conn, 8) == (f"by {value}", f"by {value}")


def test_trigger_only_assigns_to_new_and_cannot_recurse(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE people SET name = name || '!' WHERE id <= 20")
    assert conn.execute("SELECT count(*) FROM people WHERE full_name IS DISTINCT FROM name").fetchone() == (
        0,
    )
