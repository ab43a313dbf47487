"""Views (a view over a view) and a row-level security policy carried through column changes.

rename-column and change-type drop and re-create them in the transaction that needs it;
drop-column refuses them by name. Each phase is checked through the views (rows and
columns), their options, grants and comments, and the policy as a non-owner role.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .project import Project, make_project

DB = psycopg.Connection[tuple[Any, ...]]
NO_REPORTERS = {"ECM_ALLOW_NO_REPORTERS": "1"}
READER = "ecm_dv_reader"

SCHEMA = f"""
DO $$ BEGIN CREATE ROLE {READER}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE "Peo ple" (
    id bigint PRIMARY KEY,
    "Name" varchar(50) NOT NULL,
    owner text NOT NULL,
    n integer NOT NULL
);
INSERT INTO "Peo ple"
SELECT g, 'p' || g, CASE WHEN g % 2 = 0 THEN '{READER}' ELSE 'someone' END, g FROM generate_series(1, 20) g;
CREATE VIEW "V One" WITH (security_barrier = true, check_option = local, security_invoker = true) AS
    SELECT id, "Name", owner, n FROM "Peo ple" WHERE n > 4 AND "Name" <> 'Name';
CREATE VIEW "v Two" WITH (security_invoker = true) AS
    SELECT id, "Name" AS label, n * 2 AS twice FROM "V One" WHERE "Name" LIKE 'p%';
COMMENT ON VIEW "V One" IS 'first view';
COMMENT ON COLUMN "v Two".label IS 'the label';
GRANT USAGE ON SCHEMA public TO {READER};
GRANT SELECT ON "Peo ple", "v Two" TO {READER};
GRANT SELECT, INSERT ON "V One" TO {READER} WITH GRANT OPTION;
ALTER TABLE "Peo ple" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "own rows" ON "Peo ple" AS PERMISSIVE FOR SELECT TO {READER}
    USING (owner = current_user AND "Name" LIKE 'p%' AND n >= 0);
"""

VIEWS = ("V One", "v Two")


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: DB) -> Project:
    db.execute(SCHEMA)
    p = make_project(tmp_path / "app", database_url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    return p


def run(project: Project, *args: str) -> Any:
    result = project.ecm(*args, env=NO_REPORTERS)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def view_state(db: DB) -> dict[str, Any]:
    """Everything a re-created view must keep: columns, options, owner, comments, grants."""
    out: dict[str, Any] = {}
    for name in VIEWS:
        row = db.execute(
            """
            SELECT c.reloptions, pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'), c.relacl::text[],
                   ARRAY(SELECT a.attname || ':' || COALESCE(col_description(c.oid, a.attnum), '')
                         FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 ORDER BY a.attnum)
            FROM pg_class c WHERE c.oid = to_regclass(%s)
            """,
            (f'"{name}"',),
        ).fetchone()
        assert row is not None, name
        out[name] = (sorted(row[0] or []), row[1], row[2], sorted(row[3] or []), row[4])
    return out


def policy_state(db: DB) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT polname, polcmd, polpermissive, polroles::regrole[]::text[], pg_get_expr(polqual, polrelid) "
        "FROM pg_policy WHERE polrelid = '\"Peo ple\"'::regclass"
    ).fetchall()


def through_views(db: DB) -> tuple[list[Any], list[Any], list[str], list[str]]:
    one = db.execute('SELECT * FROM "V One" ORDER BY id').fetchall()
    two = db.execute('SELECT * FROM "v Two" ORDER BY id').fetchall()
    cols_one = [d.name for d in db.execute('SELECT * FROM "V One" LIMIT 0').description or ()]
    cols_two = [d.name for d in db.execute('SELECT * FROM "v Two" LIMIT 0').description or ()]
    return one, two, cols_one, cols_two


def as_reader(db: DB) -> tuple[int, int]:
    """Rows the policy lets the non-owner role see: on the table, and through the invoker view."""
    with db.transaction():
        db.execute(f"SET LOCAL ROLE {READER}")
        table = db.execute('SELECT count(*) FROM "Peo ple"').fetchone()
        view = db.execute('SELECT count(*) FROM "v Two"').fetchone()
    assert table is not None and view is not None
    return int(table[0]), int(view[0])


def assert_unchanged(db: DB, before: dict[str, Any]) -> None:
    one, two, c1, c2 = through_views(db)
    assert (c1, c2) == (["id", "Name", "owner", "n"], ["id", "label", "twice"])
    assert [r[0] for r in one] == list(range(5, 21)) and [r[1] for r in one] == [
        f"p{i}" for i in range(5, 21)
    ]
    assert [(r[0], r[1], int(r[2])) for r in two] == [(i, f"p{i}", 2 * i) for i in range(5, 21)]
    assert view_state(db) == before["views"]
    assert as_reader(db) == (10, 8)


def snapshot(db: DB) -> dict[str, Any]:
    return {"views": view_state(db), "policies": policy_state(db)}


def view_definitions(db: DB) -> list[str]:
    return [db.execute("SELECT pg_get_viewdef(to_regclass(%s))", (f'"{v}"',)).fetchone()[0] for v in VIEWS]  # type: ignore[index]


def test_rename_column_carries_views_and_policy(project: Project, db: DB) -> None:
    before = snapshot(db)
    definitions = view_definitions(db)
    doc = json.loads(run(project, "plan", "rename-column", "Peo ple", "Name", "Full Name", "--json").stdout)
    assert_unchanged(db, before)
    run(project, "upgrade", "--phase", "expand")
    assert_unchanged(db, before)
    run(project, "upgrade", "--phase", "backfill")
    assert_unchanged(db, before)

    script = run(project, "upgrade", "--sql", "--phase", "contract").stdout
    assert 'CREATE VIEW public."V One"' in script and 'CREATE POLICY "own rows"' in script

    run(project, "upgrade")
    assert "Name" not in [
        r[0]
        for r in db.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = '\"Peo ple\"'::regclass AND NOT attisdropped"
        ).fetchall()
    ]
    assert_unchanged(db, before)  # the views keep their output names: readers see no change
    assert '"Full Name" AS "Name"' in view_definitions(db)[0]
    assert '"Full Name"' in policy_state(db)[0][4]
    # New code writes only the new column: the views and the policy read it.
    db.execute("""INSERT INTO "Peo ple" (id, "Full Name", owner, n) VALUES (30, 'p30', %s, 30)""", (READER,))
    assert through_views(db)[1][-1][:2] == (30, "p30")
    assert as_reader(db) == (11, 9)
    db.execute('DELETE FROM "Peo ple" WHERE id = 30')

    # The contract's downgrade gives back the original definitions.
    result = project.alembic("-n", "ecm_contracts", "downgrade", f"{doc['plan_id']}@base")
    assert result.returncode == 0, result.stderr[-4000:]
    assert view_definitions(db) == definitions
    assert policy_state(db) == before["policies"]
    assert_unchanged(db, before)
    aborted = project.ecm("abort", doc["plan_id"], "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr[-4000:]
    assert view_definitions(db) == definitions
    assert snapshot(db) == before


def test_change_type_same_name_recreates_views_in_the_swap(project: Project, db: DB) -> None:
    before = snapshot(db)
    definitions = view_definitions(db)
    doc = json.loads(run(project, "plan", "change-type", "Peo ple", "n", "bigint", "--json").stdout)
    run(project, "upgrade", "--phase", "expand")
    assert_unchanged(db, before)
    run(project, "upgrade", "--phase", "backfill")
    assert_unchanged(db, before)
    run(project, "upgrade")
    assert_unchanged(db, before)
    types = db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attname IN ('n', 'twice') "
        "AND attrelid IN ('\"Peo ple\"'::regclass, '\"V One\"'::regclass, '\"v Two\"'::regclass) ORDER BY attrelid"
    ).fetchall()
    assert [t[0] for t in types] == ["bigint", "bigint", "bigint"]  # the views' output type follows
    assert policy_state(db) == before["policies"]
    aborted = project.ecm("abort", doc["plan_id"], "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr[-4000:]
    assert view_definitions(db) == definitions
    assert snapshot(db) == before
    assert_unchanged(db, before)


def test_change_type_rename_to_and_in_place(project: Project, db: DB) -> None:
    before = snapshot(db)
    doc = json.loads(
        run(
            project, "plan", "change-type", "Peo ple", "n", "numeric(12,2)", "--rename-to", "N 2", "--json"
        ).stdout
    )
    run(project, "upgrade", "--phase", "backfill")
    assert_unchanged(db, before)
    run(project, "upgrade")
    one, _, c1, c2 = through_views(db)
    assert (c1, c2) == (["id", "Name", "owner", "n"], ["id", "label", "twice"])
    assert str(one[0][3]) == "5.00" and as_reader(db) == (10, 8)
    assert view_state(db) == before["views"]
    aborted = project.ecm("abort", doc["plan_id"], "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr[-4000:]
    assert snapshot(db) == before
    assert_unchanged(db, before)

    # In place (varchar longer): the ALTER TYPE itself needs the views out of the way.
    doc = json.loads(run(project, "plan", "change-type", "Peo ple", "Name", "varchar(80)", "--json").stdout)
    assert [p["name"] for p in doc["phases"]] == ["contract"]
    run(project, "upgrade")
    assert_unchanged(db, before)
    aborted = project.ecm("abort", doc["plan_id"], "--allow-no-reporters", "--json")
    assert aborted.returncode == 0, aborted.stderr[-4000:]
    assert snapshot(db) == before


def test_offline_script_runs_in_psql(project: Project, db: DB, database_url: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    before = snapshot(db)
    run(project, "plan", "rename-column", "Peo ple", "Name", "Full Name")
    run(project, "init")
    script = run(project, "upgrade", "--sql").stdout
    ran = subprocess.run(
        [psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-", database_url],
        input=script,
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert ran.returncode == 0, ran.stderr[-4000:]
    assert_unchanged(db, before)
    assert '"Full Name"' in view_definitions(db)[0]


def test_drop_column_and_materialized_views_are_refused_by_name(project: Project, db: DB) -> None:
    dropped = project.ecm("plan", "drop-column", "Peo ple", "Name", env=NO_REPORTERS)
    assert dropped.returncode == 2
    assert '"V One"' in dropped.stderr
    db.execute('ALTER TABLE "Peo ple" ADD COLUMN secret text')
    db.execute('CREATE POLICY "by secret" ON "Peo ple" FOR UPDATE USING (secret IS NULL)')
    policy = project.ecm("plan", "drop-column", "Peo ple", "secret", env=NO_REPORTERS)
    assert policy.returncode == 2 and "by secret" in policy.stderr
    db.execute('CREATE MATERIALIZED VIEW "M v" AS SELECT id, n FROM "Peo ple"')
    for args in (("rename-column", "Peo ple", "n", "m"), ("change-type", "Peo ple", "n", "bigint")):
        refused = project.ecm("plan", *args, env=NO_REPORTERS)
        assert refused.returncode == 2, refused.stderr
        assert '"M v"' in refused.stderr and "materialized" in refused.stderr
    assert project.versions() == [p for p in project.versions() if "base" in p.name]


def test_rename_in_view_by_scope_not_by_text() -> None:
    """Pure: only the table's column moves; literals, other tables' columns of the same name and
    shadowing aliases are left alone; each renamed output keeps its name."""
    from expandcontract.errors import BadInput
    from expandcontract.sql.views import rename_in_policy, rename_in_view

    sql = rename_in_view(
        "SELECT a.id, a.name, o.name AS oname, 'a.name' AS lit FROM public.t a JOIN o ON o.name = a.name "
        "WHERE EXISTS (SELECT 1 FROM o a WHERE a.name = 'x')",
        "public",
        "t",
        "name",
        "Full Name",
        view="v",
    )
    assert sql == (
        "SELECT a.id, a.\"Full Name\" AS name, o.name AS oname, 'a.name' AS lit FROM public.t AS a "
        "INNER JOIN o ON o.name = a.\"Full Name\" WHERE EXISTS (SELECT 1 FROM o AS a WHERE a.name = 'x')"
    )
    with pytest.raises(BadInput, match="unqualified"):
        rename_in_view("SELECT name FROM t, o", "public", "t", "name", "n2", view="v")
    assert rename_in_policy("(owner = CURRENT_USER)", "public", "t", "name", "n2", policy="p") == (
        "(owner = CURRENT_USER)"
    )
