"""``alembic revision --autogenerate`` that keeps the safe changes and hands the unsafe ones to plans.

One line in ``env.py``::

    context.configure(..., process_revision_directives=expandcontract.autogen.rewrite)

The generated revision keeps what is safe as Alembic wrote it (new tables, nullable
columns, constant defaults, comments); every breaking change leaves it and becomes an
``ecm`` plan, written beside it and chained after it (its expand and backfill on the same
line, its contract in the contract lineage). What moved, and why, is printed on stderr.
When nothing is left, Alembic writes no empty revision.

A possible rename is never written as a drop: on a terminal the hook asks; otherwise it
stops with the candidates until told, through ``-x`` arguments or the environment::

    alembic -x ecm-rename=users.name:full_name revision --autogenerate -m "..."
    ECM_RENAME=users.name:full_name ECM_NO_RENAME=users.bio alembic revision --autogenerate
    ECM_FILL="users.email=''" alembic revision --autogenerate        # a column made NOT NULL

``-x ecm=off`` (or ``ECM_AUTOGEN=off``) leaves the revision as Alembic wrote it.

A project that already passes its own hook (Flask-Migrate's ``env.py`` does, through
``conf_args``) chains it: ``expandcontract.autogen.rewrite.chain(theirs)``; ours runs first,
so theirs sees the revision as it will be written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flow import Outcome

Directives = Callable[[Any, Any, list[Any]], None]

_ENV = {"rename": "ECM_RENAME", "no-rename": "ECM_NO_RENAME", "fill": "ECM_FILL"}


def _x_values(context: Any, key: str) -> list[str]:
    """Every ``-x ecm-KEY=value`` given to alembic (repeatable), in order."""
    config = getattr(context, "config", None)
    cmd_opts = getattr(config, "cmd_opts", None)
    raw: Sequence[str] = getattr(cmd_opts, "x", None) or ()
    out = []
    for item in raw:
        name, sep, value = item.partition("=")
        if sep and name.strip() == f"ecm-{key}":
            out.append(value)
    return out


def _choices(context: Any) -> Any:
    from .classify import Choices

    def split(text: str, separators: str) -> list[str]:
        parts = [text]
        for sep in separators:
            parts = [p for chunk in parts for p in chunk.split(sep)]
        return [p.strip() for p in parts if p.strip()]

    renames = [v for x in _x_values(context, "rename") for v in split(x, ",")]
    no_renames = [v for x in _x_values(context, "no-rename") for v in split(x, ",")]
    fills = [x for x in _x_values(context, "fill")]
    renames += split(os.environ.get(_ENV["rename"], ""), ", ")
    no_renames += split(os.environ.get(_ENV["no-rename"], ""), ", ")
    fills += split(os.environ.get(_ENV["fill"], ""), "\n")
    return Choices.parse(renames, no_renames, fills)


def _off(context: Any) -> bool:
    """``-x ecm=off`` or ``ECM_AUTOGEN=off``: the revision stays as Alembic wrote it."""
    values = [os.environ.get("ECM_AUTOGEN", "")]
    config = getattr(context, "config", None)
    for item in getattr(getattr(config, "cmd_opts", None), "x", None) or ():
        name, sep, value = item.partition("=")
        if sep and name.strip() == "ecm":
            values.append(value)
    return any(v.strip().lower() in ("off", "0", "false", "no") for v in values)


def _alembic_command(context: Any) -> str | None:
    """The ``alembic.command`` function running now (``revision``, ``check``, …), None outside one.

    ``alembic check`` (and ``flask db check``) runs the same hook on a revision it never writes:
    plans chained after it would point at a revision that does not exist. Only ``revision``
    writes; ``check`` then reports every difference, unsafe ones included, as it should.
    The alembic CLI names its command in ``cmd_opts.cmd``; otherwise the stack tells, by the
    qualified name of the code (an async env.py runs the hook in a greenlet whose stack holds
    only ``revision.<locals>.retrieve_migrations``, not ``revision`` itself).
    """
    cmd = getattr(getattr(getattr(context, "config", None), "cmd_opts", None), "cmd", None)
    if isinstance(cmd, tuple) and cmd and callable(cmd[0]):
        return str(getattr(cmd[0], "__name__", "")) or None
    found = None
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.replace(os.sep, "/").endswith("alembic/command.py"):
            found = code.co_qualname.split(".")[0]
        frame = frame.f_back  # type: ignore[assignment]
    return found


class Rewrite:
    """The ``process_revision_directives`` hook (see the module docstring)."""

    def __init__(self, chained: Iterable[Directives] = (), *, checks: bool = False) -> None:
        self._chained = tuple(chained)
        self._checks = checks

    def chain(self, *others: Directives | None) -> Rewrite:
        """This hook, then the project's own (None is skipped)."""
        return Rewrite((*self._chained, *(o for o in others if o is not None)), checks=self._checks)

    def with_checks(self) -> Rewrite:
        """Also compare named CHECK constraints (Alembic does not): a new one becomes an add-check plan."""
        return Rewrite(self._chained, checks=True)

    def __call__(self, context: Any, revision: Any, directives: list[Any]) -> None:
        acts = directives and not _off(context) and _alembic_command(context) in (None, "revision")
        outcome = self._rewrite(context, directives) if acts else None
        try:
            for other in self._chained:
                if not directives:  # everything became plans: no revision left to hand on
                    break
                other(context, revision, directives)
        except BaseException:
            if outcome is not None:  # the command fails: leave no plan behind without its revision
                outcome.take_back()
            raise

    def _rewrite(self, context: Any, directives: list[Any]) -> Outcome | None:
        """Sort the revision's operations; what was written (None: nothing to sort)."""
        from alembic.util import CommandError

        from ..errors import EcmError

        script = directives[0]
        if len(script.upgrade_ops_list) != 1:
            print(
                "expandcontract: a multi-database revision is left as Alembic wrote it "
                "(run `ecm plan auto` against each database instead)",
                file=sys.stderr,
            )
            return None
        upgrade_ops = script.upgrade_ops
        if context.connection is None:  # --sql: nothing was compared
            return None
        if self._checks:
            from .checks import compare_checks

            compare_checks(context, context.opts.get("target_metadata"), upgrade_ops)
        if upgrade_ops.is_empty():
            return None
        try:
            outcome = _plan(context, script, upgrade_ops)
        except EcmError as exc:  # bad input, a precheck that found duplicates or orphans, …
            raise CommandError(f"expandcontract: {exc}") from None
        from .classify import apply
        from .flow import summary_lines

        apply(upgrade_ops, outcome.decisions)
        reversed_ops = upgrade_ops.reverse()
        old = script.downgrade_ops
        if old is not None:
            reversed_ops.downgrade_token = old.downgrade_token
        script.downgrade_ops = reversed_ops
        if _locks_existing_tables(upgrade_ops):
            for side in (upgrade_ops, reversed_ops):
                side.ops.insert(0, _lock_timeout_op())
        lines = summary_lines(outcome)
        print("expandcontract: autogenerate's changes, sorted:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        for _, authored in outcome.authored:
            for f in authored.files:
                print(f"  wrote {f['phase']:<9} {f['path']}", file=sys.stderr)
        if outcome.authored:
            phases = {f["phase"] for _, a in outcome.authored for f in a.files}
            steps = [f"--phase {p}" for p in ("expand", "backfill") if p in phases]
            parts = [f"ecm upgrade {', then '.join(steps)} (or alembic upgrade head)"] if steps else []
            if "contract" in phases:
                parts.append("deploy the new code; ecm upgrade --phase contract")
            print("  next: " + "; ".join(parts), file=sys.stderr)
        if upgrade_ops.is_empty() and outcome.authored:
            directives[:] = []  # everything became plans: no empty revision
            print("  (nothing safe was left: no revision file of Alembic's own)", file=sys.stderr)
        return outcome


#: What the kept statements wait for a lock at most: a plain revision has no retries, so failing
#: fast (and running the deploy again) beats queueing every query on the table behind it.
KEPT_LOCK_TIMEOUT = "2s"


def _locks_existing_tables(upgrade_ops: Any) -> bool:
    """Whether what stays alters a table that exists (a new table's own DDL locks nothing in use)."""
    from alembic.operations import ops

    created = {(op.schema, op.table_name) for op in upgrade_ops.ops if isinstance(op, ops.CreateTableOp)}
    for op in upgrade_ops.ops:
        if isinstance(op, ops.ModifyTableOps) and (op.schema, op.table_name) not in created:
            return True
        if isinstance(op, ops.DropTableOp):
            return True
    return False


def _lock_timeout_op() -> Any:
    from alembic.operations import ops

    return ops.ExecuteSQLOp(f"SET LOCAL lock_timeout = '{KEPT_LOCK_TIMEOUT}'")


def _plan(context: Any, script: Any, upgrade_ops: Any) -> Outcome:
    from rich.console import Console

    from ..db.engine import connect, own_engine
    from ..revisions.authoring import FROM_FILES
    from ..revisions.project import load
    from .flow import decide, write_plans

    interactive = sys.stdin.isatty()
    result, _ = decide(
        upgrade_ops,
        _choices(context),
        console=Console(stderr=True) if interactive else None,
        how=_how,
        metadata=context.opts.get("target_metadata"),
        owner=_in_flight_owner(context),
    )
    if all(d.action == "alembic" for d in result.decisions):
        from .flow import Outcome

        return Outcome(list(result.decisions))
    config = context.config
    if config is None or not config.config_file_name:
        from ..errors import BadInput

        raise BadInput("the hook needs the project's Alembic config file to write plans beside the revision")
    project = load(Path(config.config_file_name), config.config_ini_section)
    engine = own_engine(context.connection)
    try:
        keeps = any(d.action == "alembic" or d.keep is not None for d in result.decisions)
        return write_plans(
            result,
            connect=lambda: connect(engine),
            project=project,
            message=script.message,
            dry_run=False,
            app_head=script.rev_id if keeps else FROM_FILES,
        )
    finally:
        engine.dispose()


def _in_flight_owner(context: Any) -> Any:
    """Which in-flight plan owns a table's columns, read once from the database being compared.

    With ``include_object=expandcontract.autogen.include_object`` in env.py those objects never
    reach the diff; without it, this keeps the hook from planning a drop of what a plan still needs
    (the old column of a rename, a shadow column).
    """
    from ..autogen import in_flight

    try:
        heads = context.get_current_heads()
    except Exception:
        heads = None
    state = in_flight(context.connection, context.script, current_heads=heads)
    if not state.plans:
        return None

    def owner(table: tuple[str | None, str], columns: frozenset[str]) -> str | None:
        schema = table[0] or state.default_schema
        for plan in state.plans:
            if "*" in columns and (schema, table[1]) in plan.columns:
                return plan.plan_id
            if any(plan.owns_column(schema, table[1], c) for c in columns - {"*"}):
                return plan.plan_id
        return None

    return owner


def _how(question: Any) -> str:
    if question.kind == "rename":
        target = question.options[0] if question.options else "NEW"
        return (
            f"-x ecm-rename={question.key}:{target} (or ECM_RENAME={question.key}:{target}) for a rename, "
            f"-x ecm-no-rename={question.key} (or ECM_NO_RENAME={question.key}) for a drop"
        )
    return f'-x "ecm-fill={question.key}=SQL" (or ECM_FILL="{question.key}=SQL")'


#: The hook itself: ``process_revision_directives=expandcontract.autogen.rewrite``.
rewrite = Rewrite()
