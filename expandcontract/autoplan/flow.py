"""From sorted differences to plans on disk: questions asked or refused, plans written in order.

Shared by ``ecm plan auto`` and the autogenerate hook. Nothing is written while a question
is open or a difference is refused; plans written before one fails are removed again, so a
run writes all of its plans or none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from .classify import Choices, Decision, Owner, Question, Result, classify

if TYPE_CHECKING:
    from alembic.operations.ops import UpgradeOps
    from rich.console import Console

    from ..revisions.authoring import Authored
    from ..revisions.project import Project


def decide(
    upgrade_ops: UpgradeOps,
    choices: Choices,
    *,
    console: Console | None,
    how: Callable[[Question], str],
    metadata: Any = None,
    owner: Owner | None = None,
) -> tuple[Result, Choices]:
    """Classify; ask the open questions on a terminal (``console``), else refuse naming them."""
    while True:
        result = classify(upgrade_ops, choices, metadata, owner)
        if not result.questions:
            break
        if console is None:
            raise BadInput(refusal(result.questions, how))
        choices = ask(result.questions[0], choices, console)
    if result.refused:
        first = result.refused[0]
        more = f" (and {len(result.refused) - 1} more)" if len(result.refused) > 1 else ""
        raise BadInput(f"{first.what}: {first.why}{more}")
    return result, choices


def refusal(questions: list[Question], how: Callable[[Question], str]) -> str:
    parts = [f"{q.text} Decide with {how(q)}" for q in questions]
    return "not written: " + " | ".join(parts)


def ask(question: Question, choices: Choices, console: Console) -> Choices:
    """One question on the terminal; the answer joins the choices."""
    from rich.markup import escape
    from rich.prompt import Prompt

    console.print(f"[bold]?[/] {escape(question.text)}")
    if question.kind == "rename":
        options = [*question.options, "no"]
        answer = Prompt.ask(
            f"  rename {escape(question.key)} to ({' / '.join(question.options)}) or 'no' (drop it)",
            choices=options,
            default=options[0],
            console=console,
        )
        if answer == "no":
            return replace(choices, no_renames=choices.no_renames | {question.key})
        return replace(choices, renames={**choices.renames, question.key: answer})
    answer = Prompt.ask("  SQL (empty: stop here)", default="", console=console, show_default=False)
    if not answer.strip():
        raise BadInput(f"{question.text} No fill given; nothing written")
    return replace(choices, fills={**choices.fills, question.key: answer.strip()})


@dataclass
class Outcome:
    decisions: list[Decision]
    authored: list[tuple[Decision, Authored]] = field(default_factory=list)
    undo: _Undo | None = None

    def take_back(self) -> None:
        """Remove what this run wrote (its plans, and a contract lineage it created)."""
        for _, authored in self.authored:
            for f in authored.files:
                Path(f["path"]).unlink(missing_ok=True)
        if self.undo is not None:
            self.undo.restore()

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        from ..revisions.authoring import document

        plans = {id(d): a for d, a in self.authored}
        out = []
        for d in self.decisions:
            doc = d.to_json()
            if id(d) in plans:
                a = plans[id(d)]
                doc["plan_id"] = a.plan.plan_id
                doc["files"] = a.files
            out.append(doc)
        return {
            "dry_run": dry_run,
            "decisions": out,
            "plans": [document(a.plan, a.files, dry_run) for _, a in self.authored],
        }


def write_plans(
    result: Result,
    *,
    connect: Callable[[], Any],
    project: Project | None,
    message: str | None,
    dry_run: bool,
    app_head: str | None,
) -> Outcome:
    """Author every planned decision in order, each chained after the one before.

    A plan that meets another plan of this run on the same columns is deferred (one plan per
    column at a time); any other failure removes what this run wrote and is raised.
    """
    from ..revisions.authoring import FROM_FILES, InFlightConflict, author

    outcome = Outcome(list(result.decisions))
    head = app_head
    taken: set[str] = set()
    written: list[Path] = []
    undo = _Undo.of(project)
    outcome.undo = None if dry_run else undo
    try:
        for decision in result.plans:
            assert decision.op is not None
            try:
                authored = author(
                    decision.op,
                    connect=connect,
                    project=project,
                    message=message,
                    dry_run=dry_run,
                    app_head=head,
                    taken=taken,
                    planned={a.plan.plan_id: a.plan.touches for _, a in outcome.authored},
                )
            except InFlightConflict as exc:
                decision.action = "deferred"
                decision.why = f"{exc}: one plan per column at a time; run again after that plan's contract"
                continue
            outcome.authored.append((decision, authored))
            taken.add(authored.plan.plan_id)
            if not dry_run:
                written += [Path(f["path"]) for f in authored.files]
            if head != FROM_FILES or dry_run:
                head = authored.last_app_revision or head
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        undo.restore()
        raise
    return outcome


@dataclass
class _Undo:
    """What the first contract plan of a run adds to a project (the contract lineage's folder and its
    registration in the config), taken back when the run fails."""

    project: Project | None
    had_contracts: bool = True
    configs: dict[Path, str] = field(default_factory=dict)
    registered: str = ""

    @classmethod
    def of(cls, project: Project | None) -> _Undo:
        if project is None:
            return cls(None)
        configs = {p: p.read_text() for p in (project.ini, project.toml) if p is not None and p.is_file()}
        return cls(project, project.contracts_dir.exists(), configs, project.contracts_registered)

    def restore(self) -> None:
        if self.project is None:
            return
        if not self.had_contracts:
            import shutil

            shutil.rmtree(self.project.contracts_dir, ignore_errors=True)
        for path, text in self.configs.items():
            if path.read_text() != text:
                path.write_text(text)
        self.project.contracts_registered = self.registered


def summary_lines(outcome: Outcome) -> list[str]:
    """One line per difference: what happens to it and why."""
    plans = {id(d): a for d, a in outcome.authored}
    lines = []
    labels = {
        "alembic": "kept",
        "plan": "planned",
        "covered": "covered",
        "deferred": "deferred",
        "refused": "refused",
    }
    for d in outcome.decisions:
        line = f"{labels[d.action]:<9} {d.what}: {d.why}"
        if id(d) in plans:
            line += f" -> plan {plans[id(d)].plan.plan_id}"
        lines.append(line)
    return lines
