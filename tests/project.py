"""A throwaway Alembic project (stock `alembic init` env.py) bound to a test database."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .conftest import Result, run_ecm


@dataclass
class Project:
    root: Path
    url: str  # libpq URL of the test database

    def ecm(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        return run_ecm(
            *args, cwd=self.root, env={"ECM_DATABASE_URL": self.url, **(env or {})}, timeout=timeout
        )

    def alembic(self, *args: str, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**os.environ, "ECM_LOG_FORMAT": "json", **(env or {})},
            timeout=300,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def versions(self) -> list[Path]:
        return sorted((self.root / "migrations" / "versions").glob("*.py"))

    def contracts(self) -> list[Path]:
        return sorted((self.root / "migrations" / "contracts" / "versions").glob("*.py"))

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)


_INITIALIZED: list[Path] = []


def _alembic_init() -> Path:
    """What `alembic init migrations` writes, made once per test process and copied from then on
    (the files do not depend on where they go: alembic.ini names the folder as %(here)s/migrations)."""
    if not _INITIALIZED:
        where = Path(tempfile.mkdtemp(prefix="ecm-alembic-init-"))
        atexit.register(shutil.rmtree, where, True)
        subprocess.run(
            [sys.executable, "-m", "alembic", "init", "migrations"],
            cwd=where,
            check=True,
            capture_output=True,
        )
        _INITIALIZED.append(where)
    return _INITIALIZED[0]


def make_project(root: Path, url: str) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    template = _alembic_init()
    shutil.copytree(template / "migrations", root / "migrations")  # fails if it exists, as alembic init does
    shutil.copy2(template / "alembic.ini", root / "alembic.ini")
    ini = root / "alembic.ini"
    lines = []
    for line in ini.read_text().splitlines():
        if line.startswith("sqlalchemy.url"):
            line = "sqlalchemy.url = " + url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
                "%", "%%"
            )
        lines.append(line)
    ini.write_text("\n".join(lines) + "\n")
    return Project(root, url)


def columns(
    conn: psycopg.Connection[tuple[object, ...]], table: str, schema: str = "public"
) -> dict[str, tuple[object, ...]]:
    """name -> (type, nullable, default, collation) for a table."""
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), co.collname
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (schema, table),
    ).fetchall()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def constraints(
    conn: psycopg.Connection[tuple[object, ...]], table: str, schema: str = "public"
) -> dict[str, tuple[str, bool]]:
    """name -> (definition, validated) for a table's constraints.

    NOT NULL constraints (catalogued from PostgreSQL 18 on) are left out: `columns()` reports
    nullability the same way on every version.
    """
    rows = conn.execute(
        """
        SELECT conname, pg_get_constraintdef(c.oid), convalidated FROM pg_constraint c
        WHERE conrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND contype <> 'n'
        """,
        (schema, table),
    ).fetchall()
    return {str(r[0]): (str(r[1]), bool(r[2])) for r in rows}


def indexes(
    conn: psycopg.Connection[tuple[object, ...]], table: str, schema: str = "public"
) -> dict[str, tuple[str, bool]]:
    rows = conn.execute(
        """
        SELECT i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
        """,
        (schema, table),
    ).fetchall()
    return {str(r[0]): (str(r[1]), bool(r[2])) for r in rows}


def triggers(conn: psycopg.Connection[tuple[object, ...]], table: str, schema: str = "public") -> list[str]:
    rows = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) "
        "AND NOT tgisinternal",
        (schema, table),
    ).fetchall()
    return sorted(str(r[0]) for r in rows)
