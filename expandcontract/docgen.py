"""Generate ``docs/cli.md``, the CLI reference, from the Typer app itself.

    python -m expandcontract.docgen > docs/cli.md

Walks the click command tree that Typer builds (``typer.main.get_command``) and renders
every command's usage, help, arguments and options (with defaults and environment
variables) as Markdown. The output depends only on the code: it never reads option
values from the environment and never wraps to the terminal's width, so
``tests/test_docs.py`` can regenerate it in-process and fail when the committed file is
stale.

Typer 0.2x vendors click as ``typer._click``; the command objects still carry
``.params``, ``.help``, ``.commands`` and ``.context_class``, which is all this module
uses, so it imports neither click nor anything heavy at module load.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

REGENERATE = "python -m expandcontract.docgen > docs/cli.md"

HEADER = (
    "<!-- Generated from the Typer app (expandcontract/cli.py) by `{cmd}`.\n"
    "     Do not edit by hand: tests/test_docs.py fails when this file is stale. -->\n"
)


@dataclass(frozen=True)
class Node:
    """One command of the tree, with the context click would build for it."""

    path: tuple[str, ...]  # ("ecm", "plan", "rename-column")
    command: Any
    ctx: Any

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "commands")


def root_command() -> Any:
    """The click command tree of ``ecm`` (imports the CLI, which imports only typer)."""
    import typer.main

    from .cli import app

    return typer.main.get_command(app)


def _context(command: Any, name: str, parent: Any) -> Any:
    settings = dict(getattr(command, "context_settings", None) or {})
    return command.context_class(command, info_name=name, parent=parent, **settings)


def walk(command: Any, path: tuple[str, ...] = ("ecm",), parent: Any = None) -> Iterator[Node]:
    """Every visible command, depth first, in the order ``--help`` lists them."""
    ctx = _context(command, path[-1], parent)
    node = Node(path, command, ctx)
    yield node
    if node.is_group:
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            yield from walk(sub, (*path, name), ctx)


# -- text helpers -----------------------------------------------------------------


def _text(value: Any) -> str:
    """Help text as Markdown paragraphs: click's ``\\b`` markers dropped, lines joined."""
    if not value:
        return ""
    text = str(value).replace("\b", "").strip()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def _cell(value: str) -> str:
    """Safe inside a Markdown table cell."""
    return " ".join(value.split()).replace("|", "\\|")


def _code(value: str) -> str:
    return f"`{value}`" if value else ""


def _anchor(title: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", title.lower())
    return slug.replace(" ", "-")


# -- parameters -------------------------------------------------------------------


def _visible(params: Any) -> list[Any]:
    return [p for p in params if not getattr(p, "hidden", False)]


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _argument_name(param: Any) -> str:
    return str(param.metavar or param.name.upper())


def _type_label(param: Any, ctx: Any) -> str:
    display = getattr(param, "display_type", None)
    if callable(display):  # typer >= 0.2x: "<int>", "<list[str]>", "<path>"
        label = str(display(ctx)).strip("<>")
    else:  # plain click: the ParamType's name
        label = str(getattr(getattr(param, "type", None), "name", "") or "text")
    match = re.fullmatch(r"list\[(.*)\]", label)
    label = match.group(1) if match else label
    if label.endswith(" range"):  # typer's "<int range>": say which range
        label = label[: -len(" range")]
        low, high = getattr(param, "min", None), getattr(param, "max", None)
        if low is not None and high is not None:
            label += f", {low} to {high}"
        elif low is not None:
            label += f", at least {low}"
        elif high is not None:
            label += f", at most {high}"
    return label


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False))


def _value(param: Any, ctx: Any) -> str:
    if _is_flag(param):
        return "flag"
    label = str(param.metavar) if param.metavar else _type_label(param, ctx)
    if getattr(param, "multiple", False):
        label += ", repeatable"
    return label


def _default(param: Any) -> str:
    shown = getattr(param, "show_default", True)
    if isinstance(shown, str):
        return shown
    if shown is False:
        return ""
    default = param.default
    if callable(default):
        return "(computed)"
    if _is_flag(param):
        if getattr(param, "secondary_opts", None):
            if default is None:
                return "—"
            return _code(param.opts[0] if default else param.secondary_opts[0])
        return "on" if default else "off"
    if default is None or default == () or default == []:
        return "—"
    if isinstance(default, (list, tuple)):
        return ", ".join(_code(str(d)) for d in default)
    return _code(str(default))


def _envvars(param: Any) -> list[str]:
    env = getattr(param, "envvar", None)
    if not env:
        return []
    return [env] if isinstance(env, str) else [str(e) for e in env]


def _option_names(param: Any) -> str:
    names = ", ".join(_code(o) for o in param.opts)
    if getattr(param, "secondary_opts", None):
        names += " / " + ", ".join(_code(o) for o in param.secondary_opts)
    return names


def _signature(param: Any) -> tuple[Any, ...]:
    """What makes two commands' options "the same option" for the common section."""
    return (
        param.name,
        tuple(param.opts),
        tuple(getattr(param, "secondary_opts", ()) or ()),
        _text(getattr(param, "help", "")),
        repr(param.default),
        tuple(_envvars(param)),
    )


def _options_table(params: list[Any], ctx: Any) -> list[str]:
    rows = [
        "| option | value | default | env var | description |",
        "|---|---|---|---|---|",
    ]
    for p in params:
        env = ", ".join(_code(e) for e in _envvars(p))
        rows.append(
            f"| {_option_names(p)} | {_cell(_value(p, ctx))} | {_cell(_default(p))} | {env} "
            f"| {_cell(_text(getattr(p, 'help', '')))} |"
        )
    return rows


def _arguments_table(params: list[Any], ctx: Any) -> list[str]:
    rows = ["| argument | value | required | description |", "|---|---|---|---|"]
    for p in params:
        label = _type_label(p, ctx)
        if getattr(p, "nargs", 1) == -1:
            label += ", one or more" if p.required else ", any number"
        rows.append(
            f"| {_code(_argument_name(p))} | {_cell(label)} | {'yes' if p.required else 'no'} "
            f"| {_cell(_text(getattr(p, 'help', '')))} |"
        )
    return rows


def _usage(node: Node) -> str:
    parts = [node.name]
    params = _visible(node.command.params)
    if any(not _is_argument(p) for p in params) or node.command.get_help_option(node.ctx) is not None:
        parts.append("[OPTIONS]")
    for p in params:
        if not _is_argument(p):
            continue
        name = _argument_name(p)
        if getattr(p, "nargs", 1) == -1:
            name += "..."
        parts.append(name if p.required else f"[{name}]")
    if node.is_group:
        parts.append("COMMAND [ARGS]...")
    return " ".join(parts)


def _help_names(node: Node) -> str:
    option = node.command.get_help_option(node.ctx)
    return ", ".join(_code(o) for o in sorted(option.opts, key=len)) if option is not None else ""


# -- the document -----------------------------------------------------------------


def _common(leaves: list[Node]) -> list[tuple[Any, ...]]:
    """Options most leaf commands take identically, in the order of the first one.

    A command whose variant differs (``ecm demo``'s --database-url help) lists its own
    variant in its options table, which the reader sees next to the common ones.
    """
    if len(leaves) < 2:
        return []
    counts: dict[tuple[Any, ...], int] = {}
    order: list[tuple[Any, ...]] = []
    for leaf in leaves:
        for p in _visible(leaf.command.params):
            if _is_argument(p):
                continue
            sig = _signature(p)
            if sig not in counts:
                order.append(sig)
            counts[sig] = counts.get(sig, 0) + 1
    return [sig for sig in order if counts[sig] * 2 > len(leaves)]


def _summary(command: Any) -> str:
    text = _text(getattr(command, "short_help", None) or getattr(command, "help", ""))
    return text.split("\n\n")[0]


def render(root: Any | None = None) -> str:
    """The whole reference as Markdown (ends with one newline)."""
    root = root_command() if root is None else root
    nodes = list(walk(root))
    top, rest = nodes[0], nodes[1:]
    leaves = [n for n in rest if not n.is_group]
    common = _common(leaves)
    common_set = set(common)

    out: list[str] = [HEADER.format(cmd=REGENERATE), "# CLI reference", ""]
    out += [_text(top.command.help), "", "```", _usage(top), "```", ""]
    own = _visible(top.command.params)
    if own:
        out += ["Options of `ecm` itself (before any command):", ""]
        out += [*_options_table(own, top.ctx), ""]
    help_names = _help_names(top)
    if help_names:
        out += [f"{help_names} on any command or group prints its help.", ""]
    if top.command.epilog:
        out += [_text(top.command.epilog), ""]

    out += ["## Commands", ""]
    for node in rest:
        depth = len(node.path) - 2
        title = f"`{node.name}`"
        out.append(f"{'  ' * depth}- [{title}](#{_anchor(node.name)}) — {_summary(node.command)}")
    out.append("")

    if common:
        out += [
            "## Common options",
            "",
            "Every command below accepts these options, after the command's own arguments "
            "(for example `ecm status --json`).",
            "",
        ]
        seen: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        for leaf in leaves:
            for p in _visible(leaf.command.params):
                if _signature(p) in common_set and _signature(p) not in seen:
                    seen[_signature(p)] = (p, leaf.ctx)
        rows = _options_table([seen[sig][0] for sig in common], leaves[0].ctx)
        out += [*rows, ""]

    for node in rest:
        cmd = node.command
        out += [f"## `{node.name}`", "", _text(cmd.help) or _summary(cmd), ""]
        out += ["```", _usage(node), "```", ""]
        visible = _visible(cmd.params)
        arguments = [p for p in visible if _is_argument(p)]
        options = [p for p in visible if not _is_argument(p) and _signature(p) not in common_set]
        if arguments:
            out += ["Arguments:", "", *_arguments_table(arguments, node.ctx), ""]
        if options:
            out += ["Options:", "", *_options_table(options, node.ctx), ""]
        if node.is_group:
            out += ["Commands:", ""]
            for sub in rest:
                if sub.path[:-1] == node.path:
                    out.append(f"- [`{sub.name}`](#{_anchor(sub.name)}) — {_summary(sub.command)}")
            out.append("")
        elif common and any(_signature(p) in common_set for p in visible):
            out += ["Also takes the [common options](#common-options).", ""]
        if cmd.epilog:
            out += [_text(cmd.epilog), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
