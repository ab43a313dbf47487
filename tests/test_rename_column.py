"""rename-column end to end through the real CLI and a stock Alembic project (pgroll-style phases)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from .project import Project, columns, constraints, indexes, make_project, triggers

PLAN = "rename_accounts_name_full_name"
NO_REPORTERS = {"ECM_ALLOW_NO_REPORTERS": "1"}

SCHEMA = """
DO $$ BEGIN CREATE ROLE ecm_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE registry (n varchar(200) COLLATE "C" PRIMARY KEY);
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name varchar(200) COLLATE "C" NOT NULL DEFAULT 'anon' REFERENCES registry (n),
    email text,
    CONSTRAINT accounts_name_key UNIQUE (name),
    CONSTRAINT accounts_name_len CHECK (char_length(name) > 0)
);
CREATE INDEX accounts_lower_name_idx ON accounts (lower(name));
CREATE INDEX accounts_email_partial_idx ON accounts (email) WHERE name <> 'anon';
COMMENT ON COLUMN accounts.name IS 'display name';
GRANT SELECT (name) ON accounts TO ecm_reader;
CREATE TABLE orders (
    id serial PRIMARY KEY,
    account_name varchar(200) COLLATE "C" REFERENCES accounts (name) ON UPDATE CASCADE
);
INSERT INTO registry SELECT 'user ' || g FROM generate_series(1, 500) g;
INSERT INTO registry VALUES ('anon');
INSERT INTO accounts (name, email) SELECT 'user ' || g, 'u' || g || '@example.com' FROM generate_series(1, 500) g;
INSERT INTO orders (account_name) SELECT 'user ' || (g % 500 + 1) FROM generate_series(1, 200) g;
"""


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Project:
    db.execute(SCHEMA)
    p = make_project(tmp_path / "app", database_url)
    assert p.alembic("revision", "-m", "base").returncode == 0
    return p


def plan(project: Project, *extra: str) -> dict:
    result = project.ecm("plan", "rename-column", "accounts", "name", "full_name", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_writes_revisions_on_two_lines(project: Project) -> None:
    doc = plan(project)
    assert doc["plan_id"] == PLAN
    phases = {f["phase"]: f for f in doc["files"]}
    assert set(phases) == {"expand", "backfill", "contract"}
    assert Path(phases["expand"]["path"]).parent == project.root / "migrations" / "versions"
    assert (
        Path(phases["contract"]["path"]).parent.resolve()
        == (project.root / "migrations" / "contracts" / "versions").resolve()
    )
    assert phases["backfill"]["down_revision"] == phases["expand"]["revision"]
    assert phases["contract"]["down_revision"] is None
    # The application's line stays single-headed and never contains the contract.
    heads = project.alembic("heads")
    assert heads.returncode == 0, heads.stderr
    assert heads.stdout.strip().splitlines() == [f"{phases['backfill']['revision']} (head)"]
    for f in doc["files"]:
        text = Path(f["path"]).read_text()
        assert f"Plan: {PLAN}" in text
        assert "Deploy before:" in text and "Deploy after:" in text and "Roll back:" in text
        assert "Run: ecm upgrade --phase " + f["phase"] in text
        imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
        assert imports == ["from expandcontract.revisions.runtime import Step, run_phase"]
    assert "[ecm_contracts]" in (project.root / "alembic.ini").read_text()
    status = project.ecm("status", "--json")
    assert json.loads(status.stdout)["plans"] == []  # planning changes nothing in the database


def test_dry_run_writes_nothing(project: Project) -> None:
    before = project.versions()
    doc = plan(project, "--dry-run")
    assert doc["dry_run"] is True and doc["plan_id"] == PLAN
    assert [p["name"] for p in doc["phases"]] == ["expand", "backfill", "contract"]
    # NEW's copies of OLD's indexes are built by the backfill, once every row is copied.
    assert not any("CREATE UNIQUE INDEX" in s["sql"] for s in doc["phases"][0]["steps"])
    after = [s for s in doc["phases"][1]["steps"] if s["name"].endswith("(after the copy)")]
    assert any("CREATE UNIQUE INDEX CONCURRENTLY" in s["sql"] for s in after)
    assert len(after) == 3, after  # the unique one, lower(name) and the partial one
    assert project.versions() == before
    assert not (project.root / "migrations" / "contracts").exists()
    text = project.ecm("plan", "rename-column", "accounts", "name", "full_name", "--dry-run")
    assert text.returncode == 0 and text.stdout == ""
    assert PLAN in text.stderr and "nothing written" in text.stderr


def test_generated_names_fit_63_bytes(tmp_path: Path, database_url: str, db: psycopg.Connection) -> None:
    long_table = "t" * 60
    db.execute(f'CREATE TABLE "{long_table}" (id int PRIMARY KEY, "{"c" * 60}" text UNIQUE)')
    p = make_project(tmp_path / "app", database_url)
    result = p.ecm("plan", "rename-column", long_table, "c" * 60, "d" * 60, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["plan_id"]) <= 63
    assert p.ecm("upgrade", "--phase", "backfill").returncode == 0
    with p.connect() as conn:
        for name in [*indexes(conn, long_table), *constraints(conn, long_table), *triggers(conn, long_table)]:
            assert len(name.encode()) <= 63, name


def test_phases_and_downgrades(project: Project) -> None:
    plan(project)
    conn = project.connect()
    original_cols = columns(conn, "accounts")
    original_constraints = constraints(conn, "accounts")
    original_indexes = indexes(conn, "accounts")
    original_order_fks = constraints(conn, "orders")

    # --- expand -------------------------------------------------------------------------
    result = project.ecm("upgrade", "--phase", "expand", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [r["phase"] for r in doc["applied"]] == [None, "expand", "backfill"]
    cols = columns(conn, "accounts")
    assert cols["name"] == original_cols["name"]
    assert cols["full_name"] == ("character varying(200)", True, None, "C")  # same type+collation, no default
    cons = constraints(conn, "accounts")
    nn = f"ecm_{PLAN}_nn"
    assert cons[nn] == ("CHECK ((full_name IS NOT NULL)) NOT VALID", False)
    assert cons["accounts_full_name_len"] == ("CHECK ((char_length((full_name)::text) > 0)) NOT VALID", False)
    assert cons["accounts_full_name_fkey"][0].startswith("FOREIGN KEY (full_name) REFERENCES registry(n)")
    assert cons["accounts_full_name_fkey"][1] is False
    # NEW's indexes come with the backfill, once every row is copied.
    assert not any("full_name" in definition for definition, _ in indexes(conn, "accounts").values())
    order_fks = constraints(conn, "orders")
    # Not yet: until the backfill reaches a parent row its full_name is NULL, and a foreign key
    # on it would reject old code's orders. The contract re-points it.
    assert "orders_account_full_name_fkey" not in order_fks
    assert triggers(conn, "accounts") == [f"ecm_{PLAN}_sync"]
    assert conn.execute(
        "SELECT col_description('accounts'::regclass, 3 + 1), has_column_privilege('ecm_reader', 'accounts', 'full_name', 'SELECT')"
    ).fetchone() == ("display name", True)
    assert conn.execute("SELECT count(*) FROM accounts WHERE full_name IS NULL").fetchone() == (500,)

    # --- backfill -----------------------------------------------------------------------
    result = project.ecm("upgrade", "--phase", "backfill", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backfills"][0]["verified"] is True
    assert conn.execute("SELECT count(*) FROM accounts WHERE full_name IS DISTINCT FROM name").fetchone() == (
        0,
    )
    status = json.loads(project.ecm("status", "--json").stdout)
    assert [(p["plan_id"], p["phase"], p["backfill_status"]) for p in status["plans"]] == [
        (PLAN, "backfilled", "complete")
    ]
    idx = indexes(conn, "accounts")
    assert idx["accounts_full_name_key"][1] and "UNIQUE" in idx["accounts_full_name_key"][0]
    assert "lower((full_name)::text)" in idx["accounts_lower_full_name_idx"][0]
    assert "WHERE ((full_name)::text <> 'anon'::text)" in idx["accounts_email_partial_idx_full_name"][0]
    assert all(valid for _, valid in idx.values())

    # --- contract -----------------------------------------------------------------------
    result = project.ecm("upgrade", "--json", "--allow-no-reporters")
    assert result.returncode == 0, result.stderr
    assert [c["plan_id"] for c in json.loads(result.stdout)["contracts"]["applied"]] == [PLAN]
    cols = columns(conn, "accounts")
    assert "name" not in cols
    assert cols["full_name"] == ("character varying(200)", False, "'anon'::character varying", "C")
    cons = constraints(conn, "accounts")
    assert nn not in cons
    assert cons["accounts_full_name_key"] == ("UNIQUE (full_name)", True)
    assert cons["accounts_full_name_len"][1] is True
    assert cons["accounts_full_name_fkey"] == ("FOREIGN KEY (full_name) REFERENCES registry(n)", True)
    assert constraints(conn, "orders") == {
        "orders_pkey": ("PRIMARY KEY (id)", True),
        "orders_account_full_name_fkey": (
            "FOREIGN KEY (account_name) REFERENCES accounts(full_name) ON UPDATE CASCADE",
            True,
        ),
    }
    assert triggers(conn, "accounts") == []
    assert conn.execute(
        "SELECT count(*) FROM pg_proc WHERE proname = %s", (f"ecm_{PLAN}_sync",)
    ).fetchone() == (0,)
    assert conn.execute("SELECT count(*), count(DISTINCT full_name) FROM accounts").fetchone() == (500, 500)
    assert conn.execute(
        "SELECT has_column_privilege('ecm_reader', 'accounts', 'full_name', 'SELECT')"
    ).fetchone() == (True,)

    # --- contract downgrade: OLD comes back, filled from NEW -----------------------------
    conn.execute("INSERT INTO registry VALUES ('late')")
    conn.execute("INSERT INTO accounts (full_name) VALUES ('late')")
    result = project.alembic("-n", "ecm_contracts", "downgrade", f"{PLAN}@base")
    assert result.returncode == 0, result.stderr
    cols = columns(conn, "accounts")
    assert cols["name"] == original_cols["name"]
    assert cols["full_name"] == ("character varying(200)", True, None, "C")
    assert conn.execute("SELECT count(*) FROM accounts WHERE name IS DISTINCT FROM full_name").fetchone() == (
        0,
    )
    cons = constraints(conn, "accounts")
    for name, (definition, valid) in original_constraints.items():
        assert cons[name] == (definition, valid), name
    idx = indexes(conn, "accounts")
    for name, (definition, valid) in original_indexes.items():
        assert idx[name] == (definition, valid), name
    for name, value in original_order_fks.items():
        assert constraints(conn, "orders")[name] == value
    assert triggers(conn, "accounts") == [f"ecm_{PLAN}_sync"]
    # Old code works again: it writes name only, and full_name follows.
    conn.execute("UPDATE accounts SET name = 'anon' WHERE full_name = 'late'")
    assert conn.execute("SELECT full_name FROM accounts WHERE name = 'anon'").fetchone() == ("anon",)

    # --- expand downgrade (plain alembic): back to the original table ---------------------
    result = project.alembic("downgrade", "-2", env=NO_REPORTERS)
    assert result.returncode == 0, result.stderr
    assert columns(conn, "accounts") == original_cols
    assert constraints(conn, "accounts") == original_constraints
    assert indexes(conn, "accounts") == original_indexes
    assert constraints(conn, "orders") == original_order_fks
    assert triggers(conn, "accounts") == []
    conn.close()


def test_plain_alembic_upgrade_head_backfills_inline_and_never_contracts(project: Project) -> None:
    plan(project)
    result = project.alembic("upgrade", "head")  # no `ecm init` first: expand creates the control schema
    assert result.returncode == 0, result.stderr
    with project.connect() as conn:
        assert "name" in columns(conn, "accounts")
        assert conn.execute(
            "SELECT count(*) FROM accounts WHERE full_name IS DISTINCT FROM name"
        ).fetchone() == (0,)
        assert conn.execute("SELECT phase, backfill_status FROM ecm.plans").fetchone() == (
            "backfilled",
            "complete",
        )


def test_contract_lineage_by_plain_alembic_still_runs_the_guard(project: Project) -> None:
    plan(project)
    assert project.alembic("upgrade", "head").returncode == 0
    result = project.alembic("-n", "ecm_contracts", "upgrade", "heads")
    assert result.returncode != 0
    assert "refused" in result.stderr and "reported" in result.stderr
    with project.connect() as conn:
        assert "name" in columns(conn, "accounts")
    result = project.alembic("-n", "ecm_contracts", "upgrade", "heads", env=NO_REPORTERS)
    assert result.returncode == 0, result.stderr
    with project.connect() as conn:
        assert "name" not in columns(conn, "accounts")


def test_backfill_deferred_then_contract_refused_until_backfilled(project: Project) -> None:
    plan(project)
    assert project.alembic("upgrade", "head", env={"ECM_BACKFILL": "defer"}).returncode == 0
    result = project.ecm("upgrade", "--phase", "expand", "--allow-no-reporters")
    assert result.returncode == 0
    with project.connect() as conn:
        assert conn.execute("SELECT backfill_status FROM ecm.plans").fetchone() == ("pending",)
    result = project.alembic("-n", "ecm_contracts", "upgrade", "heads", env=NO_REPORTERS)
    assert result.returncode != 0
    assert "backfill" in result.stderr and "ecm backfill" in result.stderr
    result = project.ecm("upgrade", "--allow-no-reporters", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["backfills"][0]["verified"] is True
    assert doc["contracts"]["applied"][0]["plan_id"] == PLAN


def test_upgrade_dry_run_changes_nothing(project: Project) -> None:
    plan(project)
    result = project.ecm("upgrade", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True
    assert [r["phase"] for r in doc["pending"]] == [None, "expand", "backfill", "contract"]
    assert doc["pending"][-1]["allowed"] is False and doc["pending"][-1]["reasons"]
    with project.connect() as conn:
        assert "full_name" not in columns(conn, "accounts")
        assert conn.execute("SELECT to_regnamespace('ecm')").fetchone() == (None,)


def test_second_plan_expands_while_first_contract_is_held(project: Project, db: psycopg.Connection) -> None:
    plan(project)
    assert project.ecm("upgrade", "--phase", "backfill").returncode == 0
    db.execute("ALTER TABLE orders ADD COLUMN note text")
    result = project.ecm("plan", "rename-column", "orders", "note", "remark", "--json")
    assert result.returncode == 0, result.stderr
    held = project.ecm("upgrade", "--json")  # both contracts held: no reporters
    assert held.returncode == 3
    doc = json.loads(held.stdout)
    assert "remark" in columns(db, "orders")  # plan B expanded although plan A's contract is held
    assert {c["plan_id"] for c in doc["contracts"]["held"]} == {PLAN, "rename_orders_note_remark"}
    assert re.search(r"contract \S+ held", held.stderr)
    heads = project.alembic("heads")
    assert len(heads.stdout.strip().splitlines()) == 1


def test_ecm_abort_rolls_back_from_contract(project: Project) -> None:
    plan(project)
    assert project.ecm("upgrade", "--allow-no-reporters").returncode == 0
    result = project.ecm("abort", PLAN, "--allow-no-reporters", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["state"] == "aborted"
    with project.connect() as conn:
        cols = columns(conn, "accounts")
        assert "name" in cols and "full_name" not in cols
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (500,)
        assert triggers(conn, "accounts") == []


def test_old_code_inserts_child_rows_before_the_backfill(project: Project) -> None:
    """A foreign key from another table to the renamed column never rejects old code's child rows.

    Reproduces: with the foreign key re-created against NEW at expand (NOT VALID is still
    enforced on new rows), old code's `INSERT INTO orders` for a parent the backfill had not
    reached failed with `violates foreign key constraint "orders_account_full_name_fkey"`.
    """
    plan = project.ecm("plan", "rename-column", "accounts", "name", "full_name")
    assert plan.returncode == 0, plan.stderr
    result = project.ecm("upgrade", "--phase", "expand")
    assert result.returncode == 0, result.stderr
    with project.connect() as conn:
        assert conn.execute("SELECT count(*) FROM accounts WHERE full_name IS NULL").fetchone() == (500,)
        conn.execute("INSERT INTO orders (account_name) VALUES ('user 7'), ('user 499')")  # old code
        result = project.ecm("upgrade", "--phase", "backfill")
        assert result.returncode == 0, result.stderr
        conn.execute("INSERT INTO orders (account_name) VALUES ('user 8')")
        result = project.ecm("upgrade", "--allow-no-reporters")
        assert result.returncode == 0, result.stderr
        assert constraints(conn, "orders")["orders_account_full_name_fkey"][1] is True  # validated
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO orders (account_name) VALUES ('nobody')")
