"""Rules of the autogenerate sorting that the CLI and hook tests do not reach: integer keys widened
to bigint, constraints that go with a renamed column, and the revision the hook leaves being one
`ecm lint` finds clean. Each drives a stock `alembic init` project on a real database."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .conftest import Result
from .project import Project, columns, make_project

ENV_LINE = "process_revision_directives=expandcontract.autogen.rewrite,"

MODELS = """
import os

import sqlalchemy as sa

metadata = sa.MetaData()
V2 = os.environ.get("MODELS") == "2"
KEY = sa.BigInteger if V2 else sa.Integer
sa.Table(
    "accounts",
    metadata,
    sa.Column("id", KEY, primary_key=True),
    sa.Column("full_name" if V2 else "name", sa.String(80), nullable=False, unique=True),
    sa.Column("note", sa.Text, nullable=True),
)
sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", KEY, sa.ForeignKey("accounts.id"), nullable=True, index=True),
)
"""


def project_with_hook(tmp_path: Path, url: str) -> Project:
    project = make_project(tmp_path / "app", url)
    (project.root / "models.py").write_text(textwrap.dedent(MODELS))
    env_py = project.root / "migrations" / "env.py"
    text = env_py.read_text()
    text = text.replace(
        "target_metadata = None",
        "import sys\nsys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))\n"
        "import expandcontract.autogen\nimport models\ntarget_metadata = models.metadata",
    )
    text = text.replace(
        "connection=connection, target_metadata=target_metadata",
        f"connection=connection, target_metadata=target_metadata, {ENV_LINE}",
    )
    assert ENV_LINE in text
    env_py.write_text(text)
    first = project.alembic("revision", "--autogenerate", "-m", "v1")
    assert first.returncode == 0, first.stderr
    up = project.alembic("upgrade", "head")
    assert up.returncode == 0, up.stderr
    with project.connect() as conn:
        conn.execute("INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO orders (account_id) SELECT 1 + g % 50 FROM generate_series(1, 80) g")
    return project


def autogenerate(project: Project, *answers: str, message: str = "v2") -> Result:
    """`alembic -x ANSWER… revision --autogenerate` against the v2 models."""
    x = [arg for answer in answers for arg in ("-x", answer)]
    return project.alembic(*x, "revision", "--autogenerate", "-m", message, env={"MODELS": "2"})


def test_widened_key_is_one_bigint_key_plan_and_nothing_is_left(tmp_path: Path, database_url: str) -> None:
    project = project_with_hook(tmp_path, database_url)
    (project.root / "models.py").write_text(
        textwrap.dedent(MODELS).replace('"full_name" if V2 else "name"', '"name"')
    )
    result = project.ecm("plan", "auto", "--json", env={"MODELS": "2"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    actions = {d["what"]: (d["action"], d.get("operation")) for d in doc["decisions"]}
    assert actions["change type of accounts.id (integer -> bigint)"] == ("plan", "bigint-key")
    assert actions["change type of orders.account_id (integer -> bigint)"][0] == "covered"
    assert [p["plan_id"] for p in doc["plans"]] == ["bigint_key_accounts_id"]

    for phase in ("expand", "backfill"):
        step = project.ecm("upgrade", "--phase", phase)
        assert step.returncode == 0, step.stderr
    contract = project.ecm("upgrade", "--phase", "contract", "--allow-no-reporters")
    assert contract.returncode == 0, contract.stderr
    with project.connect() as conn:
        assert columns(conn, "accounts")["id"][0] == "bigint"
        assert columns(conn, "orders")["account_id"][0] == "bigint"
        assert conn.execute(
            "SELECT count(*) FROM orders JOIN accounts ON accounts.id = orders.account_id"
        ).fetchone() == (80,)
    again = project.ecm("plan", "auto", "--json", env={"MODELS": "2"})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["decisions"] == []


@pytest.mark.server_independent
def test_constraints_of_a_renamed_column_go_with_the_rename(tmp_path: Path, database_url: str) -> None:
    project = project_with_hook(tmp_path, database_url)
    (project.root / "models.py").write_text(
        textwrap.dedent(MODELS).replace("KEY = sa.BigInteger if V2 else sa.Integer", "KEY = sa.Integer")
    )
    before = set(project.versions())
    result = autogenerate(project, "ecm-rename=accounts.name:full_name")
    assert result.returncode == 0, result.stderr
    assert "rename column accounts.name -> full_name" in result.stderr
    # The unique constraint on name is dropped with it, and the one on full_name waits for the rename.
    assert "covered   drop unique accounts_name_key" in result.stderr, result.stderr
    assert "deferred  add unique constraint" in result.stderr, result.stderr
    written = sorted(p.name for p in set(project.versions()) - before)
    assert [n for n in written if "_ecm_" in n] == [
        n for n in written if "rename_accounts_name_full_name" in n
    ]
    # Nothing else was left for Alembic: no revision of its own.
    assert all("_ecm_" in n for n in written), written


@pytest.mark.server_independent
def test_the_revision_the_hook_leaves_is_lint_clean(tmp_path: Path, database_url: str) -> None:
    project = project_with_hook(tmp_path, database_url)
    extra = (
        textwrap.dedent(MODELS)
        .replace(
            'sa.Column("note", sa.Text, nullable=True),',
            'sa.Column("note", sa.Text, nullable=True),\n    sa.Column("nickname", sa.Text, nullable=True),',
        )
        .replace("KEY = sa.BigInteger if V2 else sa.Integer", "KEY = sa.Integer")
        .replace('"full_name" if V2 else "name"', '"name"')
    )
    (project.root / "models.py").write_text(
        extra + '\nsa.Table("tags", metadata, sa.Column("id", sa.Integer, primary_key=True))\n'
    )
    result = project.alembic("revision", "--autogenerate", "-m", "v2")
    assert result.returncode == 0, result.stderr
    (revision,) = [p for p in project.versions() if p.name.endswith("_v2.py")]
    text = revision.read_text()
    assert "op.add_column('accounts', sa.Column('nickname'" in text
    assert text.count("SET LOCAL lock_timeout = '2s'") == 2  # upgrade() and downgrade()
    lint = project.ecm("lint", "--format", "json")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    up = project.alembic("upgrade", "head")
    assert up.returncode == 0, up.stderr
    down = project.alembic("downgrade", "-1")
    assert down.returncode == 0, down.stderr
    with project.connect() as conn:
        assert "nickname" not in columns(conn, "accounts")


@pytest.mark.server_independent
def test_a_refusal_writes_nothing_and_changes_nothing(tmp_path: Path, database_url: str) -> None:
    project = project_with_hook(tmp_path, database_url)
    (project.root / "models.py").write_text(
        textwrap.dedent(MODELS).replace(
            'sa.Column("note", sa.Text, nullable=True)', 'sa.Column("note", sa.Integer, nullable=True)'
        )
    )
    before_files = set(project.versions())
    with project.connect() as conn:
        before_columns = columns(conn, "accounts")
    result = project.ecm("plan", "auto", "--rename", "accounts.name:full_name", env={"MODELS": "2"})
    assert result.returncode == 2
    assert "change type of accounts.note (text -> integer)" in result.stderr
    assert "--rename accounts.note:note_new" in result.stderr
    hooked = autogenerate(project, "ecm-rename=accounts.name:full_name")
    assert hooked.returncode != 0
    assert "text -> integer" in hooked.stderr
    assert set(project.versions()) == before_files
    assert not (project.root / "migrations" / "contracts").exists()
    with project.connect() as conn:
        assert columns(conn, "accounts") == before_columns


@pytest.mark.server_independent
def test_a_chained_hook_that_fails_takes_the_plans_with_it(tmp_path: Path, database_url: str) -> None:
    project = project_with_hook(tmp_path, database_url)
    env_py = project.root / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            ENV_LINE,
            "process_revision_directives=expandcontract.autogen.rewrite.chain(models.refuse),",
        )
    )
    with (project.root / "models.py").open("a") as f:
        f.write('\nsa.Table("tags", metadata, sa.Column("id", sa.Integer, primary_key=True))\n')  # kept
        f.write(
            "\n\ndef refuse(context, revision, directives):\n    raise RuntimeError('the project says no')\n"
        )
    before = set(project.versions())
    result = autogenerate(project, "ecm-rename=accounts.name:full_name")
    assert result.returncode != 0
    assert "the project says no" in result.stderr
    assert "wrote expand" in result.stderr  # the plans had been written ...
    assert set(project.versions()) == before  # ... and are gone again
    assert not list((project.root / "migrations" / "contracts" / "versions").glob("*.py"))


@pytest.mark.server_independent
def test_without_the_filter_the_hook_still_leaves_in_flight_plans_alone(
    tmp_path: Path, database_url: str
) -> None:
    """env.py has the rewrite hook but not include_object: mid-flight, autogenerate sees the old
    column of the rename and the plan's NOT NULL to come; the hook plans no drop of either."""
    project = project_with_hook(tmp_path, database_url)
    (project.root / "models.py").write_text(
        textwrap.dedent(MODELS).replace("KEY = sa.BigInteger if V2 else sa.Integer", "KEY = sa.Integer")
    )
    first = autogenerate(project, "ecm-rename=accounts.name:full_name")
    assert first.returncode == 0, first.stderr
    assert project.ecm("upgrade", "--phase", "backfill").returncode == 0
    before = set(project.versions())
    mid = autogenerate(project, message="mid")
    assert mid.returncode == 0, mid.stderr
    assert (
        "covered   DropColumn accounts.name: plan rename_accounts_name_full_name is in flight" in mid.stderr
    )
    assert "include_object=expandcontract.autogen.include_object" in mid.stderr
    written = set(project.versions()) - before
    assert all("_ecm_" not in p.name for p in written), written
    for path in written:
        body = path.read_text().split("def upgrade()")[1].split("def downgrade()")[0]
        assert "op.drop_column" not in body and "op.alter_column" not in body


@pytest.mark.server_independent
def test_alembic_check_reports_and_writes_nothing(tmp_path: Path, database_url: str) -> None:
    """`alembic check` runs the hook on a revision it never writes: plans chained after it would
    break the graph. It writes nothing and still reports every difference."""
    project = project_with_hook(tmp_path, database_url)
    before = set(project.versions())
    ini = (project.root / "alembic.ini").read_text()
    check = project.alembic("check", env={"MODELS": "2"})
    assert check.returncode != 0
    assert "New upgrade operations detected" in check.stderr + check.stdout
    assert set(project.versions()) == before
    assert not (project.root / "migrations" / "contracts").exists()
    assert (project.root / "alembic.ini").read_text() == ini
    heads = project.alembic("heads")
    assert heads.returncode == 0, heads.stderr
