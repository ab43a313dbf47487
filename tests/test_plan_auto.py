"""``ecm plan auto`` as a user drives it: a real Alembic project, a real database, the real CLI.

Every test makes a stock ``alembic init`` project whose ``env.py`` imports ``models.py`` (the
one line a team adds), applies a first revision that creates ``orgs``, ``users`` and
``audit`` with a few rows, then writes the next version of ``models.py`` and runs
``ecm plan auto`` in a subprocess with stdin not a terminal. What is checked is what a
user sees: the exit code, the one-line ``ecm: error: …`` of a refusal, the human summary
on stderr, the ``--json`` document on stdout, the revision files written (or not), and a
database left exactly as it was when ecm refuses.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import Result
from .project import Project, columns, indexes, make_project, triggers

# How autogenerate's diff is sorted does not depend on the server's version; the plans it writes
# are each operation's own, tested on both servers by their tests and the conformance suite.
pytestmark = pytest.mark.server_independent

DB = psycopg.Connection[tuple[object, ...]]

FIRST_REVISION = '''"""orgs, users, audit

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE orgs (id bigint PRIMARY KEY, name text NOT NULL CONSTRAINT orgs_name_key UNIQUE)")
    op.execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, age integer, code varchar(20), "
        "org_id bigint, rank smallint, ratio real, price numeric(10, 2), created timestamp)"
    )
    op.execute("CREATE INDEX ix_users_org_id ON users (org_id)")
    op.execute("CREATE TABLE audit (id bigint PRIMARY KEY, note text)")
    op.execute("INSERT INTO orgs VALUES (1, 'acme')")
    op.execute(
        "INSERT INTO users VALUES (1, 'Ada', 'ada@example.com', 36, '7', 1, 1, 0.5, 9.99, '2024-01-01'), "
        "(2, 'Bob', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    op.execute("INSERT INTO audit VALUES (1, 'created')")


def downgrade() -> None:
    op.execute("DROP TABLE audit")
    op.execute("DROP TABLE users")
    op.execute("DROP TABLE orgs")
'''

SECOND_REVISION = '''"""not applied yet

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN phone text")


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN phone")
'''

HEADER = "import sqlalchemy as sa\n\nmetadata = sa.MetaData()\n\n"
ORGS = (
    'orgs = sa.Table("orgs", metadata, sa.Column("id", sa.BigInteger, primary_key=True), '
    'sa.Column("name", sa.Text, nullable=False), sa.UniqueConstraint("name", name="orgs_name_key"))\n'
)
AUDIT = (
    'audit = sa.Table("audit", metadata, sa.Column("id", sa.BigInteger, primary_key=True), '
    'sa.Column("note", sa.Text))\n'
)
#: users as the first revision created it, one source line per column or index (keyed by its name).
USERS = {
    "id": 'sa.Column("id", sa.BigInteger, primary_key=True)',
    "name": 'sa.Column("name", sa.Text)',
    "email": 'sa.Column("email", sa.Text)',
    "age": 'sa.Column("age", sa.Integer)',
    "code": 'sa.Column("code", sa.String(20))',
    "org_id": 'sa.Column("org_id", sa.BigInteger)',
    "rank": 'sa.Column("rank", sa.SmallInteger)',
    "ratio": 'sa.Column("ratio", sa.REAL)',
    "price": 'sa.Column("price", sa.Numeric(10, 2))',
    "created": 'sa.Column("created", sa.DateTime)',
    "ix_users_org_id": 'sa.Index("ix_users_org_id", "org_id")',
}


def models(
    users: Mapping[str, str | None] | None = None,
    *,
    extra: Sequence[str] = (),
    orgs: str = ORGS,
    audit: str | None = AUDIT,
    more: str = "",
) -> str:
    """models.py: the first revision's tables, with ``users``' columns or indexes replaced (None:
    removed) or added, ``extra`` items (indexes, constraints) appended to ``users``, ``orgs``
    replaced, ``audit`` replaced or removed (None), and ``more`` after it."""
    items = [i for i in {**USERS, **(users or {})}.values() if i is not None]
    ordered = [i for i in items if i.startswith("sa.Column")] + [
        i for i in items if not i.startswith("sa.Column")
    ]
    body = "".join(f"    {item},\n" for item in ['"users"', "metadata", *ordered, *extra])
    return HEADER + orgs + f"users = sa.Table(\n{body})\n" + (audit or "") + more


# -- the project ------------------------------------------------------------------------------

#: No bytecode: models.py is rewritten within the same second between runs.
ENV = {"ECM_LOG_FORMAT": "json", "PYTHONDONTWRITEBYTECODE": "1"}


def run(project: Project, module: str, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """``python -m MODULE ARGS`` in the project, stdin not a terminal (as in CI, or piped)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project.root,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **ENV, "ECM_DATABASE_URL": project.url, **(env or {})},
        timeout=300,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def auto(project: Project, *args: str) -> Result:
    return run(project, "expandcontract", "plan", "auto", *args)


def alembic(project: Project, *args: str) -> Result:
    return run(project, "alembic", *args)


def ok(result: Result, what: str = "command") -> Result:
    assert result.returncode == 0, f"{what} exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def new_project(tmp_path: Path, url: str, *, target_metadata: bool = True) -> Project:
    """`alembic init migrations`, env.py importing models.py, the first revision applied."""
    project = make_project(tmp_path / "app", url)
    if target_metadata:
        env_py = project.root / "migrations" / "env.py"
        text = env_py.read_text()
        assert text.count("target_metadata = None\n") == 1, "the generic template's env.py changed"
        env_py.write_text(
            text.replace("target_metadata = None\n", "import models\n\ntarget_metadata = models.metadata\n")
        )
    write_models(project, models())
    (project.root / "migrations" / "versions").mkdir(exist_ok=True)
    (project.root / "migrations" / "versions" / "0001_orgs_users_audit.py").write_text(FIRST_REVISION)
    ok(alembic(project, "upgrade", "head"), "alembic upgrade head")
    return project


def write_models(project: Project, source: str, name: str = "models.py") -> None:
    path = project.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    return new_project(tmp_path, database_url)


def revision_files(project: Project, before: set[str]) -> set[str]:
    """The revision files written since ``before`` (a first plan also scaffolds migrations/contracts)."""
    return {f for f in files(project) - before if "/versions/" in f}


def files(project: Project) -> set[str]:
    """Every file of the project (relative paths), bytecode left out."""
    return {
        str(p.relative_to(project.root))
        for p in project.root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def snapshot(project: Project) -> dict[str, Any]:
    """The database as far as ecm could change it: schemas, columns, indexes, constraints,
    triggers, functions, the Alembic version and the rows."""
    queries = {
        "schemas": "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' ORDER BY 1",
        "columns": """
            SELECT table_schema, table_name, column_name, data_type, character_maximum_length,
                   is_nullable, column_default
            FROM information_schema.columns
            WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3""",
        "indexes": """
            SELECT schemaname, indexname, indexdef FROM pg_indexes
            WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated
            FROM pg_constraint WHERE connamespace <> 'pg_catalog'::regnamespace AND contype <> 'n'
            ORDER BY 1, 2""",
        "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
        "functions": """
            SELECT n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2""",
        "views": """
            SELECT table_schema, table_name FROM information_schema.views
            WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2""",
        "alembic_version": "SELECT version_num FROM alembic_version ORDER BY 1",
        "orgs": "SELECT * FROM orgs ORDER BY id",
        "users": "SELECT * FROM users ORDER BY id",
        "audit": "SELECT * FROM audit ORDER BY id",
    }
    with project.connect() as conn:
        return {key: conn.execute(sql).fetchall() for key, sql in queries.items()}


def refused(project: Project, *args: str) -> str:
    """Run ``ecm plan auto ARGS`` expecting a refusal: exit 2, one ``ecm: error:`` line on stderr,
    nothing on stdout, no file written, the database untouched. Returns the message."""
    before_files, before_db = files(project), snapshot(project)
    result = auto(project, *args)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("ecm: error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.strip() == errors[0], f"more than the one error line on stderr:\n{result.stderr}"
    assert result.stdout == ""
    assert files(project) == before_files, "a refused run wrote files"
    assert snapshot(project) == before_db, "a refused run changed the database"
    return errors[0].removeprefix("ecm: error: ")


def planned(project: Project, *args: str) -> dict[str, Any]:
    """Run ``ecm plan auto --json ARGS`` expecting success; the document."""
    result = ok(auto(project, "--json", *args), "ecm plan auto --json " + " ".join(args))
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def by_what(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {d["what"]: d for d in doc["decisions"]}
    assert len(out) == len(doc["decisions"]), doc["decisions"]
    return out


def plan_files(project: Project, plan_id: str) -> dict[str, Path]:
    """phase -> the revision file written for that plan, found on disk by its name."""
    found: dict[str, Path] = {}
    for phase in ("expand", "backfill"):
        for p in (project.root / "migrations" / "versions").glob(f"*_ecm_{phase}_{plan_id}.py"):
            found[phase] = p
    for p in (project.root / "migrations" / "contracts" / "versions").glob(f"*_ecm_contract_{plan_id}.py"):
        found["contract"] = p
    return found


def assert_written(decision: Mapping[str, Any], phases: Sequence[str]) -> None:
    """A plan decision's files: the phases expected, each on disk."""
    assert [f["phase"] for f in decision["files"]] == list(phases), decision["files"]
    for f in decision["files"]:
        assert Path(f["path"]).is_file(), f


def command(decision: Mapping[str, Any]) -> list[str]:
    """The decision's ``ecm plan …`` line, as the shell splits it."""
    return shlex.split(decision["command"])


# -- the baseline -----------------------------------------------------------------------------


def test_models_that_match_the_database_plan_nothing(project: Project) -> None:
    before = files(project)
    result = ok(auto(project))
    assert "no differences between the models and the database" in result.stderr
    assert result.stdout == ""
    assert files(project) == before
    assert planned(project) == {"dry_run": False, "decisions": [], "plans": []}


# -- 1. a column rename candidate ---------------------------------------------------------------

RENAMED_NAME = models({"name": None, "full_name": 'sa.Column("full_name", sa.Text)'})


def test_a_column_rename_candidate_is_refused_without_a_terminal(project: Project) -> None:
    write_models(project, RENAMED_NAME)
    message = refused(project)
    assert message.startswith(
        "not written: column users.name is dropped and full_name added (text): a rename?"
    ), message
    assert "--rename users.name:full_name (a rename) or --no-rename users.name (a drop)" in message
    # --json does not make it a question either: the same refusal, nothing on stdout.
    assert refused(project, "--json") == message
    assert refused(project, "--dry-run") == message
    # Deciding about another column decides nothing about this one.
    assert refused(project, "--no-rename", "users.email") == message


def test_rename_writes_a_rename_column_plan(project: Project) -> None:
    write_models(project, RENAMED_NAME)
    before_files, before_db = files(project), snapshot(project)
    result = ok(auto(project, "--rename", "users.name:full_name"))
    assert result.stdout == ""
    err = result.stderr
    assert "planned   rename column users.name -> full_name: both names kept in step by a trigger" in err
    assert "-> plan rename_users_name_full_name" in err
    assert "covered   add column users.full_name: the rename plan adds it" in err
    assert "left to Alembic" not in err  # nothing is
    written = plan_files(project, "rename_users_name_full_name")
    assert set(written) == {"expand", "backfill", "contract"}
    assert revision_files(project, before_files) == {
        str(p.relative_to(project.root)) for p in written.values()
    }
    for phase, path in written.items():
        assert f"  {phase:<9} {path}" in err
    assert "drop_column" not in written["expand"].read_text()
    assert snapshot(project) == before_db, "planning only writes files"


def test_no_rename_writes_a_drop_column_plan_and_leaves_the_add_to_alembic(project: Project) -> None:
    write_models(project, RENAMED_NAME)
    before = files(project)
    result = ok(auto(project, "--no-rename", "users.name"))
    err = result.stderr
    assert "planned   drop column users.name: a guarded contract" in err
    assert "-> plan drop_column_users_name" in err
    assert "kept      add column users.full_name: nullable, no default: catalog only" in err
    assert "1 safe difference(s) left to Alembic" in err
    written = plan_files(project, "drop_column_users_name")
    assert set(written) == {"expand", "contract"}
    assert revision_files(project, before) == {str(p.relative_to(project.root)) for p in written.values()}


def test_on_a_terminal_the_rename_is_asked(project: Project) -> None:
    write_models(project, RENAMED_NAME)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "expandcontract", "plan", "auto"],
            cwd=project.root,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **ENV, "ECM_DATABASE_URL": project.url},
        )
        os.close(slave)
        os.write(master, b"full_name\n")
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()  # still waiting for an answer: fail, leave nothing running
            proc.communicate()
            raise
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert "? column users.name is dropped and full_name added (text): a rename?" in err
    assert "rename users.name to (full_name) or 'no' (drop it)" in err
    assert "planned   rename column users.name -> full_name" in err
    assert "same answers without questions: ecm plan auto --rename users.name:full_name" in err
    assert set(plan_files(project, "rename_users_name_full_name")) == {"expand", "backfill", "contract"}


def test_malformed_or_unknown_decisions_are_refused(project: Project) -> None:
    write_models(project, RENAMED_NAME)
    message = refused(project, "--rename", "users.name")
    assert message.startswith("--rename 'users.name': expected TABLE.OLD:NEW"), message
    message = refused(project, "--rename", "users.name:users.full_name")
    assert message.startswith("--rename 'users.name:users.full_name': expected TABLE.OLD:NEW"), message
    message = refused(project, "--rename", "users.name:nickname")
    assert message == "--rename users.name:nickname: the models add no column 'nickname' to users"
    message = refused(project, "--rename", "users.name:full_name", "--rename", "users.email:mail")
    assert message == "--rename users.email:mail: the models neither drop that column nor that table"
    message = refused(project, "--rename", "users.name:full_name", "--fill", "users.email")
    assert message.startswith("--fill 'users.email': expected TABLE.COLUMN=SQL"), message


# -- 2. a table rename candidate ----------------------------------------------------------------

AUDIT_LOG = (
    'audit_log = sa.Table("audit_log", metadata, sa.Column("id", sa.BigInteger, primary_key=True), '
    'sa.Column("note", sa.Text))\n'
)
RENAMED_AUDIT = models(audit=AUDIT_LOG)


def test_a_table_rename_candidate_is_refused_then_planned_with_rename(project: Project) -> None:
    write_models(project, RENAMED_AUDIT)
    message = refused(project)
    assert message.startswith(
        "not written: table audit is dropped and audit_log created with the same columns: a rename?"
    ), message
    assert "--rename audit:audit_log (a rename) or --no-rename audit (a drop)" in message

    doc = planned(project, "--rename", "audit:audit_log")
    decisions = by_what(doc)
    assert set(decisions) == {"rename table audit -> audit_log", "create table audit_log"}
    rename = decisions["rename table audit -> audit_log"]
    assert rename["action"] == "plan"
    assert rename["operation"] == "rename-table"
    assert rename["plan_id"] == "rename_table_audit_audit_log"
    assert command(rename) == ["ecm", "plan", "rename-table", "audit", "audit_log"]
    assert_written(rename, ["expand", "contract"])
    assert decisions["create table audit_log"]["action"] == "covered"
    assert [p["operation"] for p in doc["plans"]] == ["rename-table"]


def test_every_open_question_is_named_in_the_one_refusal(project: Project) -> None:
    write_models(
        project,
        models(
            {
                "name": None,
                "full_name": 'sa.Column("full_name", sa.Text)',
                "email": 'sa.Column("email", sa.Text, nullable=False)',
            },
            audit=AUDIT_LOG,
        ),
    )
    message = refused(project)
    assert message.startswith("not written: "), message
    questions = message.removeprefix("not written: ").split(" | ")
    assert len(questions) == 3, message
    assert any(q.startswith("table audit is dropped") and "--rename audit:audit_log" in q for q in questions)
    assert any(q.startswith("column users.name is dropped") for q in questions)
    assert any(q.startswith("column users.email becomes NOT NULL") for q in questions)
    # Answering some leaves the others.
    message = refused(project, "--rename", "audit:audit_log", "--rename", "users.name:full_name")
    assert message.startswith("not written: column users.email becomes NOT NULL"), message
    assert " | " not in message
    doc = planned(
        project,
        "--dry-run",
        "--rename",
        "audit:audit_log",
        "--rename",
        "users.name:full_name",
        "--fill",
        "users.email=''",
    )
    assert sorted(p["operation"] for p in doc["plans"]) == ["rename-column", "rename-table", "set-not-null"]


def test_a_table_dropped_with_no_rename_is_a_drop_table_plan_and_the_new_one_kept(project: Project) -> None:
    write_models(project, RENAMED_AUDIT)
    decisions = by_what(planned(project, "--no-rename", "audit", "--dry-run"))
    assert decisions["drop table audit"]["operation"] == "drop-table"
    assert decisions["create table audit_log"]["action"] == "alembic"


# -- 3. type changes --------------------------------------------------------------------------


def test_integer_to_bigint_is_a_change_type_plan(project: Project) -> None:
    write_models(project, models({"age": 'sa.Column("age", sa.BigInteger)'}))
    doc = planned(project)
    [decision] = doc["decisions"]
    assert decision["action"] == "plan"
    assert decision["what"] == "change type of users.age (integer -> bigint)"
    assert decision["operation"] == "change-type"
    assert decision["plan_id"] == "change_type_users_age_bigint"
    assert command(decision) == ["ecm", "plan", "change-type", "users", "age", "bigint"]
    assert_written(decision, ["expand", "backfill", "contract"])
    [plan] = doc["plans"]
    assert plan["plan_id"] == decision["plan_id"]
    assert plan["operation"] == "change-type"


def test_the_other_allow_listed_type_pairs_are_change_type_plans(project: Project) -> None:
    write_models(
        project,
        models(
            {
                "code": 'sa.Column("code", sa.String(50))',
                "rank": 'sa.Column("rank", sa.Integer)',
                "ratio": 'sa.Column("ratio", sa.Double)',
                "price": 'sa.Column("price", sa.Numeric(12, 2))',
                "created": 'sa.Column("created", sa.DateTime(timezone=True))',
            }
        ),
    )
    decisions = by_what(planned(project, "--dry-run"))
    assert set(decisions) == {
        "change type of users.code (character varying(20) -> character varying(50))",
        "change type of users.rank (smallint -> integer)",
        "change type of users.ratio (real -> double precision)",
        "change type of users.price (numeric(10,2) -> numeric(12,2))",
        "change type of users.created (timestamp without time zone -> timestamp with time zone)",
    }, decisions
    for d in decisions.values():
        assert d["action"] == "plan", d
        assert d["operation"] == "change-type", d


def test_varchar_to_text_is_a_change_type_plan(project: Project) -> None:
    write_models(project, models({"code": 'sa.Column("code", sa.Text)'}))
    [decision] = planned(project, "--dry-run")["decisions"]
    assert decision["what"] == "change type of users.code (character varying(20) -> text)"
    assert decision["operation"] == "change-type"


def test_varchar_to_integer_is_refused_with_the_way_to_do_it(project: Project) -> None:
    write_models(project, models({"code": 'sa.Column("code", sa.Integer)'}))
    message = refused(project)
    assert message.startswith("change type of users.code (character varying(20) -> integer): "), message
    assert "the new type needs a new name" in message
    assert 'mapped_column("code_new", …)' in message
    assert message.endswith("run again with --rename users.code:code_new"), message

    # Doing what the message says: the new type under a new name, and --rename.
    write_models(project, models({"code": None, "code_new": 'sa.Column("code_new", sa.Integer)'}))
    doc = planned(project, "--rename", "users.code:code_new")
    decisions = by_what(doc)
    decision = decisions["rename column users.code -> code_new as integer"]
    assert decision["action"] == "plan"
    assert decision["operation"] == "change-type"
    assert command(decision)[:6] == ["ecm", "plan", "change-type", "users", "code", "integer"]
    assert "--rename-to" in command(decision)
    assert decisions["add column users.code_new"]["action"] == "covered"


def test_every_refused_type_change_is_counted(project: Project) -> None:
    write_models(
        project,
        models({"code": 'sa.Column("code", sa.Integer)', "age": 'sa.Column("age", sa.SmallInteger)'}),
    )
    message = refused(project)
    assert message.startswith("change type of users.age (integer -> smallint): old code would write"), message
    assert message.endswith("run again with --rename users.age:age_new (and 1 more)"), message


def test_a_type_change_and_not_null_on_one_column_defers_the_not_null(project: Project) -> None:
    write_models(project, models({"age": 'sa.Column("age", sa.BigInteger, nullable=False)'}))
    decisions = by_what(planned(project, "--dry-run"))  # no --fill needed: NOT NULL waits
    assert decisions["change type of users.age (integer -> bigint)"]["operation"] == "change-type"
    not_null = decisions["set users.age NOT NULL"]
    assert not_null["action"] == "deferred"
    assert "one plan per column at a time" in not_null["why"]


# -- 4. NOT NULL --------------------------------------------------------------------------------


def test_set_not_null_needs_a_fill(project: Project) -> None:
    write_models(project, models({"email": 'sa.Column("email", sa.Text, nullable=False)'}))
    message = refused(project)
    assert message.startswith("not written: column users.email becomes NOT NULL"), message
    assert "Decide with --fill users.email=SQL" in message

    doc = planned(project, "--fill", "users.email=''")
    [decision] = doc["decisions"]
    assert decision["action"] == "plan"
    assert decision["what"] == "set users.email NOT NULL"
    assert decision["operation"] == "set-not-null"
    assert command(decision) == ["ecm", "plan", "set-not-null", "users", "email", "--fill", "''"]
    assert_written(decision, ["expand", "backfill", "contract"])
    [plan] = doc["plans"]
    sql = [str(s["sql"]) for phase in plan["phases"] for s in phase["steps"]]
    assert any("''" in s and "email" in s for s in sql), sql
    assert "''" in Path(decision["files"][0]["path"]).read_text()


def test_catalog_only_alterations_are_kept(project: Project) -> None:
    write_models(
        project,
        models(
            {"email": 'sa.Column("email", sa.Text, comment="where we write")'},
            orgs=ORGS.replace('sa.Column("name", sa.Text, nullable=False)', 'sa.Column("name", sa.Text)'),
        ),
    )
    doc = planned(project)
    assert by_what(doc) == {
        "alter column orgs.name": {
            "action": "alembic",
            "what": "alter column orgs.name",
            "why": "DROP NOT NULL is catalog only",
        },
        "alter column users.email": {
            "action": "alembic",
            "what": "alter column users.email",
            "why": "a comment changes only the catalog",
        },
    }
    assert doc["plans"] == []


def test_a_run_writes_all_of_its_plans_or_none(project: Project) -> None:
    write_models(
        project,
        models(
            {
                "name": None,
                "full_name": 'sa.Column("full_name", sa.Text)',
                "email": 'sa.Column("email", sa.Text, nullable=False)',
            }
        ),
    )
    # Planned in order: set-not-null (fine), then drop-column, whose --fill is not SQL.
    dry = by_what(planned(project, "--no-rename", "users.name", "--fill", "users.email=''", "--dry-run"))
    assert [d["operation"] for d in dry.values() if d["action"] == "plan"] == ["set-not-null", "drop-column"]
    before_files, before_db = files(project), snapshot(project)
    result = auto(project, "--no-rename", "users.name", "--fill", "users.email=''", "--fill", "users.name=((")
    assert result.returncode == 2, result
    assert result.stderr.startswith("ecm: error: --fill is not a single SQL expression"), result.stderr
    assert revision_files(project, before_files) == set(), "the first plan's files were left behind"
    assert snapshot(project) == before_db


# -- 5. added columns ---------------------------------------------------------------------------


def test_an_added_not_null_column_needs_a_fill_then_is_an_add_column_plan(project: Project) -> None:
    write_models(project, models({"nickname": 'sa.Column("nickname", sa.Text, nullable=False)'}))
    message = refused(project)
    assert message.startswith(
        "not written: column users.nickname is added NOT NULL without a server default"
    ), message
    assert "Decide with --fill users.nickname=SQL" in message

    doc = planned(project, "--fill", "users.nickname='anon'")
    [decision] = doc["decisions"]
    assert decision["what"] == "add column users.nickname"
    assert decision["action"] == "plan"
    assert decision["operation"] == "add-column"
    assert command(decision) == [
        "ecm",
        "plan",
        "add-column",
        "users",
        "nickname",
        "text",
        "--default",
        "'anon'",
        "--not-null",
    ]
    assert_written(decision, ["expand"])


def test_safe_additions_are_kept_for_alembic(project: Project) -> None:
    write_models(
        project,
        models(
            {
                "bio": 'sa.Column("bio", sa.Text, comment="free text")',
                "status": 'sa.Column("status", sa.Text, nullable=False, server_default="active")',
                "score": 'sa.Column("score", sa.Integer, server_default=sa.text("0"))',
            },
            more=(
                'tags = sa.Table("tags", metadata, sa.Column("id", sa.BigInteger, primary_key=True), '
                'sa.Column("label", sa.Text, nullable=False), sa.Index("ix_tags_label", "label"))\n'
            ),
        ),
    )
    before_files, before_db = files(project), snapshot(project)
    result = ok(auto(project))
    err = result.stderr
    assert "kept      add column users.bio: nullable, no default: catalog only" in err
    assert "kept      add column users.status: its default is not volatile" in err
    assert "kept      add column users.score: its default is not volatile" in err
    assert "kept      create table tags: a new table: no running code reads it yet" in err
    assert "planned   " not in err
    assert files(project) == before_files
    assert snapshot(project) == before_db
    doc = planned(project)
    assert {d["action"] for d in doc["decisions"]} == {"alembic"}, doc["decisions"]
    assert {
        "add column users.bio",
        "add column users.status",
        "add column users.score",
        "create table tags",
    } <= set(by_what(doc))
    assert doc["plans"] == []
    assert f"{len(doc['decisions'])} safe difference(s) left to Alembic" in err


def test_a_volatile_server_default_is_an_add_column_plan(project: Project) -> None:
    write_models(
        project,
        models(
            {
                "token": 'sa.Column("token", sa.Uuid, server_default=sa.text("gen_random_uuid()"))',
                "seen_at": (
                    'sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"))'
                ),
            }
        ),
    )
    doc = planned(project)
    decisions = by_what(doc)
    assert set(decisions) == {"add column users.token", "add column users.seen_at"}
    for decision in decisions.values():
        assert decision["action"] == "plan", decision
        assert decision["operation"] == "add-column"
        assert "volatile" in decision["why"]
        assert_written(decision, ["expand", "backfill"])
    assert command(decisions["add column users.token"]) == [
        "ecm",
        "plan",
        "add-column",
        "users",
        "token",
        "uuid",
        "--default",
        "gen_random_uuid()",
    ]
    assert len(doc["plans"]) == 2


def test_identity_and_generated_columns_are_refused(project: Project) -> None:
    write_models(
        project,
        models(
            {
                "seq": 'sa.Column("seq", sa.BigInteger, sa.Identity())',
                "name_len": 'sa.Column("name_len", sa.Integer, sa.Computed("length(name)"))',
            }
        ),
    )
    message = refused(project)
    assert message.startswith(
        "add column users.seq: an identity column added to an existing table rewrites it"
    ), message
    assert message.endswith("(and 1 more)"), message

    write_models(
        project, models({"name_len": 'sa.Column("name_len", sa.Integer, sa.Computed("length(name)"))'})
    )
    message = refused(project)
    assert message.startswith("add column users.name_len: a generated column added to an existing table"), (
        message
    )
    assert "add a plain column" in message


# -- 6. indexes and constraints -----------------------------------------------------------------


def test_indexes_and_constraints_on_existing_columns_are_plans(project: Project) -> None:
    write_models(
        project,
        models(
            {"phone": 'sa.Column("phone", sa.Text)'},
            extra=[
                'sa.Index("ix_users_email", "email")',
                'sa.UniqueConstraint("name", name="uq_users_name")',
                'sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_users_org")',
                'sa.Index("ix_users_phone", "phone")',
            ],
        ),
    )
    doc = planned(project)
    decisions = by_what(doc)
    assert set(decisions) == {
        "add column users.phone",
        "create index ix_users_email on users",
        "add unique constraint uq_users_name on users",
        "add foreign key fk_users_org users(org_id)",
        "create index ix_users_phone on users",
    }
    index = decisions["create index ix_users_email on users"]
    assert command(index) == ["ecm", "plan", "add-index", "users", "email", "--name", "ix_users_email"]
    assert_written(index, ["expand"])
    unique = decisions["add unique constraint uq_users_name on users"]
    assert command(unique) == ["ecm", "plan", "add-unique", "users", "name", "--name", "uq_users_name"]
    assert_written(unique, ["expand"])
    fk = decisions["add foreign key fk_users_org users(org_id)"]
    assert command(fk) == [
        "ecm",
        "plan",
        "add-foreign-key",
        "users",
        "org_id",
        "--references",
        "orgs(id)",
        "--name",
        "fk_users_org",
    ]
    assert_written(fk, ["expand", "contract"])
    phone = decisions["create index ix_users_phone on users"]
    assert phone["action"] == "deferred"
    assert "needs column(s) phone this revision adds" in phone["why"]
    assert "plan_id" not in phone and "files" not in phone
    assert decisions["add column users.phone"]["action"] == "alembic"
    assert sorted(p["operation"] for p in doc["plans"]) == ["add-foreign-key", "add-index", "add-unique"]


def test_an_index_on_a_column_another_plan_changes_is_deferred(project: Project) -> None:
    write_models(
        project, models({"age": 'sa.Column("age", sa.BigInteger)'}, extra=['sa.Index("ix_users_age", "age")'])
    )
    decisions = by_what(planned(project, "--dry-run"))
    assert decisions["change type of users.age (integer -> bigint)"]["action"] == "plan"
    index = decisions["create index ix_users_age on users"]
    assert index["action"] == "deferred", index
    assert "change_type_users_age_bigint" in index["why"]


def test_dropped_indexes_and_constraints(project: Project) -> None:
    write_models(
        project,
        models(
            {"ix_users_org_id": None},
            orgs=ORGS.replace(', sa.UniqueConstraint("name", name="orgs_name_key")', ""),
        ),
    )
    decisions = by_what(planned(project, "--dry-run"))
    assert set(decisions) == {"drop index ix_users_org_id on users", "drop unique orgs_name_key on orgs"}
    drop_index = decisions["drop index ix_users_org_id on users"]
    assert drop_index["action"] == "plan"
    assert drop_index["operation"] == "drop-index"
    unique = decisions["drop unique orgs_name_key on orgs"]
    assert unique["action"] == "alembic"
    assert "ON CONFLICT" in unique["why"]


def test_a_dropped_column_covers_its_index(project: Project) -> None:
    write_models(project, models({"org_id": None, "ix_users_org_id": None}))
    decisions = by_what(planned(project, "--dry-run"))
    assert set(decisions) == {"drop column users.org_id", "drop index ix_users_org_id on users"}
    assert decisions["drop column users.org_id"]["operation"] == "drop-column"
    assert decisions["drop index ix_users_org_id on users"]["action"] == "covered"


# -- 7. CHECK constraints, opted in -------------------------------------------------------------


def test_named_checks_are_compared_only_with_checks(project: Project) -> None:
    write_models(project, models(extra=['sa.CheckConstraint("age >= 0", name="ck_users_age")']))
    result = ok(auto(project))
    assert "no differences between the models and the database" in result.stderr

    doc = planned(project, "--checks")
    [decision] = doc["decisions"]
    assert decision["what"] == "add check ck_users_age on users"
    assert decision["action"] == "plan"
    assert decision["operation"] == "add-check"
    assert command(decision) == ["ecm", "plan", "add-check", "users", "ck_users_age", "age >= 0"]
    assert_written(decision, ["expand", "contract"])


# -- 8. dry run, --json, and what the written plans do ------------------------------------------

SEVERAL = models(
    {
        "name": None,
        "full_name": 'sa.Column("full_name", sa.Text)',
        "age": 'sa.Column("age", sa.BigInteger)',
        "bio": 'sa.Column("bio", sa.Text)',
    },
    extra=['sa.Index("ix_users_email", "email")'],
)


def test_dry_run_writes_nothing_and_json_describes_every_decision(project: Project) -> None:
    write_models(project, SEVERAL)
    before_files, before_db = files(project), snapshot(project)

    human = ok(auto(project, "--rename", "users.name:full_name", "--dry-run"))
    assert human.stdout == ""
    assert "(dry run: nothing written)" in human.stderr
    assert "planned   rename column users.name -> full_name" in human.stderr
    assert files(project) == before_files

    doc = planned(project, "--rename", "users.name:full_name", "--dry-run")
    assert files(project) == before_files
    assert snapshot(project) == before_db
    assert set(doc) == {"dry_run", "decisions", "plans"}
    assert doc["dry_run"] is True
    decisions = by_what(doc)
    assert {what: d["action"] for what, d in decisions.items()} == {
        "rename column users.name -> full_name": "plan",
        "add column users.full_name": "covered",
        "change type of users.age (integer -> bigint)": "plan",
        "add column users.bio": "alembic",
        "create index ix_users_email on users": "plan",
    }
    for d in doc["decisions"]:
        assert isinstance(d["why"], str) and d["why"], d
        if d["action"] == "plan":
            assert set(d) == {"action", "what", "why", "operation", "command", "plan_id", "files"}, d
            assert command(d)[:3] == ["ecm", "plan", d["operation"]]
            for f in d["files"]:
                assert set(f) >= {"phase", "revision", "down_revision", "path"}, f
                assert not Path(f["path"]).exists(), f"dry run wrote {f['path']}"
        else:
            assert set(d) == {"action", "what", "why"}, d
    assert command(decisions["rename column users.name -> full_name"]) == [
        "ecm",
        "plan",
        "rename-column",
        "users",
        "name",
        "full_name",
    ]
    plan_ids = [d["plan_id"] for d in doc["decisions"] if d["action"] == "plan"]
    assert [p["plan_id"] for p in doc["plans"]] == plan_ids
    by_id = {d["plan_id"]: d for d in doc["decisions"] if d["action"] == "plan"}
    for p in doc["plans"]:
        assert p["dry_run"] is True
        assert p["operation"] == by_id[p["plan_id"]]["operation"]
        assert p["files"] == by_id[p["plan_id"]]["files"]
        assert p["phases"], p


def test_written_plans_chain_on_one_head_and_expand_applies(project: Project) -> None:
    write_models(project, SEVERAL)
    doc = planned(project, "--rename", "users.name:full_name", "-m", "users v2")
    plans = [d for d in doc["decisions"] if d["action"] == "plan"]
    assert len(plans) == 3
    # Each plan's first application revision follows the last one of the plan before.
    head = "0001"
    for d in plans:
        app = [f for f in d["files"] if f["phase"] in ("expand", "backfill")]
        assert app, d
        assert app[0]["down_revision"] == head, (d["what"], app, head)
        for before, after in itertools.pairwise(app):
            assert after["down_revision"] == before["revision"]
        head = app[-1]["revision"]
        for f in d["files"]:
            assert "users v2" in Path(f["path"]).read_text(), f["path"]

    heads = ok(alembic(project, "heads"), "alembic heads")
    assert [line.split()[0] for line in heads.stdout.splitlines() if line.strip()] == [head], heads.stdout

    ok(run(project, "expandcontract", "upgrade", "--phase", "expand"), "ecm upgrade --phase expand")
    with project.connect() as conn:
        assert {"name", "full_name", "age"} <= set(columns(conn, "users"))  # both names while old code runs
        assert indexes(conn, "users")["ix_users_email"][1], "the index built at expand is valid"
        assert "ecm_rename_users_name_full_name_sync" in triggers(conn, "users")


# -- 9. where the comparison cannot run ---------------------------------------------------------


def test_a_database_behind_the_head_is_refused(project: Project) -> None:
    (project.root / "migrations" / "versions" / "0002_phone.py").write_text(SECOND_REVISION)
    write_models(project, models({"phone": 'sa.Column("phone", sa.Text)'}))
    message = refused(project)
    assert message == (
        "the database is not at the head of the Alembic line (it is at 0001; head 0002): "
        "apply the pending revisions first, as alembic revision --autogenerate requires"
    )


DECLARATIVE = (
    "import sqlalchemy as sa\nfrom sqlalchemy.orm import DeclarativeBase\n\n\n"
    "class Base(DeclarativeBase):\n    pass\n\n\nmetadata = Base.metadata\n\n"
)


def test_an_env_py_without_target_metadata_needs_metadata(tmp_path: Path, database_url: str) -> None:
    project = new_project(tmp_path, database_url, target_metadata=False)
    (project.root / "models.py").unlink()
    write_models(project, "", "myapp/__init__.py")
    source = models({"age": 'sa.Column("age", sa.BigInteger)'})
    write_models(project, DECLARATIVE + source.removeprefix(HEADER), "myapp/models.py")
    message = refused(project)
    assert message == (
        "the project's env.py sets no target_metadata: pass --metadata module:attribute (a SQLAlchemy MetaData)"
    )
    for spec in ("myapp.models:Base.metadata", "myapp.models:metadata"):
        doc = planned(project, "--dry-run", "--metadata", spec)
        assert [d["what"] for d in doc["decisions"]] == ["change type of users.age (integer -> bigint)"], spec
    doc = planned(project, "--metadata", "myapp.models:Base")
    [decision] = doc["decisions"]
    assert decision["operation"] == "change-type"
    assert_written(decision, ["expand", "backfill", "contract"])


def test_metadata_replaces_env_pys_target_metadata(project: Project) -> None:
    write_models(project, models({"age": 'sa.Column("age", sa.BigInteger)'}), "other_models.py")
    doc = planned(project, "--dry-run", "--metadata", "other_models:metadata")
    assert [d["what"] for d in doc["decisions"]] == ["change type of users.age (integer -> bigint)"]
    message = refused(project, "--metadata", "no_such_module:metadata")
    assert message == "cannot import module 'no_such_module': no such module on sys.path"
    message = refused(project, "--metadata", "other_models:nothing")
    assert message == "module 'other_models' has no attribute 'nothing'"


def test_a_malformed_metadata_names_the_option_given(project: Project) -> None:
    message = refused(project, "--metadata", "models")
    assert message.startswith("--metadata expects module:attribute"), message


# -- 10. a dropped table ------------------------------------------------------------------------


def test_a_dropped_table_is_a_drop_table_plan(project: Project) -> None:
    write_models(project, models(audit=None))
    before = files(project)
    result = ok(auto(project))
    assert (
        "planned   drop table audit: a guarded contract: dropped only once no live code maps it"
        in result.stderr
    )
    assert "-> plan drop_table_audit" in result.stderr
    written = plan_files(project, "drop_table_audit")
    assert set(written) == {"contract"}  # nothing to do before old code is gone
    assert revision_files(project, before) == {str(p.relative_to(project.root)) for p in written.values()}

    # Run again: the plan written is not written twice.
    before = files(project)
    [decision] = planned(project)["decisions"]
    assert decision["action"] == "deferred", decision
    assert "a plan is already in flight on audit: drop_table_audit" in decision["why"]
    assert files(project) == before
