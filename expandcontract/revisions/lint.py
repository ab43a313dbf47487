"""`ecm lint`: a project's hand-written revisions rendered offline, read by PostgreSQL's parser.

A revision is Python, the risk is in the SQL it emits, and a reviewer fixes the Python: so
each revision is rendered the way ``alembic upgrade --sql`` renders it (offline, no
database), every chunk Alembic writes is captured together with the line of the revision
file that emitted it (the innermost frame in that file when ``static_output`` is called),
parsed with pglast and judged by the rules of :mod:`expandcontract.sql.unsafe`. Findings
point at the ``op.`` call, where a ``# ecm: ignore[RULE] reason`` comment can silence them.

The project's ``env.py`` is not run (as :mod:`.offline_script` does not): it may need the
application or a database, and the rendering only needs the PostgreSQL dialect. A revision
that cannot be rendered that way (it reads data through ``op.get_bind()``, it inspects the
database) is reported as not linted, with why: never as clean.

ecm's own revisions (a ``PLAN_ID`` and ``run_phase`` from :mod:`.runtime`) are known safe:
each step already runs under lock_timeout with the locks its plan documents.
"""

from __future__ import annotations

import ast as pyast
import io
import json
import os
import re
import sys
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from ..errors import BadInput, EcmError, OperationalError
from ..sql import unsafe
from ..sql.expressions import one_line
from .project import Project

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory

FORMATS = ("text", "json", "github")
DEFAULT_PG_VERSION = 15

#: Findings about the ignore comments themselves (the SQL rules are :data:`unsafe.RULES`).
LINT_RULES: dict[str, unsafe.Rule] = {
    r.id: r
    for r in (
        unsafe.Rule(
            "ignore-without-reason",
            "",
            "an ignore comment without a reason silences nothing: the next reader cannot tell why the "
            "risk was accepted",
            "`# ecm: ignore[RULE] why this is safe here`",
        ),
        unsafe.Rule(
            "ignore-unknown-rule",
            "",
            "the ignore comment names a rule ecm lint does not have, so it silences nothing",
            "use a rule id from docs/lint.md",
        ),
    )
}
#: Rules that are about re-running a plan's phase; an Alembic revision runs once, in one transaction.
_NOT_FOR_REVISIONS = frozenset({"not-rerunnable", "drop-undeclared"})

_IGNORE = re.compile(r"#\s*ecm:\s*ignore\[([^\]]*)\]\s*(.*)$")


def rule(rule_id: str) -> unsafe.Rule:
    return unsafe.RULES.get(rule_id) or LINT_RULES[rule_id]


@dataclass(frozen=True)
class Ignore:
    line: int
    rules: tuple[str, ...]
    reason: str


@dataclass
class Finding:
    rule: str
    path: Path
    line: int
    statement: str
    detail: str = ""
    #: ``ecm plan …`` for this very change, when the statement says enough to write it.
    fix: str = ""
    #: The reason of the ignore comment that silenced it; None: it counts.
    ignored: str | None = None


@dataclass
class Report:
    """One revision: linted (with findings), known safe (ecm's own) or not linted (and why)."""

    revision: str
    path: Path
    lineage: str  # "application" or "contract"
    status: str = "linted"  # "linted", "known-safe", "not-linted"
    reason: str = ""
    plan_id: str | None = None
    statements: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def active(self) -> list[Finding]:
        return [f for f in self.findings if f.ignored is None]


@dataclass(frozen=True)
class Target:
    script: Script
    lineage: str


# -- which revisions --------------------------------------------------------------------------


def _lineages(project: Project) -> list[tuple[str, Config, ScriptDirectory]]:
    found: list[tuple[str, Config, ScriptDirectory]] = [("application", project.config, project.script())]
    contracts = project.contract_script()
    if contracts is not None:
        found.append(("contract", project.contract_config(), contracts))
    return found


def _in_order(script: ScriptDirectory) -> list[Script]:
    """Base first, as `alembic upgrade` runs them."""
    return list(reversed(list(script.walk_revisions())))


def _looks_like_path(arg: str) -> bool:
    return arg.endswith(".py") or os.sep in arg or "/" in arg or Path(arg).exists()


def _resolve(script: ScriptDirectory, arg: str) -> list[Script]:
    """The revisions ``alembic upgrade ARG --sql`` would render: ``FROM:TO`` excludes FROM
    (``base:head`` is all of them); a single revision is that one alone."""
    if ":" in arg:
        lower, _, upper = arg.partition(":")
        revs = script.revision_map.iterate_revisions(upper or "heads", lower or "base", implicit_base=True)
        return cast("list[Script]", [r for r in reversed(list(revs)) if r is not None])
    out = [r for r in script.get_revisions(arg) if r is not None]
    if not out:
        raise ValueError(f"no revision {arg!r}")
    return out


def select(
    project: Project, args: Sequence[str]
) -> tuple[list[Target], dict[str, tuple[Config, ScriptDirectory]]]:
    """The revisions to lint, base first, each once; BadInput for what names none."""
    try:
        lineages = _lineages(project)
        ordered = [Target(rev, name) for name, _, script in lineages for rev in _in_order(script)]
    except EcmError:
        raise
    except Exception as exc:
        # Alembic imports every revision file to build the graph: one that fails to import
        # (it imports the application, which is not on the path) stops them all.
        raise OperationalError(
            f"cannot load the project's revisions ({type(exc).__name__}: {one_line(str(exc))}): Alembic "
            "imports every revision file; run ecm lint where what they import can be imported"
        ) from exc
    envs = {name: (cfg, script) for name, cfg, script in lineages}
    if not args:
        return ordered, envs
    wanted: set[tuple[str, str]] = set()
    by_path = {os.path.realpath(t.script.path): t for t in ordered}
    for arg in args:
        if _looks_like_path(arg):
            wanted.update((t.lineage, t.script.revision) for t in _by_path(arg, by_path))
            continue
        errors: list[str] = []
        for name, _, script in lineages:
            try:
                wanted.update((name, r.revision) for r in _resolve(script, arg))
                break
            except Exception as exc:  # Alembic's resolution errors are of several classes
                errors.append(one_line(str(exc)) or type(exc).__name__)
        else:
            raise BadInput(f"unknown revision or range {arg!r}: {errors[0]}")
    return [t for t in ordered if (t.lineage, t.script.revision) in wanted], envs


def _by_path(arg: str, by_path: dict[str, Target]) -> list[Target]:
    """A revision file, or every revision under a directory (``migrations/versions``)."""
    path = Path(arg)
    if path.is_dir():
        inside = [t for p, t in by_path.items() if Path(os.path.realpath(path)) in Path(p).parents]
        if not inside:
            raise BadInput(f"{arg} holds no revision of this project's Alembic line or contract lineage")
        return inside
    if not path.is_file():
        raise BadInput(f"no such revision file: {arg}")
    target = by_path.get(os.path.realpath(path))
    if target is None:
        raise BadInput(f"{arg} is not a revision of this project's Alembic line or contract lineage")
    return [target]


# -- the revision file: where each statement came from, and its ignore comments ---------------


def ignores(source: str) -> dict[int, Ignore]:
    """``# ecm: ignore[rule, …] reason`` comments by line (real comments: tokenize, not strings)."""
    found: dict[int, Ignore] = {}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return found
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        match = _IGNORE.search(tok.string)
        if match:
            rules = tuple(r.strip() for r in match.group(1).split(",") if r.strip())
            found[tok.start[0]] = Ignore(tok.start[0], rules, match.group(2).strip())
    return found


@dataclass(frozen=True)
class Anchor:
    """Where a finding points (the statement's first line) and the lines an ignore may sit on."""

    line: int
    lines: frozenset[int]


class Anchors:
    """Statement spans of one revision file, from Python's own parser."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        try:
            tree = pyast.parse(source)
        except SyntaxError:
            tree = pyast.Module(body=[], type_ignores=[])
        self.statements = [n for n in pyast.walk(tree) if isinstance(n, pyast.stmt)]

    def _comment_only(self, line: int) -> bool:
        return 1 <= line <= len(self.lines) and self.lines[line - 1].lstrip().startswith("#")

    def at(self, line: int) -> Anchor:
        spans = [s for s in self.statements if s.lineno <= line <= (s.end_lineno or s.lineno)]
        if not spans:
            return Anchor(line, frozenset({line, line - 1}))
        node = min(spans, key=lambda s: (s.end_lineno or s.lineno) - s.lineno)
        end = node.end_lineno or node.lineno
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], pyast.stmt):
            end = body[0].lineno - 1  # a `with`/`for` header: not its whole block
        lines = set(range(node.lineno, end + 1))
        above = node.lineno - 1
        while self._comment_only(above):
            lines.add(above)
            above -= 1
        return Anchor(node.lineno, frozenset(lines))


# -- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    text: str
    line: int  # the line of the revision file that emitted it (0: unknown)


def _frame_line(path: str) -> int:
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if os.path.realpath(frame.f_code.co_filename) == path:
            return frame.f_lineno or 0
        frame = frame.f_back
    return 0


def _traceback_line(exc: BaseException, path: str) -> int:
    line, tb = 0, exc.__traceback__
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(cfg: Config, script: ScriptDirectory, rev: Script) -> tuple[list[Chunk], str]:
    """What ``rev.upgrade()`` writes offline, chunk by chunk with its line; and why it stopped
    early ("" when it ran to the end)."""
    from alembic.operations import Operations
    from alembic.runtime.environment import EnvironmentContext

    path = os.path.realpath(rev.path)
    chunks: list[Chunk] = []
    environment = EnvironmentContext(cfg, script, as_sql=True)
    with environment:
        environment.configure(
            dialect_name="postgresql",
            output_buffer=io.StringIO(),
            transactional_ddl=True,
            literal_binds=True,
            # As Alembic's env.py templates render offline: with the driver's pyformat style a
            # `%` in op.execute() text would come out doubled (`id %% 2` parses as another operator).
            dialect_opts={"paramstyle": "named"},
        )
        ctx = environment.get_context()

        def capture(text: str) -> None:
            chunks.append(Chunk(text, _frame_line(path)))

        ctx.impl.static_output = capture  # type: ignore[method-assign]
        try:
            with Operations.context(ctx):
                rev.module.upgrade()
        except Exception as exc:
            line = _traceback_line(exc, path)
            at = f" at line {line}" if line else ""
            why = f"{type(exc).__name__}: {one_line(str(exc))}" if str(exc).strip() else type(exc).__name__
            return chunks, (
                f"upgrade() cannot run offline{at} ({why}); it probably reads the database "
                "(op.get_bind(), inspect): review it by hand"
            )
    return chunks, ""


def _known_safe(module: Any) -> str | None:
    """The plan id of a revision ecm wrote (it runs its steps through ``run_phase``)."""
    plan_id = getattr(module, "PLAN_ID", None)
    run_phase = getattr(module, "run_phase", None)
    if (
        isinstance(plan_id, str)
        and getattr(run_phase, "__module__", "") == "expandcontract.revisions.runtime"
    ):
        return plan_id
    return None


def lint_revision(target: Target, cfg: Config, script: ScriptDirectory, pg_version: int) -> Report:
    from pglast import parse_sql
    from pglast.parser import ParseError

    rev = target.script
    report = Report(rev.revision, Path(rev.path), target.lineage)
    plan_id = _known_safe(rev.module)
    if plan_id is not None:
        report.status, report.plan_id = "known-safe", plan_id
        report.reason = f"written by ecm for plan {plan_id}: every step runs under lock_timeout"
        return report
    source = Path(rev.path).read_text(errors="replace")
    anchors, comments = Anchors(source), ignores(source)
    chunks, stopped = render(cfg, script, rev)
    ctx = unsafe.Context(pg_version=pg_version, require_lock_timeout=True)
    unparsed: list[str] = []
    for chunk in chunks:
        anchor = anchors.at(chunk.line) if chunk.line else Anchor(0, frozenset())
        try:
            parsed = parse_sql(chunk.text)
        except ParseError as exc:
            unparsed.append(f"line {anchor.line}: {one_line(str(exc.args[0]))}")
            continue
        for raw in parsed:
            start = raw.stmt_location or 0
            end = start + raw.stmt_len if raw.stmt_len else len(chunk.text)
            sql = chunk.text[start:end].strip().rstrip(";").strip()
            report.statements += 1
            for found in unsafe.findings(raw.stmt, anchor.line, sql, ctx):
                if found.rule in _NOT_FOR_REVISIONS:
                    continue
                finding = Finding(found.rule, report.path, anchor.line, sql, found.detail, found.fix)
                finding.ignored = _silenced(finding, anchor, comments)
                report.findings.append(finding)
    report.findings.extend(_bad_ignores(report.path, comments))
    reasons = [stopped] if stopped else []
    if unparsed:
        reasons.append("PostgreSQL's parser rejects what it rendered (" + "; ".join(unparsed) + ")")
    if reasons:
        report.status, report.reason = "not-linted", "; ".join(reasons)
    report.findings.sort(key=lambda f: f.line)
    return report


def _silenced(finding: Finding, anchor: Anchor, comments: dict[int, Ignore]) -> str | None:
    for line in sorted(anchor.lines):
        ignore = comments.get(line)
        if ignore is not None and ignore.reason and finding.rule in ignore.rules:
            return ignore.reason
    return None


def _bad_ignores(path: Path, comments: dict[int, Ignore]) -> Iterator[Finding]:
    for ignore in comments.values():
        text = f"# ecm: ignore[{', '.join(ignore.rules)}]"
        if not ignore.reason:
            yield Finding("ignore-without-reason", path, ignore.line, text)
        for name in ignore.rules:
            if name not in unsafe.RULES and name not in LINT_RULES:
                yield Finding("ignore-unknown-rule", path, ignore.line, text, f"rule {name}")


def lint(project: Project, args: Sequence[str], pg_version: int) -> list[Report]:
    targets, envs = select(project, args)
    reports = []
    for target in targets:
        cfg, script = envs[target.lineage]
        reports.append(lint_revision(target, cfg, script, pg_version))
    return reports


# -- output -------------------------------------------------------------------------------------


def shown_path(path: Path) -> str:
    """Relative to the working directory when under it (what GitHub annotations and editors want)."""
    full, cwd = path.resolve(), Path.cwd().resolve()
    return full.relative_to(cwd).as_posix() if cwd in full.parents else str(path)


def _short(sql: str, width: int = 100) -> str:
    shown = one_line(sql)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def exit_code(reports: Sequence[Report]) -> int:
    return 1 if any(r.active or r.status == "not-linted" for r in reports) else 0


def summary(reports: Sequence[Report]) -> dict[str, int]:
    return {
        "revisions": len(reports),
        "linted": sum(r.status == "linted" for r in reports),
        "known_safe": sum(r.status == "known-safe" for r in reports),
        "not_linted": sum(r.status == "not-linted" for r in reports),
        "findings": sum(len(r.active) for r in reports),
        "ignored": sum(len(r.findings) - len(r.active) for r in reports),
    }


def _finding_json(report: Report, f: Finding) -> dict[str, Any]:
    r = rule(f.rule)
    return {
        "rule": f.rule,
        "revision": report.revision,
        "path": shown_path(f.path),
        "line": f.line,
        "statement": f.statement,
        "detail": f.detail,
        "lock": r.lock,
        "why": r.why,
        "instead": r.instead,
        "fix": f.fix or None,
        **({"reason": f.ignored} if f.ignored is not None else {}),
    }


def as_json(reports: Sequence[Report], pg_version: int) -> str:
    document = {
        "pg_version": pg_version,
        "ok": exit_code(reports) == 0,
        "summary": summary(reports),
        "revisions": [
            {
                "revision": r.revision,
                "path": shown_path(r.path),
                "lineage": r.lineage,
                "status": r.status,
                "reason": r.reason or None,
                "plan_id": r.plan_id,
                "statements": r.statements,
                "findings": len(r.active),
            }
            for r in reports
        ],
        "findings": [_finding_json(r, f) for r in reports for f in r.active],
        "ignored": [_finding_json(r, f) for r in reports for f in r.findings if f.ignored is not None],
    }
    return json.dumps(document, sort_keys=False)


def as_text(reports: Sequence[Report], pg_version: int) -> str:
    out: list[str] = []
    for report in reports:
        where = shown_path(report.path)
        if report.status == "known-safe":
            out.append(f"{where}: revision {report.revision}: known safe ({report.reason})")
            continue
        if report.status == "not-linted":
            out.append(f"{where}: revision {report.revision}: NOT LINTED: {report.reason}")
        for f in report.findings:
            r = rule(f.rule)
            detail = f" ({f.detail})" if f.detail else ""
            if f.ignored is not None:
                out.append(f"{where}:{f.line}: ignored {f.rule}{detail}: {f.ignored}")
                continue
            out.append(f"{where}:{f.line}: {f.rule}: {_short(f.statement)}{detail}")
            if r.lock:
                out.append(f"    lock: {r.lock}")
            out.append(f"    why: {r.why}")
            out.append(f"    instead: {f.fix or r.instead}")
    s = summary(reports)
    verdict = "clean" if exit_code(reports) == 0 else "unsafe"
    out.append(
        f"ecm lint: {s['revisions']} revision(s): {s['linted']} linted, {s['known_safe']} known safe (ecm), "
        f"{s['not_linted']} not linted; {s['findings']} finding(s), {s['ignored']} ignored "
        f"(PostgreSQL {pg_version}): {verdict}"
    )
    return "\n".join(out) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def as_github(reports: Sequence[Report], pg_version: int) -> str:
    """GitHub Actions workflow commands: an annotation on the revision file's line for each."""
    out: list[str] = []
    for report in reports:
        path = _escape_property(shown_path(report.path))
        if report.status == "not-linted":
            out.append(
                f"::error file={path},title={_escape_property('not linted')}::"
                + _escape_data(f"revision {report.revision} was not linted: {report.reason}")
            )
        for f in report.findings:
            r = rule(f.rule)
            detail = f" ({f.detail})" if f.detail else ""
            if f.ignored is not None:
                message = f"{f.rule} ignored: {f.ignored}"
                out.append(
                    f"::notice file={path},line={f.line},title={_escape_property(f.rule)}::{_escape_data(message)}"
                )
                continue
            lock = f" Lock: {r.lock}." if r.lock else ""
            message = f"{_short(f.statement)}{detail}: {r.why}.{lock} Instead: {f.fix or r.instead}"
            out.append(
                f"::error file={path},line={f.line},title={_escape_property(f.rule)}::{_escape_data(message)}"
            )
    return "\n".join(out) + ("\n" if out else "")


def output(reports: Sequence[Report], fmt: str, pg_version: int) -> str:
    if fmt == "json":
        return as_json(reports, pg_version) + "\n"
    if fmt == "github":
        return as_github(reports, pg_version)
    return as_text(reports, pg_version)
