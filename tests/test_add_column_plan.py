"""The pure add-column planner: facts and parameters in, the plan's shape and SQL out, no connection.

Which shape a plan takes is decided by the value existing rows get (``--fill``, else
``--default``): stored once in the catalog when it is absent or not volatile, backfilled
otherwise; ``--not-null`` then needs a contract only when the rows were backfilled.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pglast import parse_sql

from expandcontract.errors import BadInput
from expandcontract.plan.facts import TableFacts
from expandcontract.plan.ops import REGISTRY
from expandcontract.plan.ops.add_column import AddColumn, parse_expression, parse_type, volatile_part


def facts(**overrides: Any) -> TableFacts:
    base: dict[str, Any] = {
        "schema": "public",
        "name": "items",
        "columns": ("id", "note", "origin"),
        "primary_key": ("id",),
        "row_estimate": 5000,
    }
    base.update(overrides)
    return TableFacts(**base)


def add(*args: str, **options: Any) -> Any:
    return AddColumn("items", *args, **options).build(facts())


T = "ALTER TABLE public.items "

#: (column, type, options) -> phases, the expand's ALTER, the backfill's SET (or None).
SHAPES: list[tuple[tuple[str, str], dict[str, Any], list[str], str, str | None]] = [
    (("v", "varchar(20)"), {}, ["expand"], T + "ADD COLUMN IF NOT EXISTS v varchar(20)", None),
    (
        ("qty", "integer"),
        {"default": "0", "not_null": True},
        ["expand"],
        T + "ADD COLUMN IF NOT EXISTS qty integer DEFAULT 0 NOT NULL",
        None,
    ),
    (
        ("created", "timestamptz"),
        {"default": "now()", "not_null": True},
        ["expand"],
        T + "ADD COLUMN IF NOT EXISTS created timestamptz DEFAULT now() NOT NULL",
        None,
    ),
    (
        ("flag", "boolean"),
        {"default": "false", "fill": "true", "not_null": True},
        ["expand"],
        T
        + "ADD COLUMN IF NOT EXISTS flag boolean DEFAULT TRUE NOT NULL, ALTER COLUMN flag SET DEFAULT FALSE",
        None,
    ),
    (
        ("k", "int"),
        {"fill": "7"},
        ["expand"],
        T + "ADD COLUMN IF NOT EXISTS k integer DEFAULT 7, ALTER COLUMN k SET DEFAULT NULL",
        None,
    ),
    (
        ("n", "bigint"),
        {"default": "nextval('n_seq')", "fill": "NULL"},
        ["expand"],
        T + "ADD COLUMN IF NOT EXISTS n bigint, ALTER COLUMN n SET DEFAULT nextval('n_seq')",
        None,
    ),
    (
        ("neg", "bigint"),
        {"default": "-1 * 2", "not_null": True},
        ["expand"],
        T + "ADD COLUMN IF NOT EXISTS neg bigint DEFAULT (-1 * 2) NOT NULL",
        None,
    ),
    (
        ("u", "uuid"),
        {"default": "gen_random_uuid()"},
        ["expand", "backfill"],
        T + "ADD COLUMN IF NOT EXISTS u uuid, ALTER COLUMN u SET DEFAULT gen_random_uuid()",
        "u = (gen_random_uuid())",
    ),
    (
        ("token", "text"),
        {"default": "gen_random_uuid()::text", "not_null": True},
        ["expand", "backfill", "contract"],
        T
        + "ADD COLUMN IF NOT EXISTS token text, ALTER COLUMN token SET DEFAULT CAST(gen_random_uuid() AS text)",
        "token = (CAST(gen_random_uuid() AS text))",
    ),
    (
        ("token", "text"),
        {"default": "gen_random_uuid()::text", "not_null": True, "fill": "'legacy-' || id"},
        ["expand", "backfill", "contract"],
        T
        + "ADD COLUMN IF NOT EXISTS token text, ALTER COLUMN token SET DEFAULT CAST(gen_random_uuid() AS text)",
        "token = ('legacy-' || id)",
    ),
    (
        ("slug", "text"),
        {"fill": "lower(note)"},
        ["expand", "backfill"],
        T + "ADD COLUMN IF NOT EXISTS slug text",
        "slug = (lower(note))",
    ),
    (
        ("at", "timestamptz"),
        {"default": "clock_timestamp()", "not_null": True},
        ["expand", "backfill", "contract"],
        T + "ADD COLUMN IF NOT EXISTS at timestamptz, ALTER COLUMN at SET DEFAULT clock_timestamp()",
        "at = (clock_timestamp())",
    ),
    (
        ("u2", "uuid"),
        {"default": "gen_random_uuid()", "fill": "'00000000-0000-0000-0000-000000000000'", "not_null": True},
        ["expand"],
        T + "ADD COLUMN IF NOT EXISTS u2 uuid DEFAULT '00000000-0000-0000-0000-000000000000' NOT NULL, "
        "ALTER COLUMN u2 SET DEFAULT gen_random_uuid()",
        None,
    ),
]


@pytest.mark.parametrize(("args", "options", "phases", "alter", "set_sql"), SHAPES)
def test_each_shape(
    args: tuple[str, str], options: dict[str, Any], phases: list[str], alter: str, set_sql: str | None
) -> None:
    plan = add(*args, **options)
    column = args[0]
    assert [p.name for p in plan.phases] == phases
    expand = plan.phase("expand")
    probe, step = expand.upgrade
    assert probe.sql.startswith("DO $ecm_probe$") and probe.skip_if and f"'{column}'" in probe.skip_if
    assert step.sql == alter
    assert [s.kind for s in expand.downgrade] == ["guard", "ddl"]
    assert expand.downgrade[1].sql == f"{T}DROP COLUMN IF EXISTS {column}"
    assert plan.adds == {"public.items": [column]} and plan.removes == {}
    if set_sql is None:
        assert plan.backfill is None
    else:
        assert plan.backfill is not None
        assert plan.backfill["set_sql"] == set_sql
        assert plan.backfill["pending_sql"] == plan.backfill["mismatch_sql"] == f"{column} IS NULL"
        assert plan.backfill["key"] == ("id",) and plan.backfill["key_kind"] == "pk"
    if "contract" in phases:
        nn = f"ecm_add_column_items_{column}_nn"
        assert plan.breaks == ({"table": "public.items", "column": column, "kind": "not-null"},)
        assert plan.creates == (nn,)
        contract = plan.phase("contract")
        assert contract.upgrade[0].kind == "guard"
        assert [s.sql for s in contract.upgrade[1:]] == [
            f"{T}ADD CONSTRAINT {nn} CHECK ({column} IS NOT NULL) NOT VALID",
            f"{T}VALIDATE CONSTRAINT {nn}",
            f"{T}ALTER COLUMN {column} SET NOT NULL",
            f"{T}DROP CONSTRAINT IF EXISTS {nn}",
        ]
        assert [s.sql for s in contract.downgrade] == [
            f"{T}DROP CONSTRAINT IF EXISTS {nn}",
            f"{T}ALTER COLUMN {column} DROP NOT NULL",
        ]
    else:
        assert plan.breaks == () and plan.creates == ()


def test_the_fill_reads_are_touched_so_no_plan_moves_them_while_the_backfill_needs_them() -> None:
    assert add("token", "text", fill="'legacy-' || id").touches == {"public.items": ["token", "id"]}
    assert add("token", "text", default="'x'").touches == {"public.items": ["token"]}


def test_every_step_is_idempotent() -> None:
    for args, options, *_ in SHAPES:
        plan = add(*args, **options)
        for phase in plan.phases:
            for step in (*phase.upgrade, *phase.downgrade):
                if step.kind in ("guard", "backfill"):
                    continue
                sql = step.sql
                assert (
                    "IF NOT EXISTS" in sql
                    or "IF EXISTS" in sql
                    or step.skip_if
                    or "VALIDATE CONSTRAINT" in sql
                    or "SET NOT NULL" in sql
                    or "DROP NOT NULL" in sql
                ), (args, options, step.name)


def test_new_rows_get_the_default_and_existing_rows_the_fill_in_one_statement() -> None:
    """No insert can land between adding the column and giving it its default for new rows."""
    plan = add("token", "text", default="gen_random_uuid()::text", not_null=True)
    assert len([s for s in plan.phase("expand").upgrade if s.sql.startswith("ALTER TABLE")]) == 1


def test_the_probe_repeats_the_same_clauses_on_a_temporary_table() -> None:
    plan = add("token", "text", default="gen_random_uuid()::text", not_null=True, fill="'legacy-' || id")
    probe, step = plan.phase("expand").upgrade
    clauses = step.sql.removeprefix(T).replace("ADD COLUMN IF NOT EXISTS", "ADD COLUMN")
    assert f"ALTER TABLE pg_temp.ecm_add_column_probe {clauses};" in probe.sql
    backfill = (
        "UPDATE pg_temp.ecm_add_column_probe SET token = ('legacy-' || id) FROM public.items WHERE false"
    )
    assert backfill in probe.sql
    assert "#variable_conflict use_column" in probe.sql
    # What psql and the server parse is one DO statement.
    assert len(parse_sql(probe.sql)) == 1


@pytest.mark.parametrize(
    ("text", "volatile"),
    [
        ("0", None),
        ("'x'", None),
        ("now()", None),
        ("CURRENT_TIMESTAMP", None),
        ("current_user", None),
        ("'{}'::jsonb", None),
        ("pg_catalog.now()", None),
        ("lower('A') || 'b'", None),
        ("-1", None),
        ("ARRAY[1, 2]", None),
        ("gen_random_uuid()", "gen_random_uuid()"),
        ("gen_random_uuid()::text", "gen_random_uuid()"),
        ("clock_timestamp()", "clock_timestamp()"),
        ("random()", "random()"),
        ("nextval('s')", "nextval()"),
        ("public.now()", "public.now()"),
        ("my_stable_function()", "my_stable_function()"),
        ("1 ### 2", "operator ###"),
        ("lower(md5(random()::text))", "random()"),
    ],
)
def test_volatility_is_read_conservatively(text: str, volatile: str | None) -> None:
    tree = parse_sql(f"SELECT {text}")[0].stmt.targetList[0].val  # type: ignore[attr-defined]
    assert volatile_part(tree) == volatile


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type_sql": "text", "not_null": True}, "--not-null needs --default"),
        ({"type_sql": "text", "not_null": True, "default": "NULL"}, "is NULL"),
        ({"type_sql": "text", "not_null": True, "default": "NULL::text"}, "is NULL"),
        ({"type_sql": "text", "not_null": True, "default": "'a'", "fill": "NULL"}, "--fill 'NULL' is NULL"),
        ({"type_sql": "varchar(20"}, "not one PostgreSQL type name"),
        ({"type_sql": "text NOT NULL"}, "not one PostgreSQL type name"),
        ({"type_sql": "text) FROM pg_class --"}, "not one PostgreSQL type name"),
        ({"type_sql": "int -- )"}, "not one PostgreSQL type name"),
        ({"type_sql": "setof int"}, "not one PostgreSQL type name"),
        ({"type_sql": ""}, "TYPE is empty"),
        ({"type_sql": "serial"}, "is not a type"),
        ({"type_sql": "BIGSERIAL"}, "is not a type"),
        ({"type_sql": "text", "default": "gen_random_uuid("}, "not a single SQL expression"),
        ({"type_sql": "text", "default": "1; DROP TABLE items"}, "not a single SQL expression"),
        ({"type_sql": "text", "default": "1 FROM pg_class"}, "not a single SQL expression"),
        ({"type_sql": "text", "default": "1, 2"}, "not a single SQL expression"),
        ({"type_sql": "text", "default": "1 AS x"}, "not a single SQL expression"),
        ({"type_sql": "text", "default": "note"}, "a default cannot"),
        ({"type_sql": "text", "default": "(SELECT 1)"}, "subquery"),
        ({"type_sql": "text", "default": "$1"}, "parameter"),
        ({"type_sql": "text", "fill": "max(note)"}, "aggregate"),
        ({"type_sql": "text", "fill": "items.note"}, "bare names"),
        ({"type_sql": "text", "fill": "nosuch"}, "does not exist in table"),
        ({"type_sql": "text", "fill": "c"}, "itself"),
        ({"type_sql": "text", "fill": "'$ecm$'"}, "dollar-quote tag"),
        ({"type_sql": "text", "default": "  "}, "is empty"),
    ],
)
def test_refusals(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("$", r"\$").replace("(", r"\(")):
        AddColumn("items", "c", **kwargs).build(facts())


def test_an_existing_column_is_refused() -> None:
    with pytest.raises(BadInput, match="already exists"):
        AddColumn("items", "note", "text").build(facts())


def test_printed_sql_is_what_was_checked() -> None:
    """Comments vanish, spellings normalize, and nothing outside the expression survives."""
    assert parse_type("  int /* ) */ ").sql == "integer"
    assert parse_type("character varying(20)").sql == "varchar(20)"
    assert parse_type('"My Type"[]').sql == '"My Type"[]'
    e = parse_expression("'a' /* ) FROM x */ || note", "--fill", "c", facts(), reads_allowed=True)
    assert e.sql == "'a' || note" and e.reads == ("note",)


def test_hostile_names_are_quoted_by_the_library() -> None:
    column = 'select "x"; --'
    plan = AddColumn("Order Items", column, '"My Type"', default="'it''s'").build(
        facts(name="Order Items", columns=("id",))
    )
    probe, step = plan.phase("expand").upgrade
    assert step.sql == (
        'ALTER TABLE public."Order Items" ADD COLUMN IF NOT EXISTS "select ""x""; --" "My Type" DEFAULT \'it\'\'s\''
    )
    assert plan.phase("expand").downgrade[1].sql == (
        'ALTER TABLE public."Order Items" DROP COLUMN IF EXISTS "select ""x""; --"'
    )
    assert "attname = 'select \"x\"; --'" in (probe.skip_if or "")


def test_the_types_squawk_rules_name_the_request() -> None:
    plan = add("n", "integer")
    assert plan.phase("expand").upgrade[1].squawk_ignore == (
        ("prefer-bigint-over-int", "the type the plan was asked for (integer)"),
    )
    assert add("n", "text").phase("expand").upgrade[1].squawk_ignore == ()


def test_registered_with_its_cli_shape() -> None:
    assert REGISTRY["add-column"] is AddColumn
    plan = add("token", "text", default="gen_random_uuid()::text", not_null=True)
    assert plan.plan_id == "add_column_items_token" and plan.operation == "add-column"
    assert plan.spec["shape"] == "backfilled" and plan.spec["type"] == "text"
    assert plan.notes and "backfill" in plan.notes[0]


def test_planning_imports_no_driver() -> None:
    code = (
        "import sys; from expandcontract.plan.ops.add_column import AddColumn; "
        "from expandcontract.plan.facts import TableFacts; "
        "AddColumn('t', 'c', 'text', default='now()').build(TableFacts('public', 't', columns=('id',))); "
        "print([m for m in ('psycopg', 'psycopg2', 'asyncpg') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
