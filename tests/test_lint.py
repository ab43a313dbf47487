"""`ecm lint`: real Alembic projects with hand-written revisions, linted by the real CLI.

Rendering is offline, so most projects here point at a database that does not exist: a lint
that tried to connect would fail. Only ecm's own plan needs a server (its facts come from the
catalog).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import Result
from .project import Project, make_project

#: No such database: lint must never connect.
NOWHERE = "postgresql://postgres@127.0.0.1:5432/ecm_lint_no_such_database"

TEMPLATE = '''"""{doc}

Revision ID: {rev}
Revises: {down}
"""

from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''

BASE = """
op.create_table(
    "orgs",
    sa.Column("id", sa.BigInteger(), primary_key=True),
)
op.create_table(
    "accounts",
    sa.Column("id", sa.BigInteger(), primary_key=True),
    sa.Column("name", sa.Text()),
    sa.Column("org_id", sa.BigInteger()),
)
op.create_index("accounts_name_idx", "accounts", ["name"])
op.create_foreign_key("accounts_org_fk", "accounts", "orgs", ["org_id"], ["id"])
op.add_column("accounts", sa.Column("email", sa.Text(), nullable=False))
"""

TIMEOUT = "op.execute(\"SET lock_timeout = '2s'\")\n"

#: rule id -> (the revision's upgrade body, the text on the line the finding points to)
RULE_CASES: dict[str, tuple[str, str]] = {
    "add-column-not-null": (
        'op.add_column("accounts", sa.Column("nick", sa.Text(), nullable=False))',
        "op.add_column",
    ),
    "add-column-volatile-default": (
        'op.add_column(\n    "accounts",\n    sa.Column("token", sa.Uuid(), server_default=sa.text("gen_random_uuid()")),\n)',
        "op.add_column(",
    ),
    "alter-column-type": ('op.alter_column("accounts", "name", type_=sa.String(100))', "op.alter_column"),
    "set-not-null-scan": ('op.alter_column("accounts", "name", nullable=False)', "op.alter_column"),
    "rename-column": ('op.alter_column("accounts", "name", new_column_name="full_name")', "op.alter_column"),
    "rename-table": ('op.rename_table("accounts", "users")', "op.rename_table"),
    "drop-column-early": ('op.drop_column("accounts", "name")', "op.drop_column"),
    "drop-table-early": ('op.drop_table("orgs")', "op.drop_table"),
    "create-index-blocking": (
        'op.create_index("accounts_org_idx", "accounts", ["org_id"])',
        "op.create_index",
    ),
    "drop-index-blocking": ('op.drop_index("accounts_name_idx", table_name="accounts")', "op.drop_index"),
    "add-foreign-key-validating": (
        'op.create_foreign_key("accounts_org2_fk", "accounts", "orgs", ["org_id"], ["id"])',
        "op.create_foreign_key",
    ),
    "add-check-validating": (
        'op.create_check_constraint("accounts_name_len", "accounts", "length(name) > 0")',
        "op.create_check_constraint",
    ),
    "add-unique-blocking": (
        'op.create_unique_constraint("accounts_name_key", "accounts", ["name"])',
        "op.create_unique_constraint",
    ),
    "unbatched-write": ("op.execute(\"UPDATE accounts SET name = 'x'\")", "UPDATE accounts"),
}

CLEAN = """
op.execute("SET lock_timeout = '2s'")
op.add_column("accounts", sa.Column("nick", sa.Text()))
op.add_column("accounts", sa.Column("level", sa.Integer(), server_default="0", nullable=False))
op.create_check_constraint(
    "accounts_nick_len", "accounts", "length(nick) > 0", postgresql_not_valid=True
)
op.create_foreign_key(
    "accounts_org3_fk", "accounts", "orgs", ["org_id"], ["id"], postgresql_not_valid=True
)
op.create_check_constraint(
    "accounts_name_nn", "accounts", "name IS NOT NULL", postgresql_not_valid=True
)
with op.get_context().autocommit_block():
    op.create_index(
        "accounts_nick_idx", "accounts", ["nick"], unique=True, postgresql_concurrently=True
    )
    op.execute("ALTER TABLE accounts VALIDATE CONSTRAINT accounts_name_nn")
op.execute("SET lock_timeout = '2s'")
op.alter_column("accounts", "name", nullable=False)
op.execute("ALTER TABLE accounts ADD CONSTRAINT accounts_nick_key UNIQUE USING INDEX accounts_nick_idx")
op.execute("UPDATE accounts SET nick = name WHERE id BETWEEN 1 AND 1000")
"""


def write(project: Project, rev: str, down: str | None, body: str, doc: str = "") -> Path:
    path = project.root / "migrations" / "versions" / f"{rev}_{doc.replace(' ', '_') or 'rev'}.py"
    text = TEMPLATE.format(doc=doc or rev, rev=rev, down=down, body=textwrap.indent(body.strip(), "    "))
    path.write_text(text)
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[nth - 1]


def rel(path: Path) -> str:
    return path.relative_to(path.parents[2]).as_posix()


def lint(project: Project, *args: str) -> tuple[Result, dict[str, Any]]:
    result = project.ecm("lint", *args, "--format", "json")
    return result, json.loads(result.stdout) if result.stdout.strip() else {}


def found(document: dict[str, Any], revision: str | None = None) -> list[tuple[str, int]]:
    return [
        (f["rule"], f["line"]) for f in document["findings"] if revision is None or f["revision"] == revision
    ]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `alembic init` per module (it costs a subprocess); each test copies it."""
    project = make_project(tmp_path_factory.mktemp("lint") / "app", NOWHERE)
    write(project, "a0", None, BASE, "base")
    return project.root


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Project:
    root = tmp_path / "app"
    shutil.copytree(template, root)
    return Project(root, NOWHERE)


# -- one revision per rule, linted in one run -------------------------------------------------


@pytest.fixture(scope="module")
def every_rule(template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, dict[str, Any]]:
    root = tmp_path_factory.mktemp("rules") / "app"
    shutil.copytree(template, root)
    project = Project(root, NOWHERE)
    down = "a0"
    for n, (rule, (body, _)) in enumerate(RULE_CASES.items(), 1):
        write(project, f"r{n:02d}", down, TIMEOUT + body, rule)
        down = f"r{n:02d}"
    write(project, "r_lock", down, 'op.add_column("accounts", sa.Column("note", sa.Text()))', "no timeout")
    write(project, "r_clean", "r_lock", CLEAN, "clean")
    result, document = lint(project)
    assert result.returncode == 1, result.stderr
    return project, document


def test_the_base_revision_creating_its_tables_is_clean(every_rule: tuple[Project, dict[str, Any]]) -> None:
    _, document = every_rule
    # Tables created in the same revision: the index, the foreign key, the NOT NULL column are exempt.
    assert found(document, "a0") == []
    (base,) = [r for r in document["revisions"] if r["revision"] == "a0"]
    assert base["status"] == "linted" and base["statements"] == 5


@pytest.mark.parametrize("rule", list(RULE_CASES))
def test_each_rule_points_at_its_op_line(every_rule: tuple[Project, dict[str, Any]], rule: str) -> None:
    project, document = every_rule
    n = list(RULE_CASES).index(rule) + 1
    path = next((project.root / "migrations" / "versions").glob(f"r{n:02d}_*.py"))
    assert found(document, f"r{n:02d}") == [(rule, line_of(path, RULE_CASES[rule][1]))]
    (finding,) = [f for f in document["findings"] if f["revision"] == f"r{n:02d}"]
    assert finding["path"] == rel(path)
    assert finding["why"] and finding["instead"] and finding["statement"]


def test_ddl_without_lock_timeout_is_said_once_at_the_first_ddl(
    every_rule: tuple[Project, dict[str, Any]],
) -> None:
    project, document = every_rule
    path = project.root / "migrations" / "versions" / "r_lock_no_timeout.py"
    assert found(document, "r_lock") == [("ddl-without-lock-timeout", line_of(path, "op.add_column"))]


def test_the_safe_way_of_each_change_is_clean(every_rule: tuple[Project, dict[str, Any]]) -> None:
    _, document = every_rule
    assert found(document, "r_clean") == []
    assert document["summary"] == {
        "revisions": len(RULE_CASES) + 3,
        "linted": len(RULE_CASES) + 3,
        "known_safe": 0,
        "not_linted": 0,
        "findings": len(RULE_CASES) + 1,
        "ignored": 0,
    }


def test_findings_carry_the_plan_that_does_it_safely(every_rule: tuple[Project, dict[str, Any]]) -> None:
    _, document = every_rule
    fixes = {f["rule"]: f["fix"] for f in document["findings"]}
    assert fixes["rename-column"] == "ecm plan rename-column accounts name full_name"
    assert fixes["rename-table"] == "ecm plan rename-table accounts users"
    assert fixes["alter-column-type"] == "ecm plan change-type accounts name 'varchar(100)'"
    assert fixes["set-not-null-scan"] == "ecm plan set-not-null accounts name"
    assert fixes["create-index-blocking"] == "ecm plan add-index accounts org_id --name accounts_org_idx"
    assert fixes["drop-index-blocking"] == "ecm plan drop-index accounts_name_idx"
    assert fixes["add-unique-blocking"] == "ecm plan add-unique accounts name --name accounts_name_key"
    assert fixes["add-check-validating"] == "ecm plan add-check accounts accounts_name_len 'length(name) > 0'"
    assert fixes["add-foreign-key-validating"] == (
        "ecm plan add-foreign-key accounts org_id --references 'orgs(id)' --name accounts_org2_fk"
    )
    assert fixes["ddl-without-lock-timeout"] is None


def test_json_document_shape(every_rule: tuple[Project, dict[str, Any]]) -> None:
    _, document = every_rule
    assert set(document) == {"pg_version", "ok", "summary", "revisions", "findings", "ignored"}
    assert document["pg_version"] == 15 and document["ok"] is False
    assert set(document["revisions"][0]) == {
        "revision",
        "path",
        "lineage",
        "status",
        "reason",
        "plan_id",
        "statements",
        "findings",
    }
    assert set(document["findings"][0]) == {
        "rule",
        "revision",
        "path",
        "line",
        "statement",
        "detail",
        "lock",
        "why",
        "instead",
        "fix",
    }
    assert [r["revision"] for r in document["revisions"]][:2] == ["a0", "r01"]  # base first


# -- ranges, paths, bad input ----------------------------------------------------------------


def test_ranges_and_paths_choose_the_revisions(project: Project) -> None:
    write(project, "b1", "a0", TIMEOUT + RULE_CASES["rename-table"][0], "one")
    second = write(project, "b2", "b1", TIMEOUT + RULE_CASES["drop-column-early"][0], "two")
    _, whole = lint(project, "base:head")
    assert [r["revision"] for r in whole["revisions"]] == ["a0", "b1", "b2"]
    _, after = lint(project, "a0:head")  # as `alembic upgrade a0:head --sql`: a0 itself is not run
    assert [r["revision"] for r in after["revisions"]] == ["b1", "b2"]
    _, one = lint(project, "b1")
    assert found(one) == [
        ("rename-table", line_of(project.root / "migrations/versions/b1_one.py", "op.rename"))
    ]
    result, by_path = lint(project, str(second.relative_to(project.root)))
    assert result.returncode == 1
    assert found(by_path) == [("drop-column-early", line_of(second, "op.drop_column"))]
    result, clean = lint(project, "a0")
    assert result.returncode == 0 and clean["ok"] is True
    _, folder = lint(project, "migrations/versions")
    assert [r["revision"] for r in folder["revisions"]] == ["a0", "b1", "b2"]
    (project.root / "elsewhere").mkdir()
    empty = project.ecm("lint", "elsewhere/")
    assert empty.returncode == 2 and "elsewhere/ holds no revision" in empty.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("nosuchrev",), "unknown revision or range 'nosuchrev'"),
        (("a0:nosuchrev",), "unknown revision or range 'a0:nosuchrev'"),
        (("migrations/versions/missing.py",), "no such revision file: migrations/versions/missing.py"),
        (("alembic.ini",), "alembic.ini is not a revision"),
        (("migrations/contracts",), "no such revision file: migrations/contracts"),
        (("--format", "xml"), "--format must be one of text, json, github, not 'xml'"),
        (("--pg-version", "7"), "--pg-version must be a PostgreSQL major version"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project: Project, args: tuple[str, ...], fragment: str) -> None:
    result = project.ecm("lint", *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecm: error: ") and fragment in lines[0], result.stderr


# -- ignore comments ---------------------------------------------------------------------------


def test_an_ignore_with_a_reason_silences_that_finding_and_keeps_the_reason(project: Project) -> None:
    path = write(
        project,
        "b1",
        "a0",
        TIMEOUT
        + "# ecm: ignore[create-index-blocking] orgs holds 12 rows, forever\n"
        + 'op.create_index("orgs_idx", "orgs", ["id"])\n'
        + "op.alter_column(  # ecm: ignore[rename-column, alter-column-type] nothing reads accounts yet\n"
        + '    "accounts",\n    "name",\n    new_column_name="full_name",\n)\n'
        + 'op.drop_column("accounts", "email")  # ecm: ignore[rename-column] wrong rule: silences nothing\n',
        "ignored",
    )
    result, document = lint(project, "b1")
    assert result.returncode == 1
    assert found(document) == [("drop-column-early", line_of(path, "op.drop_column"))]
    assert [(f["rule"], f["line"], f["reason"]) for f in document["ignored"]] == [
        ("create-index-blocking", line_of(path, "op.create_index"), "orgs holds 12 rows, forever"),
        ("rename-column", line_of(path, "op.alter_column"), "nothing reads accounts yet"),
    ]
    text = project.ecm("lint", "b1")
    assert f"{rel(path)}:{line_of(path, 'op.create_index')}: ignored create-index-blocking" in text.stdout
    assert "orgs holds 12 rows, forever" in text.stdout


def test_an_ignore_without_a_reason_or_with_an_unknown_rule_is_itself_a_finding(project: Project) -> None:
    path = write(
        project,
        "b1",
        "a0",
        TIMEOUT
        + 'op.rename_table("orgs", "teams")  # ecm: ignore[rename-table]\n'
        + "# ecm: ignore[no-such-rule] because\n"
        + 'op.execute("SELECT 1")\n',
        "bad ignores",
    )
    result, document = lint(project, "b1")
    assert result.returncode == 1
    line = line_of(path, "op.rename_table")
    assert sorted(found(document)) == [
        ("ignore-unknown-rule", line_of(path, "no-such-rule")),
        ("ignore-without-reason", line),
        ("rename-table", line),  # not silenced
    ]


# -- what is not linted, and what is known safe ---------------------------------------------


def test_a_revision_that_reads_the_database_is_not_linted_never_clean(project: Project) -> None:
    path = write(
        project,
        "b1",
        "a0",
        "conn = op.get_bind()\n"
        'count = conn.execute(sa.text("SELECT count(*) FROM accounts")).scalar()\n'
        "if count:\n"
        '    op.drop_column("accounts", "name")\n',
        "reads data",
    )
    result, document = lint(project, "b1")
    assert result.returncode == 1
    (report,) = document["revisions"]
    assert report["status"] == "not-linted"
    assert f"line {line_of(path, '.scalar()')}" in report["reason"]
    assert document["ok"] is False and document["summary"]["not_linted"] == 1
    text = project.ecm("lint", "b1")
    assert text.returncode == 1
    assert f"{rel(path)}: revision b1: NOT LINTED: upgrade() cannot run offline" in text.stdout
    github = project.ecm("lint", "b1", "--format", "github")
    assert github.stdout.startswith(f"::error file={rel(path)},title=not linted::revision b1 was not linted")


def test_ecm_plans_are_known_safe(tmp_path: Path, database_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, name text)")
    project = make_project(tmp_path / "app", database_url)
    planned = project.ecm("plan", "rename-column", "accounts", "name", "full_name")
    assert planned.returncode == 0, planned.stderr
    result, document = lint(project)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = [(r["lineage"], r["status"], r["plan_id"]) for r in document["revisions"]]
    plan = "rename_accounts_name_full_name"
    assert statuses == [
        ("application", "known-safe", plan),
        ("application", "known-safe", plan),
        ("contract", "known-safe", plan),
    ]
    text = project.ecm("lint")
    assert text.returncode == 0 and "known safe" in text.stdout and "3 known safe" in text.stdout


# -- formats and versions ------------------------------------------------------------------


def test_github_format_annotates_the_revision_line(project: Project) -> None:
    path = write(
        project,
        "b1",
        "a0",
        TIMEOUT
        + RULE_CASES["rename-column"][0]
        + "\n# ecm: ignore[drop-column-early] email was never read\n"
        + 'op.drop_column("accounts", "email")\n',
        "github",
    )
    result = project.ecm("lint", "b1", "--format", "github")
    assert result.returncode == 1
    error, notice = result.stdout.splitlines()
    assert error.startswith(
        f"::error file={rel(path)},line={line_of(path, 'op.alter_column')},title=rename-column::"
    )
    assert "Instead: ecm plan rename-column accounts name full_name" in error
    assert notice == (
        f"::notice file={rel(path)},line={line_of(path, 'op.drop_column')},title=drop-column-early::"
        "drop-column-early ignored: email was never read"
    )


def test_pg_version_decides_the_rules_that_depend_on_it(project: Project) -> None:
    path = write(
        project,
        "b1",
        "a0",
        TIMEOUT
        + 'op.add_column("accounts", sa.Column("level", sa.Integer(), server_default="0", nullable=False))\n'
        + 'op.create_check_constraint("nn", "accounts", "name IS NOT NULL")\n'
        + 'op.alter_column("accounts", "name", nullable=False)\n',
        "versions",
    )
    _, current = lint(project, "b1")
    assert found(current) == [("add-check-validating", line_of(path, "op.create_check"))]
    _, old = lint(project, "b1", "--pg-version", "10")
    assert found(old) == [
        ("add-column-default-rewrite", line_of(path, "op.add_column")),
        ("add-check-validating", line_of(path, "op.create_check")),
        ("set-not-null-scan", line_of(path, "op.alter_column")),
    ]
    assert old["pg_version"] == 10


def test_text_format_and_exit_codes(project: Project) -> None:
    result = project.ecm("lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("(PostgreSQL 15): clean")
    path = write(
        project, "b1", "a0", 'op.execute("ALTER TABLE accounts ADD COLUMN a int; DROP TABLE orgs")', "two"
    )
    result = project.ecm("lint")
    assert result.returncode == 1
    line = line_of(path, "op.execute")
    assert (
        f"{rel(path)}:{line}: ddl-without-lock-timeout: ALTER TABLE accounts ADD COLUMN a int"
        in result.stdout
    )
    assert f"{rel(path)}:{line}: drop-table-early: DROP TABLE orgs (table orgs)" in result.stdout
    assert "    instead: ecm plan drop-table orgs" in result.stdout
    assert result.stdout.strip().endswith("(PostgreSQL 15): unsafe")


def test_a_revision_that_cannot_be_imported_fails_the_run(project: Project) -> None:
    path = write(project, "b1", "a0", 'op.drop_table("orgs")', "imports app")
    path.write_text(
        path.read_text().replace("import sqlalchemy as sa\n", "import sqlalchemy as sa\nimport no_such_app\n")
    )
    result = project.ecm("lint")
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "cannot load the project's revisions (ModuleNotFoundError: No module named 'no_such_app')" in line


def test_batch_operations_point_at_their_with_line(project: Project) -> None:
    path = write(
        project,
        "b1",
        "a0",
        TIMEOUT
        + 'with op.batch_alter_table("accounts") as batch:\n'
        + '    batch.alter_column("name", new_column_name="full_name")\n',
        "batch",
    )
    _, document = lint(project, "b1")
    assert found(document) == [("rename-column", line_of(path, "with op.batch_alter_table"))]


def test_a_new_table_referencing_an_existing_one_still_needs_lock_timeout(project: Project) -> None:
    path = write(
        project,
        "b1",
        "a0",
        'op.create_table(\n    "invoices",\n    sa.Column("id", sa.BigInteger(), primary_key=True),\n'
        '    sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id"), nullable=False),\n)\n'
        'op.create_index("invoices_account_idx", "invoices", ["account_id"])\n',
        "new table",
    )
    _, document = lint(project, "b1")
    # Its index and NOT NULL column are exempt; the foreign key locks accounts against writes.
    assert found(document) == [("ddl-without-lock-timeout", line_of(path, "op.create_table"))]


def test_percent_signs_are_rendered_as_written(project: Project) -> None:
    write(
        project,
        "b1",
        "a0",
        TIMEOUT + "op.execute(\"UPDATE accounts SET name = 'x%' WHERE id % 2 = 0\")",
        "pct",
    )
    write(
        project, "b2", "b1", TIMEOUT + "op.execute(\"DELETE FROM accounts WHERE name LIKE 'x%'\")", "pct all"
    )
    result, document = lint(project, "a0:head")
    assert result.returncode == 0, result.stdout
    assert [r["statements"] for r in document["revisions"]] == [2, 2]
    drop = write(
        project, "b3", "b2", TIMEOUT + "op.execute(\"UPDATE accounts SET name = name || '%'\")", "pct 3"
    )
    _, document = lint(project, str(drop.relative_to(project.root)))
    assert [f["statement"] for f in document["findings"]] == ["UPDATE accounts SET name = name || '%'"]
