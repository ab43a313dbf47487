"""Index definitions from SQLAlchemy MetaData must be rewritable exactly like the catalog's.

Found on full-stack-fastapi-template: ``email`` declared ``unique=True, index=True``
(SQLAlchemy turns that into a unique *index*, no constraint). ``plan --from-metadata``
produced ``CREATE UNIQUE INDEX ... ix_user_email_address ON "user" (email)``, an index
on the OLD column, because SQLAlchemy's CREATE INDEX has no ``USING btree`` and the
rewrite silently gave up without it; the contract then dropped ``email`` and its
index, leaving ``email_address`` without any unique index. These tests compare the
definitions themselves, not just index names, against a real server.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from expandcontract.db import engine as db_engine
from expandcontract.db.catalog import read_table_facts
from expandcontract.errors import BadInput
from expandcontract.plan.facts import TableFacts
from expandcontract.plan.from_metadata import facts_from_metadata
from expandcontract.plan.model import Plan
from expandcontract.plan.ops.rename_column import RenameColumn, build
from expandcontract.sql.rewrite import (
    index_definition,
    index_references_column,
    references_column,
    rewrite_column,
    rewrite_index_definition,
)

from .project import indexes, make_project


def template_metadata() -> sa.MetaData:
    """The template's ``user`` table (SQLModel's ``Field(unique=True, index=True, max_length=255)``)."""
    metadata = sa.MetaData()
    sa.Table(
        "user",
        metadata,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("email", sa.String(255), unique=True, index=True, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("full_name", sa.String(255)),
        sa.Column("hashed_password", sa.String, nullable=False),
    )
    return metadata


def shapes_metadata() -> sa.MetaData:
    """One index per shape pg_get_indexdef() prints; text columns keep the catalog free of casts."""
    metadata = sa.MetaData()
    t = sa.Table(
        "profiles",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("handle", sa.Text),
        sa.Column("score", sa.Integer),
        sa.Column("tags", postgresql.ARRAY(sa.Text)),
        sa.Column("code", sa.Text),
    )
    sa.Index("ix_email_desc", t.c.email.desc().nulls_last(), t.c.id.asc().nulls_first())
    sa.Index("ix_email_part", t.c.email, postgresql_where=t.c.score > 5, postgresql_include=["handle"])
    sa.Index("ix_where_email", t.c.score, postgresql_where=t.c.email.isnot(None))
    sa.Index("ix_email_hash", t.c.email, postgresql_using="hash")
    sa.Index("ix_handle_lower", sa.func.lower(t.c.handle))
    sa.Index("ix_handle_ops", t.c.handle, postgresql_ops={"handle": "text_pattern_ops"})
    sa.Index("ix_tags", t.c.tags, postgresql_using="gin")
    sa.Index("ix_code_nnd", t.c.code, unique=True, postgresql_nulls_not_distinct=True)
    sa.UniqueConstraint(t.c.code, t.c.score, name="code_score_key")
    return metadata


def catalog_facts(database_url: str, metadata: sa.MetaData, table: str, column: str) -> TableFacts:
    engine = db_engine.create(database_url)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
        with engine.connect() as connection:
            facts = read_table_facts(connection, None, table, column)
            connection.rollback()
        return facts
    finally:
        engine.dispose()


def index_steps(plan: Plan) -> list[str]:
    """NEW's index builds: the backfill makes them once every row is copied."""
    return [s.sql for s in plan.shown_steps(plan.phase("backfill")) if s.kind == "concurrent" and s.index]


def test_sqlalchemy_makes_unique_plus_index_a_unique_index_without_a_constraint() -> None:
    table = template_metadata().tables["user"]
    assert not any(isinstance(c, sa.UniqueConstraint) for c in table.constraints)
    assert [(ix.name, ix.unique, [c.name for c in ix.columns]) for ix in table.indexes] == [
        ("ix_user_email", True, ["email"])
    ]


def test_template_unique_index_moves_to_the_new_column(database_url: str) -> None:
    metadata = template_metadata()
    live = catalog_facts(database_url, metadata, "user", "email")
    static = facts_from_metadata(metadata, None, "user", "email")

    expected = 'CREATE UNIQUE INDEX ix_user_email ON public."user" USING btree (email)'
    assert [ix.definition for ix in live.indexes] == [expected]
    assert [ix.definition for ix in static.indexes] == [expected]
    assert static.indexes == live.indexes

    op = RenameColumn("user", "email", "email_address")
    from_catalog, from_metadata = build(op, live), build(op, static)
    new_index = (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_user_email_address "
        'ON public."user" USING btree (email_address)'
    )
    assert index_steps(from_catalog) == index_steps(from_metadata) == [new_index]
    # The contract's downgrade rebuilds the original, on the original column.
    old_index = (
        'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_user_email ON public."user" USING btree (email)'
    )
    downgrade = [
        s.sql for s in from_metadata.phase("contract").downgrade if s.kind == "concurrent" and s.index
    ]
    assert downgrade == [old_index]


SHAPE_COLUMNS = ["email", "handle", "score", "tags", "code"]


@pytest.mark.parametrize("column", SHAPE_COLUMNS)
def test_every_index_shape_agrees_with_the_catalog(database_url: str, column: str) -> None:
    metadata = shapes_metadata()
    live = catalog_facts(database_url, metadata, "profiles", column)
    static = facts_from_metadata(metadata, None, "profiles", column)

    assert [ix.name for ix in static.indexes] == [ix.name for ix in live.indexes]
    assert static.indexes == live.indexes  # definitions included, to the character
    assert static.unique_keys == live.unique_keys

    new = f"{column}_v2"
    op = RenameColumn("profiles", column, new)
    from_catalog, from_metadata = build(op, live), build(op, static)
    assert index_steps(from_catalog) == index_steps(from_metadata)
    assert len(index_steps(from_metadata)) == len(static.indexes) > 0
    for sql in index_steps(from_metadata):
        assert index_references_column(sql, new), sql
        assert not index_references_column(sql, column), sql


def test_catalog_definitions_of_every_shape(database_url: str) -> None:
    """What the server prints, spelled out once, so that a change of either side shows here."""
    metadata = shapes_metadata()
    by_name = {
        ix.name: ix.definition for ix in facts_from_metadata(metadata, None, "profiles", "email").indexes
    }
    live = {
        ix.name: ix.definition for ix in catalog_facts(database_url, metadata, "profiles", "email").indexes
    }
    assert by_name == live
    assert live == {
        "ix_email_desc": "CREATE INDEX ix_email_desc ON public.profiles USING btree (email DESC NULLS LAST, id NULLS FIRST)",
        "ix_email_hash": "CREATE INDEX ix_email_hash ON public.profiles USING hash (email)",
        "ix_email_part": "CREATE INDEX ix_email_part ON public.profiles USING btree (email) INCLUDE (handle) "
        "WHERE (score > 5)",
        "ix_where_email": "CREATE INDEX ix_where_email ON public.profiles USING btree (score) "
        "WHERE (email IS NOT NULL)",
    }


def test_expressions_the_server_spells_differently_are_moved_too(database_url: str) -> None:
    """Casts and parentheses the catalog adds differ from SQLAlchemy's text; both land on the new column."""
    metadata = sa.MetaData()
    t = sa.Table(
        "people",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(255)),
    )
    sa.Index("ix_people_lower", sa.func.lower(t.c.email), unique=True)
    sa.Index("ix_people_concat", t.c.email + "x", t.c.id + 1)
    live = catalog_facts(database_url, metadata, "people", "email")
    static = facts_from_metadata(metadata, None, "people", "email")
    assert [ix.definition for ix in live.indexes] == [
        "CREATE INDEX ix_people_concat ON public.people USING btree "
        "((((email)::text || 'x'::text)), ((id + 1)))",
        "CREATE UNIQUE INDEX ix_people_lower ON public.people USING btree (lower((email)::text))",
    ]
    assert [ix.definition for ix in static.indexes] == [
        "CREATE INDEX ix_people_concat ON public.people USING btree ((email || 'x'), (id + 1))",
        "CREATE UNIQUE INDEX ix_people_lower ON public.people USING btree (lower(email))",
    ]
    assert [(i.name, i.unique, i.expression, i.columns) for i in static.indexes] == [
        (i.name, i.unique, i.expression, i.columns) for i in live.indexes
    ]
    op = RenameColumn("people", "email", "mail")
    assert index_steps(build(op, live)) == [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_people_concat_mail ON public.people "
        "USING btree ((CAST(mail AS text) || CAST('x' AS text)), (id + 1))",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_people_lower_mail ON public.people "
        "USING btree (lower(CAST(mail AS text)))",
    ]
    assert index_steps(build(op, static)) == [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_people_concat_mail ON public.people "
        "USING btree ((mail || 'x'), (id + 1))",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_people_lower_mail ON public.people "
        "USING btree (lower(mail))",
    ]


def test_rewritten_definitions_match_a_server_side_rename(db: psycopg.Connection[Any]) -> None:
    """Each copy, as the server prints it, is the original as the server prints it after RENAME COLUMN."""
    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, old text, other text, n int, CONSTRAINT u UNIQUE (old, n))"
    )
    db.execute('CREATE INDEX t_lower ON t (lower(old) COLLATE "C" text_pattern_ops DESC NULLS LAST)')
    db.execute("CREATE INDEX t_partial ON t (other) INCLUDE (old) WHERE old <> 'old' AND old IS NOT NULL")
    db.execute(
        "CREATE UNIQUE INDEX t_nnd ON t (old, n) NULLS NOT DISTINCT WITH (fillfactor = 70) WHERE n > 0"
    )
    db.execute("CREATE INDEX t_expr ON t ((old || 'x'), (n + 1), old)")
    db.execute("CREATE INDEX t_hash ON t USING hash (old)")
    query = (
        "SELECT i.relname::text, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = 't'::regclass AND NOT x.indisprimary "
        "ORDER BY 1"
    )
    originals: dict[str, str] = dict(db.execute(query).fetchall())
    assert len(originals) == 6

    db.execute("ALTER TABLE t ADD COLUMN new text")
    copies = {}
    for name, definition in originals.items():
        db.execute(rewrite_index_definition(definition, "old", "new", f"{name}_copy", concurrently=True))
        printed = db.execute("SELECT pg_get_indexdef(%s::regclass)", (f"{name}_copy",)).fetchone()
        assert printed is not None
        copies[name] = str(printed[0]).replace(f"{name}_copy", name, 1)
        db.execute(f"DROP INDEX {name}_copy")
    db.execute("ALTER TABLE t DROP COLUMN new")
    db.execute("ALTER TABLE t RENAME COLUMN old TO new")
    assert copies == dict(db.execute(query).fetchall())


def test_index_definition_takes_the_catalog_layout() -> None:
    sql = (
        'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON "user" '
        "(email DESC NULLS FIRST, id ASC NULLS LAST) WITH (fillfactor = 70) TABLESPACE pg_default"
    )
    assert index_definition(sql, schema="public") == (
        'CREATE UNIQUE INDEX ix ON public."user" USING btree (email DESC, id) WITH (fillfactor=70)'
    )
    # NULLS NOT DISTINCT before WHERE: pglast's own IndexStmt printer puts it last, which does not parse.
    assert index_definition("CREATE UNIQUE INDEX u ON s.t (a) NULLS NOT DISTINCT WHERE a > 0") == (
        "CREATE UNIQUE INDEX u ON s.t USING btree (a) NULLS NOT DISTINCT WHERE (a > 0)"
    )


def test_the_original_input_is_rewritten_now() -> None:
    """SQLAlchemy's spelling (no USING, no schema) used to come back unchanged, on the old column."""
    sqlalchemy_spelling = 'CREATE UNIQUE INDEX ix_user_email ON "user" (email)'
    assert rewrite_index_definition(
        sqlalchemy_spelling, "email", "email_address", "ix_user_email_address", concurrently=True
    ) == (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_user_email_address "
        'ON "user" USING btree (email_address)'
    )


def test_rewrite_that_changes_nothing_raises() -> None:
    unrewritable = 'CREATE INDEX "ix other" ON public."user" USING btree (full_name)'
    with pytest.raises(
        BadInput, match=r'^index "ix other" does not reference column email, so it cannot be moved'
    ):
        rewrite_index_definition(unrewritable, "email", "email_address", "ix_new", concurrently=True)
    qualified_elsewhere = "CREATE INDEX ix ON public.a USING btree (((b.email)::text))"
    with pytest.raises(
        BadInput, match=r"^index ix: cannot move the reference b\.email to column email_address"
    ):
        rewrite_index_definition(qualified_elsewhere, "email", "email_address", "ix_new", concurrently=True)
    with pytest.raises(BadInput, match=r"does not reference column email$"):
        rewrite_column("(char_length(name) > 0)", "email", "email_address")
    with pytest.raises(BadInput, match=r"cannot move the reference t\.email"):
        rewrite_column("t.email <> ''", "email", "email_address")


@pytest.mark.parametrize(
    "call",
    [
        lambda: rewrite_index_definition("CREATE INDEX ix ON t (a)", "b", "c", "x", concurrently=True),
        lambda: rewrite_index_definition(
            "CREATE INDEX ix ON t (a)\n;DROP TABLE t", "a", "c", "x", concurrently=True
        ),
        lambda: rewrite_index_definition("DROP TABLE t", "a", "c", "x", concurrently=True),
        lambda: rewrite_column("a > 0", "b", "c"),
        lambda: rewrite_column("a > 0)\nFROM t WHERE (1", "a", "c"),
        lambda: rewrite_column("a > 0; DROP TABLE t", "a", "c"),
    ],
    ids=[
        "index without the column",
        "index and a second statement",
        "not an index",
        "check without the column",
        "not an expression",
        "expression and a second statement",
    ],
)
def test_errors_are_one_line_bad_input(call: Any) -> None:
    with pytest.raises(BadInput) as excinfo:
        call()
    assert "\n" not in str(excinfo.value)


def test_only_references_are_renamed() -> None:
    """Strings, functions, types and the table may share the column's name; only the column moves."""
    definition = (
        "CREATE INDEX ix ON public.name USING btree (name(name), ((name.name))) "
        "WHERE ((name)::name <> 'name'::text)"
    )
    assert rewrite_index_definition(definition, "name", "label", "ix2", concurrently=False) == (
        "CREATE INDEX IF NOT EXISTS ix2 ON public.name USING btree (name(label), (name.label)) "
        "WHERE (CAST(label AS name) <> CAST('name' AS text))"
    )
    # A rename to the same name is a plain copy (the contract's downgrade), not an error.
    assert (
        rewrite_index_definition(
            "CREATE INDEX ix ON public.t USING btree (a)", "a", "a", "ix", concurrently=True
        )
        == "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix ON public.t USING btree (a)"
    )
    assert rewrite_column("(amount > (0)::numeric)", "amount", "Amount") == '"Amount" > CAST(0 AS numeric)'
    assert references_column("lower(x) = 'email'", "email") is False
    assert references_column('"email" IS NOT NULL', "email") is True


def test_whole_row_index_is_copied_not_refused() -> None:
    """No reference to move, and the copy already covers the new column: kept as before."""
    definition = "CREATE INDEX wr_row ON public.wr USING btree (((wr.* IS NULL)))"
    assert index_references_column(definition, "b")
    assert rewrite_index_definition(definition, "b", "c", "wr_row_c", concurrently=True) == (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS wr_row_c ON public.wr USING btree ((wr.* IS NULL))"
    )


def test_metadata_index_that_is_not_sql_is_refused() -> None:
    metadata = sa.MetaData()
    t = sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("a", sa.Text))
    sa.Index("ix_bad", t.c.a, postgresql_where=sa.text("a <> 'x"))
    with pytest.raises(BadInput, match=r"^index ix_bad: cannot read index definition"):
        facts_from_metadata(metadata, None, "t", "a")


# -- end to end: plan --from-metadata with the real CLI, run every phase ------------------------


MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
user = sa.Table(
    "user",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("email", sa.String(255), unique=True, index=True, nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("full_name", sa.String(255)),
    sa.Column("hashed_password", sa.String, nullable=False),
)
"""


def test_from_metadata_end_to_end_keeps_the_unique_index(
    tmp_path: Path, database_url: str, db: psycopg.Connection[Any]
) -> None:
    namespace: dict[str, Any] = {}
    exec(MODELS, namespace)  # the same models the project imports
    engine = db_engine.create(database_url)
    try:
        with engine.begin() as connection:
            namespace["metadata"].create_all(connection)
    finally:
        engine.dispose()
    db.execute(
        'INSERT INTO "user" (id, email, is_active, hashed_password) '
        "SELECT gen_random_uuid(), 'u' || g || '@example.com', true, 'x' FROM generate_series(1, 50) g"
    )

    project = make_project(tmp_path / "app", database_url)
    (project.root / "models.py").write_text(textwrap.dedent(MODELS))
    planned = project.ecm(
        "plan", "rename-column", "user", "email", "email_address", "--from-metadata", "models:metadata"
    )
    assert planned.returncode == 0, planned.stderr
    for phase in ("expand", "backfill", "contract"):
        result = project.ecm("upgrade", "--phase", phase, "--allow-no-reporters")
        assert result.returncode == 0, (phase, result.stderr)

    idx = indexes(db, "user")
    assert idx["ix_user_email_address"] == (
        'CREATE UNIQUE INDEX ix_user_email_address ON public."user" USING btree (email_address)',
        True,
    )
    assert not any("(email)" in d for d, _ in idx.values()), idx
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            'INSERT INTO "user" (id, email_address, is_active, hashed_password) '
            "VALUES (gen_random_uuid(), 'u1@example.com', true, 'x')"
        )


def test_plan_fails_in_one_line_when_an_index_cannot_be_moved(tmp_path: Path, database_url: str) -> None:
    """A definition that names the column in a way that cannot be moved stops the plan (exit 2)."""
    project = make_project(tmp_path / "app", "postgresql://nobody@127.0.0.1:1/unreachable")
    (project.root / "models.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa

            metadata = sa.MetaData()
            t = sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("a", sa.Text))
            sa.Index("ix_t_a", t.c.id, sa.text("(other.a)"))
            """
        )
    )
    result = project.ecm("plan", "rename-column", "t", "a", "b", "--from-metadata", "models:metadata")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "index ix_t_a: cannot move the reference other.a to column b" in lines[0], (
        lines
    )
    assert project.versions() == []
