"""The autogenerate hook (``expandcontract.autogen.rewrite``) as users drive it.

A project made by the real ``alembic init`` (every template that fits, with its driver) whose
``env.py`` gets the one line, ``process_revision_directives=expandcontract.autogen.rewrite``,
and imports the application's ``models.py``; a first revision creates ``users`` and is
applied. Each test changes the models and runs ``alembic revision --autogenerate`` (or
``flask db migrate``) as a subprocess with no terminal on stdin, then reads what was
written: the generated revision keeps the safe operations, the unsafe ones become ecm plan
revisions chained after it (the contract in the contract lineage), questions without an
answer stop the run before any file is written.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import alembic
import psycopg
import pytest

from .conftest import Result
from .project import columns
from .shapes import clean_env, driver_url
from .test_flask_migrate import APP_INIT, MICROBLOG

HOOK = "expandcontract.autogen.rewrite"
INCLUDE = "expandcontract.autogen.include_object"

#: The application's table as the first revision creates it (and as v1 of the models maps it).
V1 = {
    "name": 'Column("name", String(100))',
    "email": 'Column("email", String(200))',
    "age": 'Column("age", Integer)',
    "city": 'Column("city", String(50))',
}

MODELS = '''"""The application's models (written by the test)."""

from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
{columns}
)
{extra}
'''

POSTS = """
posts = Table(
    "posts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("body", Text, nullable=False),
)
"""

FIRST_REVISION = '''"""create users

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100)),
        sa.Column("email", sa.String(200)),
        sa.Column("age", sa.Integer()),
        sa.Column("city", sa.String(50)),
    )


def downgrade() -> None:
    op.drop_table("users")
'''

ROWS = 50

#: (template, driver): the stock templates with the drivers users pair them with; `pyproject`
#: when this Alembic has it (1.16+).
TEMPLATES = [
    ("generic", "psycopg"),
    ("generic", "psycopg2"),
    ("async", "asyncpg"),
    *(
        [("pyproject", "psycopg")]
        if (Path(alembic.__file__).parent / "templates" / "pyproject").is_dir()
        else []
    ),
]


def models(
    changes: Mapping[str, str | None] | None = None, *, extra: str = "", table_args: tuple[str, ...] = ()
) -> str:
    """v1 of the models with ``changes`` (column -> its Column(...), None: gone) and table arguments."""
    cols = {**V1, **(changes or {})}
    lines = [f"    {c}," for c in cols.values() if c is not None] + [f"    {a}," for a in table_args]
    return MODELS.format(columns="\n".join(lines), extra=extra)


def ok(result: Result, what: str = "command") -> Result:
    assert result.returncode == 0, f"{what} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def upgrade_body(text: str) -> str:
    """The body of a revision file's ``upgrade()``."""
    return text.split("def upgrade()", 1)[1].split("def downgrade()", 1)[0]


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (bytecode caches aside): relative path -> content digest."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def run(root: Path, argv: list[str], env: Mapping[str, str] | None = None) -> Result:
    """A subprocess as a user's shell runs it, but with no terminal on stdin (as in CI)."""
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env({"PYTHONDONTWRITEBYTECODE": "1", **(env or {})}),
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# -- a stock Alembic project ----------------------------------------------------------------


@dataclass
class Generated:
    """What one autogenerate run left behind."""

    result: Result
    versions: list[Path]  # new files in the application's versions folder
    contracts: list[Path]  # new files in the contract lineage

    @property
    def own(self) -> Path | None:
        """The revision Alembic itself wrote, if any (not one of ecm's)."""
        own = [f for f in self.versions if "_ecm_" not in f.name]
        assert len(own) <= 1, own
        return own[0] if own else None

    def plan_ids(self, phase: str) -> list[str]:
        files = self.contracts if phase == "contract" else self.versions
        return sorted(
            f.name.split(f"_ecm_{phase}_", 1)[1].removesuffix(".py")
            for f in files
            if f"_ecm_{phase}_" in f.name
        )

    def describe(self) -> str:
        return (
            f"versions: {[f.name for f in self.versions]}\ncontracts: {[f.name for f in self.contracts]}\n"
            f"stdout:\n{self.result.stdout}\nstderr:\n{self.result.stderr}"
        )


@dataclass
class App:
    root: Path
    url: str  # libpq URL of the test database
    template: str
    driver: str
    pristine_env: str = ""  # env.py as `alembic init` wrote it

    @property
    def migrations(self) -> Path:
        return self.root / "migrations"

    @property
    def contracts_dir(self) -> Path:
        return self.migrations / "contracts" / "versions"

    def alembic(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        return run(self.root, ["-m", "alembic", *args], env)

    def ecm(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        return run(self.root, ["-m", "expandcontract", *args], env)

    def models(self, text: str) -> None:
        (self.root / "models.py").write_text(text)

    def env_py(self, hook: str | None = HOOK, *, include_object: bool = False) -> None:
        """The stock env.py plus what a user adds: the models, the hook (and the filter)."""
        path = self.migrations / "env.py"
        text = self.pristine_env
        extra = "".join(
            [
                f", process_revision_directives={hook}" if hook else "",
                f", include_object={INCLUDE}" if include_object else "",
            ]
        )
        edits = [
            (
                "from alembic import context\n",
                "from alembic import context\n\nimport expandcontract.autogen\nimport models\n",
            ),
            ("target_metadata = None\n", "target_metadata = models.metadata\n"),
            (
                "connection=connection, target_metadata=target_metadata",
                f"connection=connection, target_metadata=target_metadata{extra}",
            ),
        ]
        for old, new in edits:
            assert text.count(old) == 1, f"the {self.template} template's env.py changed: no single {old!r}"
            text = text.replace(old, new)
        path.write_text(text)

    def files(self) -> tuple[set[Path], set[Path]]:
        return set((self.migrations / "versions").glob("*.py")), set(self.contracts_dir.glob("*.py"))

    def autogenerate(
        self, *x: str, env: Mapping[str, str] | None = None, message: str = "users v2"
    ) -> Generated:
        versions, contracts = self.files()
        options = [a for item in x for a in ("-x", item)]
        result = self.alembic(*options, "revision", "--autogenerate", "-m", message, env=env)
        after_versions, after_contracts = self.files()
        return Generated(result, sorted(after_versions - versions), sorted(after_contracts - contracts))

    def line(self) -> list[str]:
        """File names of the application line, base first, as Alembic reads it (one head)."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(str(self.migrations))
        heads = script.get_heads()
        assert len(heads) == 1, f"{len(heads)} heads: {heads}"
        revisions = [r for r in script.iterate_revisions(heads[0], "base") if r is not None]
        return [Path(str(r.path)).name for r in reversed(revisions)]  # type: ignore[misc]

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)


def make_app(
    root: Path,
    url: str,
    template: str = "generic",
    driver: str = "psycopg",
    *,
    hook: str | None = HOOK,
    include_object: bool = False,
) -> App:
    """`alembic init -t TEMPLATE migrations`, the URL with its driver, env.py's lines, v1 applied."""
    root.mkdir(parents=True)
    ok(run(root, ["-m", "alembic", "init", "-t", template, "migrations"]), "alembic init")
    ini = root / "alembic.ini"
    ini.write_text(
        "\n".join(
            "sqlalchemy.url = " + driver_url(url, driver).replace("%", "%%")
            if line.startswith("sqlalchemy.url")
            else line
            for line in ini.read_text().splitlines()
        )
        + "\n"
    )
    app = App(root, url, template, driver, (root / "migrations" / "env.py").read_text())
    app.env_py(hook, include_object=include_object)
    app.models(models())
    (app.migrations / "versions").mkdir(exist_ok=True)
    (app.migrations / "versions" / "0001_create_users.py").write_text(FIRST_REVISION)
    ok(app.alembic("upgrade", "head"), "alembic upgrade head")
    with app.connect() as conn:
        conn.execute(
            "INSERT INTO users (name, email, age, city) "
            "SELECT 'n' || g, 'e' || g || '@example.com', g, 'c' || (g %% 7) FROM generate_series(1, %s) g",
            (ROWS,),
        )
    return app


# -- the stock templates ----------------------------------------------------------------------


@pytest.mark.parametrize(("template", "driver"), TEMPLATES, ids=[f"{t}-{d}" for t, d in TEMPLATES])
def test_safe_changes_stay_and_unsafe_ones_become_plans(
    tmp_path: Path, database_url: str, template: str, driver: str
) -> None:
    app = make_app(tmp_path / "app", database_url, template, driver)
    app.models(
        models(
            {
                "age": 'Column("age", BigInteger)',  # retyped: a change-type plan
                "city": None,  # dropped: a drop-column plan
                "last_seen": 'Column("last_seen", DateTime)',  # nullable (no rename candidate for city): stays
            },
            table_args=(
                'Index("ix_users_email", "email")',  # on an existing table: an add-index plan
                'Index("ix_users_last_seen", "last_seen")',  # needs a column this revision adds: deferred
            ),
            extra=POSTS,  # a new table: stays
        )
    )
    gen = app.autogenerate()
    ok(gen.result, "alembic revision --autogenerate")

    own = gen.own
    assert own is not None, gen.describe()
    body = upgrade_body(own.read_text())
    assert re.search(r"op\.create_table\(\s*['\"]posts['\"]", body), body
    assert re.search(r"op\.add_column\(\s*['\"]users['\"],\s*sa\.Column\(['\"]last_seen['\"]", body), body
    for unsafe in ("drop_column", "alter_column", "type_=", "create_index"):
        assert unsafe not in body, f"{unsafe} left in the generated revision:\n{body}"

    plans = ["add_index_users_ix_users_email", "change_type_users_age_bigint", "drop_column_users_city"]
    assert gen.plan_ids("expand") == plans, gen.describe()
    assert gen.plan_ids("backfill") == ["change_type_users_age_bigint"], gen.describe()
    assert gen.plan_ids("contract") == plans[1:], gen.describe()  # an index has nothing to contract
    assert all(f.parent == app.contracts_dir for f in gen.contracts), gen.describe()
    ecm_files = [f for f in gen.versions if f != own]
    assert all(re.fullmatch(r"\w+_ecm_(expand|backfill)_\w+\.py", f.name) for f in ecm_files), gen.describe()

    # What moved and why, on stderr.
    err = gen.result.stderr
    for line in (
        r"kept\s+create table posts",
        r"kept\s+add column users\.last_seen",
        r"planned\s+drop column users\.city: .*-> plan drop_column_users_city",
        r"planned\s+change type of users\.age \(integer -> bigint\).*-> plan change_type_users_age_bigint",
        r"planned\s+create index ix_users_email on users: .*-> plan add_index_users_ix_users_email",
        r"deferred\s+create index ix_users_last_seen on users: needs column\(s\) last_seen",
    ):
        assert re.search(line, err), f"no {line!r} on stderr:\n{err}"
    assert gen.result.stdout.count("_ecm_") == 0, gen.result.stdout

    # One line, one head: the first revision, the generated one, then the plans' revisions.
    heads = ok(app.alembic("heads"), "alembic heads").stdout.strip().splitlines()
    assert len(heads) == 1 and "(head)" in heads[0], heads
    line = app.line()
    assert line[:2] == ["0001_create_users.py", own.name], line
    assert sorted(line[2:]) == sorted(f.name for f in ecm_files), line
    assert heads[0].split()[0] in line[-1], (heads, line)

    # The project's own `alembic upgrade head` runs it all on its own driver.
    ok(app.alembic("upgrade", "head"), "alembic upgrade head")
    with app.connect() as conn:
        cols = columns(conn, "users")
        assert "last_seen" in cols and "city" in cols, cols  # city goes at the contract
        assert conn.execute("SELECT to_regclass('public.posts')").fetchone() != (None,)


# -- questions: renames and fills ---------------------------------------------------------------

RENAME = "users.name:full_name"
#: v1 with `name` mapped as `full_name`: a rename candidate.
RENAMED = models({"name": None, "full_name": 'Column("full_name", String(100))'})
#: v1 with `email` NOT NULL: needs a fill.
NOT_NULL = models({"email": 'Column("email", String(200), nullable=False)'})


def test_open_questions_without_a_terminal_stop_before_any_file(tmp_path: Path, database_url: str) -> None:
    app = make_app(tmp_path / "app", database_url)
    before = tree(app.root)
    for text, key, option, other in (
        (RENAMED, "users.name", "ecm-rename", "full_name"),
        (NOT_NULL, "users.email", "ecm-fill", "NOT NULL"),
    ):
        app.models(text)
        gen = app.autogenerate()
        out = gen.result.stdout + gen.result.stderr
        assert gen.result.returncode != 0, gen.describe()
        for word in (key, option, other):
            assert word in out, f"{word!r} not in the refusal:\n{out}"
        assert "Traceback" not in out, out
        assert gen.versions == [] and gen.contracts == [], gen.describe()
        assert tree(app.root) == before | {"models.py": tree(app.root)["models.py"]}, gen.describe()
        assert not (app.migrations / "contracts").exists()


@pytest.mark.parametrize("how", ["x", "env"])
def test_a_rename_told_by_x_or_the_environment_is_a_rename_plan(
    tmp_path: Path, database_url: str, how: str
) -> None:
    app = make_app(tmp_path / "app", database_url)
    app.models(RENAMED)
    if how == "x":
        gen = app.autogenerate(f"ecm-rename={RENAME}")
    else:
        gen = app.autogenerate(env={"ECM_RENAME": RENAME})
    ok(gen.result, "autogenerate")
    plan = "rename_users_name_full_name"
    assert gen.plan_ids("expand") == gen.plan_ids("backfill") == gen.plan_ids("contract") == [plan], (
        gen.describe()
    )
    err = gen.result.stderr
    assert re.search(rf"planned\s+rename column users\.name -> full_name: .*-> plan {plan}", err), err
    assert re.search(r"covered\s+add column users\.full_name", err), err
    # Everything became a plan: Alembic wrote no revision of its own, and says so.
    assert gen.own is None, gen.describe()
    assert "nothing safe was left" in err, err
    line = app.line()
    assert line[0] == "0001_create_users.py" and sorted(line[1:]) == sorted(f.name for f in gen.versions), (
        line
    )


def test_no_rename_from_the_environment_is_a_drop_column_plan(tmp_path: Path, database_url: str) -> None:
    app = make_app(tmp_path / "app", database_url)
    app.models(RENAMED)
    gen = app.autogenerate(env={"ECM_NO_RENAME": "users.name"})
    ok(gen.result, "autogenerate")
    assert gen.plan_ids("expand") == gen.plan_ids("contract") == ["drop_column_users_name"], gen.describe()
    own = gen.own
    assert own is not None, gen.describe()
    body = upgrade_body(own.read_text())
    assert re.search(r"op\.add_column\(\s*['\"]users['\"],\s*sa\.Column\(['\"]full_name['\"]", body), body
    assert "drop_column" not in body, body
    assert re.search(
        r"planned\s+drop column users\.name: .*-> plan drop_column_users_name", gen.result.stderr
    )
    assert app.line()[:2] == ["0001_create_users.py", own.name]


@pytest.mark.parametrize("how", ["x", "env"])
def test_not_null_with_a_fill_is_a_set_not_null_plan(tmp_path: Path, database_url: str, how: str) -> None:
    app = make_app(tmp_path / "app", database_url)
    app.models(NOT_NULL)
    if how == "x":
        gen = app.autogenerate("ecm-fill=users.email=''")
    else:
        gen = app.autogenerate(env={"ECM_FILL": "users.email=''"})
    ok(gen.result, "autogenerate")
    plan = "set_not_null_users_email"
    assert gen.plan_ids("expand") == gen.plan_ids("contract") == [plan], gen.describe()
    assert gen.own is None, gen.describe()
    assert re.search(rf"planned\s+set users\.email NOT NULL: .*-> plan {plan}", gen.result.stderr)
    expand = next(f for f in gen.versions if "_ecm_expand_" in f.name).read_text()
    assert "''" in expand, expand  # the fill is in the plan


# -- off ----------------------------------------------------------------------------------------


def normalized(path: Path) -> str:
    """A generated revision without what differs between two runs: its id and date."""
    rev = path.name.split("_", 1)[0]
    return re.sub(r"Create Date: .*", "", path.read_text().replace(rev, "REV"))


def test_off_leaves_the_revision_as_alembic_writes_it(tmp_path: Path, database_url: str) -> None:
    app = make_app(tmp_path / "app", database_url, hook=None)
    app.models(
        models(
            {
                "name": None,  # a rename candidate …
                "full_name": 'Column("full_name", String(100))',
                "email": 'Column("email", String(200), nullable=False)',  # … NOT NULL without a fill …
                "age": 'Column("age", BigInteger)',
                "city": None,
            },
            table_args=('Index("ix_users_email", "email")',),
        )
    )
    # Alembic orders some operations by set iteration: one hash seed for every run compared.
    seed = {"PYTHONHASHSEED": "0"}
    baseline = app.autogenerate(message="v2", env=seed)  # env.py without the hook
    ok(baseline.result, "autogenerate without the hook")
    assert baseline.own is not None and baseline.versions == [baseline.own], baseline.describe()
    expected = normalized(baseline.own)
    body = upgrade_body(expected)
    for op in ("drop_column", "alter_column", "type_=sa.BigInteger()", "nullable=False", "create_index"):
        assert op in body, f"the baseline has no {op}:\n{body}"
    baseline.own.unlink()

    app.env_py(HOOK)
    for x, env in ((("ecm=off",), seed), ((), {"ECM_AUTOGEN": "off", **seed})):
        gen = app.autogenerate(*x, env=env, message="v2")
        ok(gen.result, f"autogenerate with {x or env}")
        assert gen.own is not None and gen.versions == [gen.own] and gen.contracts == [], gen.describe()
        assert normalized(gen.own) == expected
        assert "expandcontract" not in gen.result.stderr, gen.result.stderr
        gen.own.unlink()
    assert not (app.migrations / "contracts").exists()


# -- include_object ------------------------------------------------------------------------------


def test_with_include_object_an_expanded_rename_is_not_proposed_again(
    tmp_path: Path, database_url: str
) -> None:
    app = make_app(tmp_path / "app", database_url, include_object=True)
    app.models(RENAMED)
    gen = app.autogenerate(env={"ECM_RENAME": RENAME})
    ok(gen.result, "autogenerate")
    assert gen.plan_ids("expand") == ["rename_users_name_full_name"], gen.describe()

    ok(app.ecm("upgrade", "--phase", "expand"), "ecm upgrade --phase expand")
    with app.connect() as conn:
        assert {"name", "full_name"} <= set(columns(conn, "users"))

    # Both shapes are in the database, the models map one: nothing is proposed about either.
    again = app.autogenerate(message="again")
    ok(again.result, "autogenerate after the expand")
    assert again.contracts == [] and again.plan_ids("expand") == [], again.describe()
    for word in ("users.name", "full_name", "ecm-rename"):
        assert word not in again.result.stderr, again.describe()
    own = again.own
    if own is not None:  # stock Alembic writes a revision even when nothing differs
        assert "op." not in upgrade_body(own.read_text()), own.read_text()


# -- with_checks ------------------------------------------------------------------------------


def test_with_checks_a_named_check_becomes_an_add_check_plan(tmp_path: Path, database_url: str) -> None:
    app = make_app(tmp_path / "app", database_url)
    app.models(models(table_args=('CheckConstraint("age >= 0", name="users_age_nonnegative")',)))
    plain = app.autogenerate(message="plain")  # Alembic compares no checks: nothing to plan
    ok(plain.result, "autogenerate with the plain hook")
    assert plain.contracts == [] and plain.plan_ids("expand") == [], plain.describe()
    for f in plain.versions:
        f.unlink()

    app.env_py(f"{HOOK}.with_checks()")
    gen = app.autogenerate()
    ok(gen.result, "autogenerate with_checks()")
    assert gen.own is None, gen.describe()
    [plan] = gen.plan_ids("expand")
    assert plan.startswith("add_check_users_") and "users_age_nonnegative" in plan, gen.describe()
    assert gen.plan_ids("contract") == [plan], gen.describe()
    assert re.search(
        rf"planned\s+add check users_age_nonnegative on users: .*-> plan {plan}", gen.result.stderr
    )
    assert "age >= 0" in next(f for f in gen.versions if "_ecm_expand_" in f.name).read_text()


# -- Flask-Migrate --------------------------------------------------------------------------------

FLASK_MODELS = """from app import db


class User(db.Model):
    __tablename__ = "users"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(64), nullable=False{name_index})
    email = db.Column(db.String(120), index=True, unique=True)
{more}
"""

#: The documented setup in Flask-Migrate's env.py: ours first, then theirs (which drops empty revisions).
FLASK_STOCK = """    conf_args = current_app.extensions['migrate'].configure_args
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives
"""
FLASK_CHAINED = """    conf_args = current_app.extensions['migrate'].configure_args
    conf_args["process_revision_directives"] = expandcontract.autogen.rewrite.chain(
        conf_args.get("process_revision_directives") or process_revision_directives
    )
"""


def test_flask_migrate_chains_the_hook(tmp_path: Path, database_url: str) -> None:
    root = tmp_path / "microblog"
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text(APP_INIT)  # Migrate(..., include_object=…)
    (root / "microblog.py").write_text(MICROBLOG)
    env = {"FLASK_APP": "microblog.py", "DATABASE_URL": driver_url(database_url, "psycopg2")}
    versions = root / "migrations" / "versions"
    contracts = root / "migrations" / "contracts" / "versions"

    def flask(*args: str) -> Result:
        return run(root, ["-m", "flask", *args], env)

    def write_models(**kw: str) -> None:
        (root / "app" / "models.py").write_text(FLASK_MODELS.format(**{"name_index": "", "more": "", **kw}))

    def migrate(message: str, **kw: str) -> Generated:
        write_models(**kw)
        before = set(versions.glob("*.py")), set(contracts.glob("*.py"))
        result = flask("db", "migrate", "-m", message)
        return Generated(
            result,
            sorted(set(versions.glob("*.py")) - before[0]),
            sorted(set(contracts.glob("*.py")) - before[1]),
        )

    write_models()
    ok(flask("db", "init"), "flask db init")
    env_py = root / "migrations" / "env.py"
    text = env_py.read_text()
    assert text.count(FLASK_STOCK) == 1, "Flask-Migrate's env.py changed"
    env_py.write_text("import expandcontract.autogen\n" + text.replace(FLASK_STOCK, FLASK_CHAINED))

    about_me = "    about_me = db.Column(db.String(140))"
    first = migrate("users", more=about_me)
    ok(first.result, "flask db migrate (v1)")
    assert first.own is not None and first.contracts == [], first.describe()
    assert "create_table('users'" in first.own.read_text() or 'create_table("users"' in first.own.read_text()
    ok(flask("db", "upgrade"), "flask db upgrade")

    # v2: a nullable column (stays in Flask-Migrate's revision) and a dropped one (a plan).
    second = migrate("last seen", more="    last_seen = db.Column(db.DateTime)")
    ok(second.result, "flask db migrate (v2)")
    assert second.own is not None, second.describe()
    body = upgrade_body(second.own.read_text())
    assert "add_column" in body and "last_seen" in body and "drop_column" not in body, body
    assert second.plan_ids("expand") == second.plan_ids("contract") == ["drop_column_users_about_me"]
    ok(flask("db", "upgrade"), "flask db upgrade")

    # v3: only an index on an existing table, which becomes a plan: no empty revision, no error.
    third = migrate("name index", name_index=", index=True", more="    last_seen = db.Column(db.DateTime)")
    ok(third.result, "flask db migrate (v3)")
    assert third.own is None, third.describe()
    assert third.plan_ids("expand") == ["add_index_users_ix_users_name"], third.describe()
    assert "nothing safe was left" in third.result.stderr, third.describe()
    ok(flask("db", "upgrade"), "flask db upgrade")

    # Nothing differs (about_me is the in-flight drop's): Flask-Migrate's own function still runs.
    fourth = migrate("nothing", name_index=", index=True", more="    last_seen = db.Column(db.DateTime)")
    ok(fourth.result, "flask db migrate (v4)")
    assert fourth.versions == [] and fourth.contracts == [], fourth.describe()
    assert "No changes in schema detected" in fourth.result.stderr, fourth.describe()


#: Project shapes, drivers and frameworks: the same on every server version (.ci/run runs them once).
pytestmark = pytest.mark.server_independent
