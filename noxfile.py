"""Test and lint sessions; `.ci/run` and the README call exactly these."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """pytest against a real PostgreSQL: ECM_TEST_DATABASE_URL, else the embedded server."""
    session.install("-e", ".[dev,embedded]")
    # Tests mostly wait on PostgreSQL and on `ecm` subprocesses, so three workers on two
    # cores nearly halve the run; each worker gets its own embedded server when needed.
    workers = os.environ.get("ECM_TEST_WORKERS", "3")
    # The slowest tests, printed at the end: where to look when the run grows past its budget.
    session.run("pytest", "-n", workers, "--durations=15", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format) and mypy --strict on the package."""
    session.install("-e", ".[dev,embedded]")
    session.run("ruff", "check", "expandcontract", "tests", "benchmarks", "migrations", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "expandcontract", "tests", "benchmarks", "migrations", "noxfile.py"
    )
    session.run("mypy", "--strict", "expandcontract")
