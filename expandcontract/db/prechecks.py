"""Counting what would make a step fail before anything is built: duplicates before a unique
index, orphans before a foreign key, violations before a check.

A ``precheck`` step's SQL is a query returning ``(total, sample)`` rows, ``total`` being
``count(*) OVER ()`` over every offending row and ``sample`` a readable key, limited to a
few rows (see :func:`expandcontract.sql.prechecks.violations`). The same query runs at plan
time (so ``ecm plan`` exits 1 before any file is written) and as the phase's first step
(rows may have changed since), live here and offline as a DO block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BadInput, OperationalError, first_line
from ..plan.model import Plan, Step

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class Violations(OperationalError):
    """Rows that the change would reject: exit 1, nothing built."""


def run(conn: Connection, step: Step) -> None:
    """Raise :class:`Violations` with the count and sample keys when the query finds rows."""
    rows = conn.exec_driver_sql(step.sql, execution_options={"no_parameters": True}).fetchall()
    if rows:
        total = int(rows[0][0])
        samples = ", ".join(str(r[1]) for r in rows)
        raise Violations(f"{step.name}: {total} row(s), e.g. {samples}; nothing was changed")


#: SQLSTATE classes that mean the user's SQL is wrong, not the database: data exceptions (22)
#: and syntax errors or access rule violations (42: undefined function, wrong types, ...).
_INPUT_CLASSES = ("22", "42")


def run_all(conn: Connection, plan: Plan) -> None:
    """Every precheck of a plan's upgrade steps, at plan time.

    The precheck is the first time the server reads an expression the user gave (a check, a
    split, a fill): what it rejects as malformed is bad input (exit 2), like pglast's refusals.
    """
    from sqlalchemy.exc import DBAPIError

    for phase in plan.phases:
        for step in phase.upgrade:
            if step.kind != "precheck":
                continue
            try:
                run(conn, step)
            except DBAPIError as exc:
                state = str(getattr(exc.orig, "sqlstate", "") or "")
                if state[:2] in _INPUT_CLASSES:
                    raise BadInput(f"{step.name}: the server rejects it: {first_line(exc)}") from exc
                raise
