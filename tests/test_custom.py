"""`ecm plan custom`: what a user sees — the steps their SQL becomes, the warnings, the guard
input, the refusals — against a real server; the statement reading and rules without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expandcontract.errors import BadInput
from expandcontract.sql import statements as st
from expandcontract.sql import unsafe

from .project import Project, make_project

SETUP = """
CREATE TABLE items (id bigint PRIMARY KEY, note text, qty integer NOT NULL DEFAULT 0, legacy text);
INSERT INTO items SELECT g, 'n' || g, g, 'l' || g FROM generate_series(1, 50) g;
"""


# -- reading statements (pure) ---------------------------------------------------------------


def test_split_keeps_semicolons_inside_strings_and_bodies() -> None:
    text = (
        "-- header\n"
        "UPDATE items SET note = 'a;b' WHERE id = 1;\n"
        "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_note_idx ON items (note)"
    )
    stmts = st.split(text, "f.sql")
    assert [s.sql for s in stmts] == [
        "UPDATE items SET note = 'a;b' WHERE id = 1",
        "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_note_idx ON items (note)",
    ]
    assert [s.line for s in stmts] == [2, 3, 4]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY i ON t (c)",
        "DROP INDEX CONCURRENTLY IF EXISTS i",
        "REINDEX INDEX CONCURRENTLY i",
        "ALTER TABLE t VALIDATE CONSTRAINT c",
        "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
    ],
)
def test_concurrent_statements_are_recognised_from_the_tree(sql: str) -> None:
    (stmt,) = st.split(sql, "f.sql")
    assert st.concurrent(stmt.node)


@pytest.mark.parametrize(
    "sql",
    ["CREATE INDEX i ON t (c)", "DROP INDEX i", "ALTER TABLE t ADD COLUMN c int", "SELECT 'CONCURRENTLY'"],
)
def test_other_statements_are_not_concurrent(sql: str) -> None:
    (stmt,) = st.split(sql, "f.sql")
    assert not st.concurrent(stmt.node)


def test_a_begin_commit_block_is_one_unit() -> None:
    text = "ALTER TABLE t ADD COLUMN IF NOT EXISTS a int;\nBEGIN;\nUPDATE t SET a = 1 WHERE id = 1;\nUPDATE t SET a = 2 WHERE id = 2;\nCOMMIT;\n"
    units = st.units(st.split(text, "f.sql"), "f.sql")
    assert [(len(u.statements), u.block) for u in units] == [(1, False), (2, True)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is empty"),
        ("-- nothing\n", "only comments"),
        ("SELECT 1;\nSELEC 2;", "is not valid SQL (line 2)"),
        ("ALTER TABLE t ADD COLUMN a int;\nCOMMIT;", "is transaction control"),
        ("ROLLBACK;", "is transaction control"),
        ("BEGIN;\nSAVEPOINT s;\nCOMMIT;", "is transaction control"),
        ("BEGIN;\nUPDATE t SET a = 1 WHERE id = 1;", "BEGIN without COMMIT"),
        ("BEGIN;\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;", "cannot run inside a transaction block"),
    ],
)
def test_refusals_are_one_line(text: str, fragment: str) -> None:
    with pytest.raises(BadInput) as exc:
        st.units(st.split(text, "--expand f.sql"), "--expand f.sql")
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


# -- the rules (pure) --------------------------------------------------------------------------


def rules(text: str, *, contract: bool = False, removes: dict[str, set[str]] | None = None) -> list[str]:
    ctx = unsafe.Context(contract=contract, removes=removes or {})
    return [
        f.rule
        for s in st.split(text, "f.sql")
        for f in unsafe.findings(s.node, s.line, s.sql, ctx)
        if f.rule != "not-rerunnable"
    ]


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("CREATE INDEX IF NOT EXISTS i ON items (note)", "create-index-blocking"),
        ("DROP INDEX IF EXISTS i", "drop-index-blocking"),
        ("ALTER TABLE items ADD COLUMN IF NOT EXISTS c int NOT NULL", "add-column-not-null"),
        (
            "ALTER TABLE items ADD COLUMN IF NOT EXISTS c uuid DEFAULT gen_random_uuid()",
            "add-column-volatile-default",
        ),
        ("ALTER TABLE items ADD COLUMN IF NOT EXISTS c bigserial", "add-column-volatile-default"),
        ("ALTER TABLE items ALTER COLUMN qty TYPE bigint", "alter-column-type"),
        ("ALTER TABLE items ALTER COLUMN note SET NOT NULL", "set-not-null-scan"),
        (
            "ALTER TABLE items ADD CONSTRAINT f FOREIGN KEY (qty) REFERENCES other (id)",
            "add-foreign-key-validating",
        ),
        ("ALTER TABLE items ADD CONSTRAINT c CHECK (qty > 0)", "add-check-validating"),
        ("ALTER TABLE items ADD CONSTRAINT u UNIQUE (note)", "add-unique-blocking"),
        ("ALTER TABLE items RENAME COLUMN note TO body", "rename-column"),
        ("ALTER TABLE items RENAME TO things", "rename-table"),
        ("ALTER TABLE items DROP COLUMN IF EXISTS legacy", "drop-column-early"),
        ("DROP TABLE IF EXISTS items", "drop-table-early"),
        ("VACUUM FULL items", "vacuum-full"),
        ("CLUSTER items USING items_pkey", "cluster"),
        ("LOCK TABLE items", "lock-table"),
        ("UPDATE items SET note = 'x'", "unbatched-write"),
        ("DELETE FROM items", "unbatched-write"),
    ],
)
def test_each_rule_is_read_from_the_tree(sql: str, rule: str) -> None:
    assert rules(sql) == [rule]
    assert all(r.id and r.why and r.instead for r in unsafe.RULES.values())


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON items (note)",
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS c int DEFAULT 0 NOT NULL",
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS c timestamptz DEFAULT now()",
        "ALTER TABLE items ADD CONSTRAINT c CHECK (qty > 0) NOT VALID",
        "ALTER TABLE items ADD CONSTRAINT u UNIQUE USING INDEX items_note_key",
        "UPDATE items SET note = 'x' WHERE id BETWEEN 1 AND 1000",
        "CREATE TABLE IF NOT EXISTS fresh (id int PRIMARY KEY, v int NOT NULL);\n"
        "CREATE INDEX IF NOT EXISTS fresh_v ON fresh (v);\nUPDATE fresh SET v = 1",
        "ALTER TABLE items ADD CONSTRAINT nn CHECK (note IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE items VALIDATE CONSTRAINT nn;\nALTER TABLE items ALTER COLUMN note SET NOT NULL",
    ],
)
def test_safe_statements_pass(sql: str) -> None:
    assert rules(sql) == []


def test_drops_belong_in_the_contract_and_must_be_declared() -> None:
    drop = "ALTER TABLE items DROP COLUMN IF EXISTS legacy"
    assert rules(drop, contract=True, removes={"items": {"legacy"}}) == []
    assert rules(drop, contract=True, removes={"items": {"*"}}) == []
    assert rules(drop, contract=True) == ["drop-undeclared"]
    assert rules("DROP TABLE IF EXISTS items", contract=True) == ["drop-undeclared"]


def test_a_finding_names_the_rule_line_lock_and_alternative() -> None:
    (stmt,) = st.split("\nALTER TABLE items ALTER COLUMN qty TYPE bigint", "f.sql")
    (finding,) = unsafe.findings(stmt.node, stmt.line, stmt.sql, unsafe.Context())
    text = finding.message("--expand f.sql")
    assert text.startswith(
        "[alter-column-type] --expand f.sql line 2: ALTER TABLE items ALTER COLUMN qty TYPE bigint"
    )
    assert "lock: ACCESS EXCLUSIVE" in text and "ecm plan change-type" in text


# -- the command against a server ----------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    p = make_project(tmp_path / "app", database_url)
    with p.connect() as conn:
        conn.execute(SETUP)
    return p


def write(project: Project, name: str, text: str) -> str:
    path = project.root / name
    path.write_text(text)
    return str(path)


def plan(project: Project, *args: str) -> dict[str, object]:
    result = project.ecm("plan", "custom", *args, "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def test_steps_warnings_and_guard_input(project: Project) -> None:
    expand = write(
        project,
        "expand.sql",
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS qty_new bigint;\n"
        "CREATE INDEX CONCURRENTLY items_qty_new_idx ON items (qty_new);\n"
        "CREATE INDEX IF NOT EXISTS items_note_idx ON items (note);\n"
        "BEGIN;\nUPDATE items SET qty_new = qty WHERE id <= 10;\nUPDATE items SET qty_new = qty WHERE id > 10;\nCOMMIT;\n",
    )
    contract = write(
        project,
        "contract.sql",
        "ALTER TABLE items DROP COLUMN IF EXISTS legacy;\nALTER TABLE items ALTER COLUMN qty TYPE bigint;\n",
    )
    doc = plan(
        project,
        "widen-qty",
        "--expand",
        expand,
        "--contract",
        contract,
        "--removes",
        "items.legacy",
        "--retypes",
        "items.qty",
        "--dry-run",
    )
    assert doc["plan_id"] == "custom_widen_qty"
    assert doc["removes"] == {"public.items": ["legacy"]}
    assert doc["adds"] == {"public.items": ["qty_new"]}
    assert doc["breaks"] == [
        {
            "table": "public.items",
            "column": "qty",
            "kind": "retype",
            "old_type": "integer",
            "new_type": "bigint",
        }
    ]
    phases = {p["name"]: p for p in doc["phases"]}  # type: ignore[attr-defined]
    kinds = [(s["kind"], s["sql"].split("\n")[0][:20]) for s in phases["expand"]["steps"]]
    assert [k for k, _ in kinds] == ["ddl", "concurrent", "ddl", "ddl"]
    assert kinds[3][1].startswith("DO $ecm$")
    assert [s["kind"] for s in phases["contract"]["steps"]] == ["guard", "ddl", "ddl"]
    notes = doc["notes"]
    assert any(n.startswith("[create-index-blocking] --expand expand.sql line 3") for n in notes)  # type: ignore[union-attr]
    assert any(n.startswith("[alter-column-type] --contract contract.sql line 2") for n in notes)  # type: ignore[union-attr]
    assert any("no --expand-down FILE" in n for n in notes)  # type: ignore[union-attr]


def test_block_runs_as_one_transaction_and_downgrade_is_refused(project: Project) -> None:
    expand = write(
        project,
        "expand.sql",
        "ALTER TABLE items ADD COLUMN IF NOT EXISTS tag text;\n"
        "BEGIN;\nUPDATE items SET tag = 'a' WHERE id = 1;\nUPDATE items SET tag = 'b' WHERE nosuch = 2;\nCOMMIT;\n",
    )
    contract = write(project, "contract.sql", "ALTER TABLE items DROP COLUMN IF EXISTS legacy;\n")
    plan(project, "tagging", "--expand", expand, "--contract", contract, "--removes", "items.legacy")
    failed = project.ecm("upgrade", "--phase", "expand")
    assert failed.returncode == 1 and "nosuch" in failed.stderr
    with project.connect() as conn:
        # The column step committed; the block's first UPDATE went with the failing second.
        assert conn.execute("SELECT count(*) FROM items WHERE tag IS NOT NULL").fetchone() == (0,)
    # Fixed in the revision file (as a reviewer would), the phase runs to the end.
    (rev,) = (project.root / "migrations" / "versions").glob("*ecm_expand_custom_tagging.py")
    rev.write_text(rev.read_text().replace("nosuch = 2", "id = 2"))
    assert project.ecm("upgrade", "--phase", "expand").returncode == 0
    with project.connect() as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE tag IS NOT NULL").fetchone() == (2,)
    aborted = project.ecm("abort", "custom_tagging", "--allow-no-reporters", "--json")
    assert aborted.returncode == 3, aborted.stderr
    doc = json.loads(aborted.stdout)
    assert (
        doc["refused"] and "has no downgrade" in doc["steps"][0] and "--expand-down FILE" in doc["steps"][0]
    )
    with project.connect() as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE tag IS NOT NULL").fetchone() == (2,)


def test_files_are_frozen_into_the_revisions(project: Project) -> None:
    expand = write(project, "expand.sql", "ALTER TABLE items ADD COLUMN IF NOT EXISTS frozen text;\n")
    contract = write(project, "contract.sql", "ALTER TABLE items DROP COLUMN IF EXISTS legacy;\n")
    plan(project, "frozen", "--expand", expand, "--contract", contract, "--removes", "items.legacy")
    Path(expand).unlink()
    Path(contract).unlink()
    assert project.ecm("upgrade", "--phase", "expand").returncode == 0
    with project.connect() as conn:
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'frozen'"
        ).fetchone() == (1,)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--retypes", "items.qty"), "no new type"),
        (("--retypes", "items"), "give TABLE.COLUMN"),
        (("--removes", "nosuch"), "does not exist"),
        (("--removes", "items.nosuch"), "does not exist"),
    ],
)
def test_bad_declarations_exit_2(project: Project, args: tuple[str, ...], fragment: str) -> None:
    expand = write(project, "expand.sql", "ALTER TABLE items ADD COLUMN IF NOT EXISTS x text;\n")
    contract = write(project, "contract.sql", "ALTER TABLE items DROP COLUMN IF EXISTS legacy;\n")
    result = project.ecm("plan", "custom", "c", "--expand", expand, "--contract", contract, *args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ecm: error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert not list((project.root / "migrations" / "versions").glob("*ecm_*.py"))
