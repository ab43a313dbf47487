"""The docs stay true to the code: the CLI reference is generated, every ECM_* setting is documented.

No database needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "expandcontract"
CONFIGURATION = DOCS / "configuration.md"

#: An environment setting's name: ECM_ then upper-case words (a bare "ECM_" prefix is not one).
SETTING = re.compile(r"\bECM_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
#: The heading under which configuration.md lists knobs only the test suite and benchmarks read.
TEST_KNOBS_HEADING = "## Test-suite knobs"

#: Pages this suite keeps honest (links resolve).
OWN_PAGES = [
    "index.md",
    "concepts.md",
    "revision-graph.md",
    "cli.md",
    "configuration.md",
    "comparison.md",
    "json-output.md",
    "architecture.md",
    "operations/rename-column.md",
]


def test_cli_reference_is_current() -> None:
    from expandcontract import docgen

    expected = docgen.render()
    path = DOCS / "cli.md"
    current = path.read_text() if path.is_file() else ""
    assert current == expected, (
        f"docs/cli.md is stale: regenerate it with `{docgen.REGENERATE}` (from the repository root) "
        "and commit the result"
    )


def test_cli_reference_covers_every_command() -> None:
    from expandcontract import docgen

    text = (DOCS / "cli.md").read_text()
    for node in docgen.walk(docgen.root_command()):
        if len(node.path) > 1:
            assert f"## `{node.name}`" in text, node.name


def _names_in(paths: list[Path]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for name in SETTING.findall(path.read_text(errors="replace")):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _configuration_sections() -> tuple[str, str]:
    text = CONFIGURATION.read_text()
    assert TEST_KNOBS_HEADING in text, f"docs/configuration.md lacks its {TEST_KNOBS_HEADING!r} section"
    settings, _, knobs = text.partition(TEST_KNOBS_HEADING)
    return settings, knobs


def test_every_setting_the_package_reads_is_documented() -> None:
    from expandcontract.settings import SETTINGS

    read = _names_in(sorted(PACKAGE.rglob("*.py")))
    settings_doc, _ = _configuration_sections()
    documented = set(SETTING.findall(settings_doc))
    missing = {name: sorted(where) for name, where in read.items() if name not in documented}
    assert not missing, (
        f"ECM_* settings read by the package but missing from docs/configuration.md: {missing}"
    )
    assert not set(SETTINGS) - documented, "settings.SETTINGS names missing from docs/configuration.md"
    stale = documented - set(read)
    assert not stale, f"docs/configuration.md documents settings the package never reads: {sorted(stale)}"


def test_every_test_suite_knob_is_documented() -> None:
    package = set(_names_in(sorted(PACKAGE.rglob("*.py"))))
    sources = [
        *sorted((ROOT / "tests").rglob("*.py")),
        *sorted((ROOT / "benchmarks").rglob("*.py")),
        ROOT / "noxfile.py",
        *sorted((ROOT / ".ci").glob("*")),
    ]
    knobs = {n: w for n, w in _names_in([p for p in sources if p.is_file()]).items() if n not in package}
    _, knobs_doc = _configuration_sections()
    missing = {name: sorted(where) for name, where in knobs.items() if name not in knobs_doc}
    assert not missing, f"test-suite knobs missing from the {TEST_KNOBS_HEADING!r} section: {missing}"


def _anchors(page: Path) -> set[str]:
    """The ids GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().replace("`", "").lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_relative_links_resolve() -> None:
    link = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)")
    broken = []
    for page in OWN_PAGES:
        path = DOCS / page
        assert path.is_file(), f"docs/{page} is missing"
        for target, anchor in link.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            resolved = (path.parent / target) if target else path
            if not resolved.exists():
                broken.append(f"docs/{page} -> {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"docs/{page} -> {target}#{anchor}")
    assert not broken, f"broken links: {broken}"


def test_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text()
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if p.name != "index.md")
    missing = [p for p in pages if f"({p})" not in index]
    assert not missing, f"docs/index.md does not link to: {missing}"


def test_docgen_imports_only_typer() -> None:
    code = (
        "import sys, expandcontract.docgen\n"
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'psycopg', 'rich', 'structlog') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing expandcontract.docgen pulled in {out.stdout.strip()}"
