"""What `ecm plan drop-column` refuses: exit 2, one line naming the obstacle, no file, nothing changed.

Two kinds of refusal. What dropping NOT NULL cannot fix, when rows inserted without the
column would hold NULL (a NOT NULL domain, UNIQUE NULLS NOT DISTINCT, a multi-column
MATCH FULL foreign key; ``--fill`` is the way out, and the test shows it is). And what
dropping the column would break online: the primary key, views, rules, policies,
triggers and trigger functions, generated columns, foreign keys from other tables, a
publication's column list, the replica identity.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from .project import Project, make_project

SETUP = """
CREATE DOMAIN nn_text AS text NOT NULL;
CREATE DOMAIN nn_text_d AS text NOT NULL DEFAULT 'd';
CREATE TABLE parents (a int, b int, PRIMARY KEY (a, b));
CREATE TABLE accounts (
    id int PRIMARY KEY,
    dom nn_text,
    dom_d nn_text_d,
    code text NOT NULL,
    code2 text NOT NULL UNIQUE,
    pa int,
    pb int NOT NULL,
    viewed text,
    secret text,
    ruled text,
    trig text,
    func_read text,
    gen_src int,
    doubled int GENERATED ALWAYS AS (gen_src * 2) STORED,
    n int GENERATED ALWAYS AS IDENTITY,
    published text,
    repl text NOT NULL,
    ref_code text UNIQUE,
    CONSTRAINT accounts_pa_pb_fkey FOREIGN KEY (pa, pb) REFERENCES parents (a, b) MATCH FULL
);
CREATE UNIQUE INDEX accounts_code_key ON accounts (code) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX accounts_repl_key ON accounts (repl);
ALTER TABLE accounts REPLICA IDENTITY USING INDEX accounts_repl_key;
CREATE VIEW account_views AS SELECT id, viewed FROM accounts;
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_mine ON accounts USING (secret = current_user);
CREATE RULE keep_ruled AS ON UPDATE TO accounts WHERE NEW.ruled IS NULL DO INSTEAD NOTHING;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER on_trig BEFORE UPDATE OF trig ON accounts FOR EACH ROW EXECUTE FUNCTION touch();
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.func_read := coalesce(NEW.func_read, 'x');
    RETURN NEW;
END$$;
CREATE TRIGGER stamp_func_read BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION stamp();
SET client_min_messages = error;  -- wal_level is not logical here; the publication exists all the same
CREATE PUBLICATION account_feed FOR TABLE accounts (id, published);
RESET client_min_messages;
CREATE TABLE orders (id int PRIMARY KEY, account_code text CONSTRAINT orders_account_code_fkey REFERENCES accounts (ref_code));
CREATE TABLE events (id int, at date, label text) PARTITION BY RANGE (at);
"""

CASES = [
    # what dropping NOT NULL cannot fix
    (["accounts", "dom"], "domain public.nn_text, which is NOT NULL and has no default"),
    (["accounts", "code"], "unique index accounts_code_key (NULLS NOT DISTINCT)"),
    (["accounts", "pb"], "foreign key accounts_pa_pb_fkey (MATCH FULL) with pa"),
    (["accounts", "id"], "primary key"),
    (["accounts", "published"], "column list of publication(s) account_feed"),
    # what dropping the column would break online
    (["accounts", "viewed"], "view(s) public.account_views"),
    (["accounts", "secret"], "row-level security policies only_mine"),
    (["accounts", "ruled"], "rule(s) keep_ruled"),
    (["accounts", "trig"], "trigger(s) (UPDATE OF or WHEN) on_trig"),
    (["accounts", "func_read"], "trigger function(s) stamp() of trigger stamp_func_read"),
    (["accounts", "gen_src"], "generated column(s) doubled"),
    (
        ["accounts", "ref_code"],
        "foreign key(s) orders_account_code_fkey on public.orders; they would have to be",
    ),
    (["accounts", "repl"], "accounts_repl_key, the table's REPLICA IDENTITY"),
    # --fill itself
    (["accounts", "code2", "--fill", "''"], "the same value for every row"),
    (["accounts", "doubled", "--fill", "1"], "is a generated column"),
    (["accounts", "n", "--fill", "1"], "is an identity column"),
    (["accounts", "dom", "--fill", "id"], "refers to a column"),
    (["accounts", "dom", "--fill", "(SELECT 'x')"], "sub-query"),
    (["accounts", "dom", "--fill", "'x'); DROP TABLE accounts; --"], "not a single SQL expression"),
    (["accounts", "dom", "--fill", "NULL::text"], "fills nothing"),
    (["accounts", "dom", "--fill", " "], "--fill is empty"),
    # names
    (["nosuch", "code"], "does not exist"),
    (["accounts", "nosuch"], "does not exist"),
    (["events", "label"], "partitioned"),
    (["accounts", "x" * 64], "63 bytes"),
    (["accounts", "code", "--schema", "nosuch"], "does not exist"),
]


@pytest.fixture
def project(tmp_path: Path, database_url: str, db: psycopg.Connection) -> Project:
    db.execute(SETUP)
    return make_project(tmp_path / "app", database_url)


def snapshot(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT c.relname, a.attname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2"
    ).fetchall()


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_refused(project: Project, db: psycopg.Connection, args: list[str], message: str) -> None:
    before = snapshot(db)
    result = project.ecm("plan", "drop-column", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ecm: error:") and message in lines[0], lines[0]
    assert project.versions() == [] and not (project.root / "migrations" / "contracts").exists()
    assert snapshot(db) == before
    assert db.execute("SELECT to_regnamespace('ecm')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("args", "expand"),
    [
        # --fill is the way out of what dropping NOT NULL cannot fix: NOT NULL stays.
        (["accounts", "dom", "--fill", "'none'"], ["set default of dom to the fill"]),
        (["accounts", "code", "--fill", "gen_random_uuid()::text"], ["set default of code to the fill"]),
        (["accounts", "pb", "--fill", "0"], ["set default of pb to the fill"]),
        # a domain with a default already gives rows inserted without the column a value
        (["accounts", "dom_d"], []),
        # a unique index without NULLS NOT DISTINCT takes any number of NULLs
        (["accounts", "code2"], ["drop NOT NULL of code2"]),
    ],
)
def test_what_fill_or_a_default_allows(project: Project, args: list[str], expand: list[str]) -> None:
    import json

    result = project.ecm("plan", "drop-column", *args, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    phases = {p["name"]: p for p in doc["phases"]}
    assert [s["name"] for s in phases["expand"]["steps"]] == expand
    assert phases["contract"]["steps"][-1]["name"] == f"drop column {args[1]}"
    assert any("values are gone" in n for n in doc["notes"]), doc["notes"]


def test_from_metadata_knows_a_not_null_domain(tmp_path: Path) -> None:
    """Planning from the models (no database): a DOMAIN's NOT NULL and default are facts there too."""
    import json
    import textwrap

    p = make_project(tmp_path / "app", "postgresql://nobody@127.0.0.1:1/unreachable")
    (p.root / "models.py").write_text(
        textwrap.dedent(
            """
            from sqlalchemy import BigInteger, Column, MetaData, Table, Text
            from sqlalchemy.dialects.postgresql import DOMAIN

            metadata = MetaData()
            accounts = Table(
                "accounts", metadata,
                Column("id", BigInteger, primary_key=True),
                Column("tag", DOMAIN("tag_text", Text, not_null=True)),
                Column("label", DOMAIN("label_text", Text, not_null=True, default="'none'")),
            )
            """
        )
    )
    refused = p.ecm("plan", "drop-column", "accounts", "tag", "--from-metadata", "models:metadata")
    assert refused.returncode == 2 and "domain public.tag_text, which is NOT NULL" in refused.stderr
    planned = p.ecm(
        "plan", "drop-column", "accounts", "label", "--from-metadata", "models:metadata", "--json"
    )
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert doc["phases"][0]["steps"] == [] and "domain" in doc["phases"][0]["summary"]
    assert [f["phase"] for f in doc["files"]] == ["expand", "contract"]
