"""The models against the database, through Alembic's own comparison and the project's env.py.

``ecm plan auto`` runs the project's ``env.py`` the way ``alembic revision --autogenerate``
does (online, nothing migrated), so the comparison sees what the project configured:
``target_metadata``, ``include_object``/``include_name``, ``include_schemas``,
``compare_type``, comparator plugins. ``--metadata`` swaps in another MetaData; objects that
in-flight plans own are always left out (:mod:`expandcontract.autogen`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import BadInput

if TYPE_CHECKING:
    from alembic.operations.ops import UpgradeOps
    from sqlalchemy import MetaData

    from ..revisions.project import Project


def upgrade_ops(
    project: Project, metadata: MetaData | None = None, *, checks: bool = False, quiet: bool = True
) -> tuple[UpgradeOps, Any]:
    """What ``alembic revision --autogenerate`` would put in ``upgrade()``, before any hook, and
    the MetaData it compared.

    ``quiet``: env.py's ``fileConfig()`` turns Alembic's INFO lines on ("Detected added
    column …"); ecm prints its own account of each difference, so they stay off unless -v.
    """
    from alembic.autogenerate import produce_migrations
    from alembic.runtime.environment import EnvironmentContext

    from ..autogen import combine, include_object
    from ..db.control import preserved_alembic_proxies
    from .checks import compare_checks

    found: list[tuple[UpgradeOps, Any]] = []

    def compare(rev: Any, context: Any) -> list[Any]:
        if context.connection is None:  # pragma: no cover - as_sql=False always connects
            raise BadInput("env.py configured no connection: autogenerate needs the database")
        target = metadata if metadata is not None else context.opts.get("target_metadata")
        if target is None:
            raise BadInput(
                "the project's env.py sets no target_metadata: pass --metadata module:attribute (a SQLAlchemy MetaData)"
            )
        script = context.script
        heads = set(script.get_heads()) if script is not None else set()
        current = set(context.get_current_heads())
        if script is not None and set(script.get_revisions(tuple(current))) != set(
            script.get_revisions(tuple(heads))
        ):
            raise BadInput(
                "the database is not at the head of the Alembic line (it is at "
                f"{', '.join(sorted(current)) or 'base'}; head {', '.join(sorted(heads))}): "
                "apply the pending revisions first, as alembic revision --autogenerate requires"
            )
        theirs = context.opts.get("include_object")
        context.opts["include_object"] = combine(theirs) if theirs is not None else include_object
        migrations = produce_migrations(context, target)
        ops = migrations.upgrade_ops
        assert ops is not None
        if checks:
            compare_checks(context, target, ops)
        found.append((ops, target))
        return []

    script = project.script()
    if quiet:
        logging.disable(logging.INFO)
    try:
        with (
            preserved_alembic_proxies(),
            EnvironmentContext(project.config, script, fn=compare, as_sql=False, dont_mutate=True),
        ):
            script.run_env()
    finally:
        if quiet:
            logging.disable(logging.NOTSET)
    if not found:
        raise BadInput("the project's env.py never ran the comparison (an offline-only env.py?)")
    if len(found) > 1:
        raise BadInput(
            "this project's env.py migrates several databases; ecm plan auto compares one at a time"
        )
    return found[0]
