"""add-foreign-key and add-check as a user meets them: `ecm plan`, `ecm upgrade`, `ecm abort`
against a real server, asserting rows, constraints, indexes, exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from .project import Project, constraints, indexes, make_project

PARENTS = """
CREATE SCHEMA "Other Schema";
CREATE TABLE "Other Schema"."Par Ents" ("K 1" int, "K 2" text, label text, CONSTRAINT pk_pair UNIQUE ("K 1", "K 2"));
INSERT INTO "Other Schema"."Par Ents" SELECT g, 'k' || g, 'p' || g FROM generate_series(1, 20) g;
CREATE TABLE parents (id bigint PRIMARY KEY, code text UNIQUE, n int);
INSERT INTO parents SELECT g, 'c' || g, g FROM generate_series(1, 20) g;
CREATE TABLE kids (
    id bigserial PRIMARY KEY,
    parent_id bigint,
    strict_parent bigint NOT NULL DEFAULT 1,
    small_parent int,
    "Pair 1" int,
    "Pair 2" text,
    qty int NOT NULL DEFAULT 0,
    note text
);
INSERT INTO kids (parent_id, "Pair 1", "Pair 2", qty, note)
SELECT g % 20 + 1, g % 20 + 1, 'k' || (g % 20 + 1), g, 'n' || g FROM generate_series(1, 200) g;
INSERT INTO kids (parent_id, note) VALUES (NULL, 'no parent');
"""


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    p = make_project(tmp_path / "app", database_url)
    with p.connect() as conn:
        conn.execute(PARENTS)
    return p


def ok(project: Project, *args: str) -> str:
    """stdout (the --json document), or with plain output what ecm says on stderr."""
    result = project.ecm(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout if "--json" in args else result.stdout + result.stderr


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ecm: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def written(project: Project) -> list[Path]:
    return [*project.versions(), *project.contracts()]


# -- add-foreign-key ----------------------------------------------------------------------------


def test_fk_expand_contract_abort(project: Project) -> None:
    doc = json.loads(
        ok(project, "plan", "add-foreign-key", "kids", "parent_id", "--references", "parents", "--json")
    )
    assert [p["name"] for p in doc["phases"]] == ["expand", "contract"]
    assert any("ON DELETE NO ACTION" in n for n in doc["notes"])
    ok(project, "upgrade", "--phase", "expand")
    with project.connect() as conn:
        assert constraints(conn, "kids")["kids_parent_id_fkey"] == (
            "FOREIGN KEY (parent_id) REFERENCES parents(id) NOT VALID",
            False,
        )
        assert "kids_parent_id_idx" in indexes(conn, "kids")
        # Enforced at once for every writer: an orphan insert fails, a referenced parent stays.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO kids (parent_id) VALUES (999)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("DELETE FROM parents WHERE id = 1")
    ok(project, "upgrade", "--allow-no-reporters")
    with project.connect() as conn:
        assert constraints(conn, "kids")["kids_parent_id_fkey"][1] is True
    aborted = json.loads(ok(project, "abort", doc["plan_id"], "--allow-no-reporters", "--json"))
    assert aborted["state"] == "aborted"
    with project.connect() as conn:
        assert "kids_parent_id_fkey" not in constraints(conn, "kids")
        assert "kids_parent_id_idx" not in indexes(conn, "kids")


def test_fk_cascade_applies_to_old_code_from_the_expand(project: Project) -> None:
    """A NOT VALID key with ON DELETE CASCADE already deletes children when old code deletes a parent."""
    out = ok(
        project,
        "plan",
        "add-foreign-key",
        "kids",
        "parent_id",
        "--references",
        "parents",
        "--on-delete",
        "cascade",
    )
    assert "deletes the rows of public.kids that reference it (ON DELETE CASCADE)" in " ".join(out.split())
    with project.connect() as conn:
        before = conn.execute("SELECT count(*) FROM kids WHERE parent_id = 3").fetchone()
        assert before is not None and before[0] == 10
    ok(project, "upgrade", "--phase", "expand")
    with project.connect() as conn:
        # What old code does (it knows nothing of the key): delete a parent row.
        conn.execute("DELETE FROM parents WHERE id = 3")
        assert conn.execute("SELECT count(*) FROM kids WHERE parent_id = 3").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM kids").fetchone() == (191,)


def test_fk_orphans_refused_at_plan_time_with_keys(project: Project) -> None:
    with project.connect() as conn:
        conn.execute("INSERT INTO kids (id, parent_id) VALUES (1001, 77), (1002, 78)")
    result = project.ecm("plan", "add-foreign-key", "kids", "parent_id", "--references", "parents")
    assert result.returncode == 1, result.stderr
    assert "2 row(s), e.g. id=1001: parent_id=77, id=1002: parent_id=78; nothing was changed" in result.stderr
    assert written(project) == []


def test_fk_orphans_written_after_the_plan_stop_the_expand(project: Project) -> None:
    ok(project, "plan", "add-foreign-key", "kids", "parent_id", "--references", "parents")
    with project.connect() as conn:
        conn.execute("INSERT INTO kids (id, parent_id) VALUES (1001, 77)")
    result = project.ecm("upgrade", "--phase", "expand")
    assert result.returncode == 1, result.stderr
    assert "1 row(s), e.g. id=1001: parent_id=77" in result.stderr
    with project.connect() as conn:
        assert "kids_parent_id_fkey" not in constraints(conn, "kids")
        assert "kids_parent_id_idx" not in indexes(conn, "kids")


def test_fk_hostile_names_schema_and_unique_columns(project: Project) -> None:
    ok(
        project,
        "plan",
        "add-foreign-key",
        "kids",
        "Pair 1",
        "Pair 2",
        "--references",
        '"Other Schema"."Par Ents"("K 1", "K 2")',
        "--name",
        "Kids → Pairs",
        "--on-update",
        "cascade",
    )
    ok(project, "upgrade", "--phase", "expand")
    ok(project, "upgrade", "--allow-no-reporters")
    with project.connect() as conn:
        definition, valid = constraints(conn, "kids")["Kids → Pairs"]
        assert valid
        assert definition == (
            'FOREIGN KEY ("Pair 1", "Pair 2") REFERENCES "Other Schema"."Par Ents"("K 1", "K 2") ON UPDATE CASCADE'
        )
        assert "kids_Pair 1_Pair 2_idx" in indexes(conn, "kids")


def test_fk_existing_index_or_no_index_builds_none(project: Project) -> None:
    with project.connect() as conn:
        conn.execute("CREATE INDEX kids_lead ON kids (parent_id, qty)")
        conn.execute("UPDATE kids SET note = 'c' || parent_id")
    doc = json.loads(
        ok(
            project,
            "plan",
            "add-foreign-key",
            "kids",
            "parent_id",
            "--references",
            "parents",
            "--json",
            "--dry-run",
        )
    )
    assert any("index kids_lead already leads with parent_id" in n for n in doc["notes"])
    assert not any("CREATE INDEX" in s["sql"] for p in doc["phases"] for s in p["steps"])
    doc = json.loads(
        ok(
            project,
            "plan",
            "add-foreign-key",
            "kids",
            "note",
            "--references",
            "parents(code)",
            "--no-index",
            "--json",
            "--dry-run",
        )
    )
    assert not any("CREATE INDEX" in s["sql"] for p in doc["phases"] for s in p["steps"])
    assert any("--no-index" in n for n in doc["notes"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ("kids", "small_parent", "--references", "parents"),
            "column public.kids.small_parent is integer but public.parents.id is bigint",
        ),
        (("kids", "parent_id", "--references", "parents(n)"), "is not its primary key or a unique"),
        (("kids", "strict_parent", "--references", "parents", "--on-delete", "set null"), "is NOT NULL"),
        (("kids", "parent_id", "--references", "parents", "--on-delete", "nothing"), "is not an action"),
        (("kids", "parent_id", "--references", "parents(id) ON DELETE CASCADE"), "(nothing else)"),
        (("kids", "parent_id", "--references", "db.s.parents"), "names a database"),
        (("kids", "parent_id", "--references", '"Parents"'), "does not exist"),
        (("kids", "parent_id", "--references", "parents", "--name", "kids_pkey"), "already exists"),
    ],
)
def test_fk_bad_input(project: Project, args: tuple[str, ...], fragment: str) -> None:
    result = project.ecm("plan", "add-foreign-key", *args)
    assert result.returncode == 2, result.stderr
    assert fragment in error_line(result.stderr)
    assert written(project) == []


def test_fk_twice_is_refused(project: Project) -> None:
    ok(project, "plan", "add-foreign-key", "kids", "parent_id", "--references", "parents")
    ok(project, "upgrade", "--phase", "expand")
    ok(project, "upgrade", "--allow-no-reporters")
    again = project.ecm(
        "plan", "add-foreign-key", "kids", "parent_id", "--references", "parents", "--name", "x"
    )
    assert again.returncode == 2
    assert "already makes (parent_id) of public.kids reference public.parents" in error_line(again.stderr)


# -- add-check ----------------------------------------------------------------------------------


def test_check_expand_contract_abort(project: Project) -> None:
    doc = json.loads(ok(project, "plan", "add-check", "kids", "qty ok", "qty >= 0 AND note <> ''", "--json"))
    ok(project, "upgrade", "--phase", "expand")
    with project.connect() as conn:
        assert constraints(conn, "kids")["qty ok"] == (
            "CHECK (((qty >= 0) AND (note <> ''::text))) NOT VALID",
            False,
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE kids SET qty = -1 WHERE id = 1")
        conn.execute("INSERT INTO kids (qty, note) VALUES (1, NULL)")  # NULL passes a check
    ok(project, "upgrade", "--allow-no-reporters")
    with project.connect() as conn:
        assert constraints(conn, "kids")["qty ok"][1] is True
    ok(project, "abort", doc["plan_id"], "--allow-no-reporters")
    with project.connect() as conn:
        assert "qty ok" not in constraints(conn, "kids")


def test_check_violations_refused_at_plan_time_with_keys(project: Project) -> None:
    result = project.ecm("plan", "add-check", "kids", "qty_small", "qty < 198")
    assert result.returncode == 1, result.stderr
    assert "3 row(s), e.g. id=198, id=199, id=200; nothing was changed" in result.stderr
    assert written(project) == []


def test_not_valid_check_blocks_updates_of_violating_rows(project: Project) -> None:
    """Why violations are refused first: once a NOT VALID check exists, a row that violates it
    cannot be updated at all, not even on another column (PostgreSQL checks every row written)."""
    with project.connect() as conn:
        conn.execute("ALTER TABLE kids ADD CONSTRAINT by_hand CHECK (qty < 198) NOT VALID")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE kids SET note = 'other column' WHERE id = 199")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("kids", "kids_pkey", "qty > 0"), "constraint kids_pkey already exists"),
        (("kids", "c", "nosuch > 0"), "reads column nosuch, which does not exist"),
        (("kids", "c", "qty > (SELECT 1)"), "sub-query"),
        (("kids", "c", "qty > 0) OR (true"), "not a single SQL expression"),
        (("kids", "c", "count(*) > 0"), "aggregate"),
    ],
)
def test_check_bad_input(project: Project, args: tuple[str, ...], fragment: str) -> None:
    result = project.ecm("plan", "add-check", *args)
    assert result.returncode == 2, result.stderr
    assert fragment in error_line(result.stderr)
    assert written(project) == []


def test_expression_the_server_rejects_is_bad_input(project: Project) -> None:
    """What only the server can read (a type error, an unknown function) is still the input's
    fault: exit 2 with the server's reason, nothing written."""
    for expression, reason in (
        ("qty > 'abc'", "invalid input syntax for type integer"),
        ("nosuchfn(qty) > 0", "function nosuchfn(integer) does not exist"),
    ):
        result = project.ecm("plan", "add-check", "kids", "qty_bad", expression)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("ecm: error:")]
        assert len(lines) == 1 and "the server rejects it" in lines[0] and reason in lines[0], result.stderr
    assert written(project) == []
