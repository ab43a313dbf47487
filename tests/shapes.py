"""Alembic projects in the shapes teams already have: every `alembic init` template, every driver.

Made with the real `alembic init -t TEMPLATE`, then given what a team's project has: a
first revision creating the application's tables and its driver in ``sqlalchemy.url``.
Nothing of ecm's is configured: no ``ECM_DATABASE_URL``, so ecm must find the database
the way the project's own ``alembic`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from .conftest import Result

#: (template, driver) pairs that fit: sync templates with sync drivers, async ones with async drivers.
MATRIX = [
    ("generic", "psycopg2"),
    ("generic", "psycopg"),
    ("async", "asyncpg"),
    ("async", "psycopg"),
    ("pyproject", "psycopg2"),
    ("pyproject", "psycopg"),
    ("pyproject_async", "asyncpg"),
    ("pyproject_async", "psycopg"),
]

FIRST_REVISION = '''"""create accounts

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "name text NOT NULL, email text)"
    )
    op.execute("CREATE UNIQUE INDEX accounts_email_key ON accounts (email)")


def downgrade() -> None:
    op.execute("DROP TABLE accounts")
'''


def driver_url(url: str, driver: str) -> str:
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a project that knows nothing of ecm's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECM_")}
    env["ECM_LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


@dataclass
class Shape:
    root: Path
    url: str  # libpq URL of the test database
    template: str
    driver: str

    @property
    def contracts_dir(self) -> Path:
        return self.root / "migrations" / "contracts"

    def ecm(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        return self._run("expandcontract", args, env, timeout)

    def alembic(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self._run("alembic", args, env, 300)

    def _run(self, module: str, args: tuple[str, ...], env: dict[str, str] | None, timeout: float) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=clean_env(env),
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)


def make_shape(root: Path, url: str, template: str, driver: str) -> Shape:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "alembic", "init", "-t", template, "migrations"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    ini = root / "alembic.ini"
    lines = []
    for line in ini.read_text().splitlines():
        if line.startswith("sqlalchemy.url"):
            line = "sqlalchemy.url = " + driver_url(url, driver).replace("%", "%%")
        lines.append(line)
    ini.write_text("\n".join(lines) + "\n")
    (root / "migrations" / "versions").mkdir(exist_ok=True)
    (root / "migrations" / "versions" / "0001_create_accounts.py").write_text(FIRST_REVISION)
    return Shape(root, url, template, driver)
