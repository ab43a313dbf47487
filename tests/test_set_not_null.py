"""The pure set-not-null planner: facts in, phases and SQL out, no connection."""

from __future__ import annotations

import pytest

from expandcontract.errors import BadInput
from expandcontract.plan.facts import ColumnFacts, TableFacts
from expandcontract.plan.ops import REGISTRY
from expandcontract.plan.ops.set_not_null import SetNotNull, dollar_quoted, parse_fill


def facts(**overrides: object) -> TableFacts:
    base: dict[str, object] = {
        "schema": "public",
        "name": "items",
        "column": ColumnFacts("note", "text", nullable=True),
        "columns": ("id", "name", "note", "qty"),
        "primary_key": ("id",),
        "row_estimate": 1000,
    }
    base.update(overrides)
    return TableFacts(**base)  # type: ignore[arg-type]


def sqls(plan: object, phase: str, direction: str = "upgrade") -> list[str]:
    steps = getattr(plan.phase(phase), direction)  # type: ignore[attr-defined]
    return [s.sql for s in steps]


def test_registered() -> None:
    assert REGISTRY["set-not-null"] is SetNotNull


def test_with_fill_phases() -> None:
    plan = SetNotNull("items", "note", fill="'(none)'").build(facts())
    assert plan.plan_id == "set_not_null_items_note"
    assert [p.name for p in plan.phases] == ["expand", "backfill", "contract"]
    expand = sqls(plan, "expand")
    assert expand[0] == "EXPLAIN (COSTS OFF) UPDATE public.items SET note = '(none)' WHERE false"
    assert "NEW.note := '(none)';" in expand[1]
    assert expand[2] == (
        "CREATE OR REPLACE TRIGGER ecm_set_not_null_items_note_fill BEFORE INSERT OR UPDATE ON public.items\n"
        "FOR EACH ROW WHEN (NEW.note IS NULL)\n"
        "EXECUTE FUNCTION public.ecm_set_not_null_items_note_fill()"
    )
    # No constraint at expand: old code keeps writing NULL, and the trigger fills it.
    assert not any("CONSTRAINT" in s for s in expand)
    assert [s.kind for s in plan.phase("backfill").upgrade] == ["backfill"]
    contract = plan.phase("contract").upgrade
    assert [s.kind for s in contract][:1] == ["guard"]
    assert [s.sql for s in contract[1:]] == [
        "ALTER TABLE public.items ADD CONSTRAINT ecm_set_not_null_items_note_nn CHECK (note IS NOT NULL) NOT VALID",
        "ALTER TABLE public.items VALIDATE CONSTRAINT ecm_set_not_null_items_note_nn",
        "ALTER TABLE public.items ALTER COLUMN note SET NOT NULL",
        "ALTER TABLE public.items DROP CONSTRAINT IF EXISTS ecm_set_not_null_items_note_nn",
        "DROP TRIGGER IF EXISTS ecm_set_not_null_items_note_fill ON public.items",
        "DROP FUNCTION IF EXISTS public.ecm_set_not_null_items_note_fill()",
    ]
    assert contract[2].kind == "concurrent"  # VALIDATE: no statement_timeout, reads and writes go on
    # The contract's downgrade puts the trigger back before NULL is allowed again.
    down = sqls(plan, "contract", "downgrade")
    assert "CREATE OR REPLACE FUNCTION" in down[0] and "CREATE OR REPLACE TRIGGER" in down[1]
    assert down[-1] == "ALTER TABLE public.items ALTER COLUMN note DROP NOT NULL"
    # The expand's downgrade also undoes what an interrupted contract may have left.
    assert sqls(plan, "expand", "downgrade") == [
        "ALTER TABLE public.items DROP CONSTRAINT IF EXISTS ecm_set_not_null_items_note_nn",
        "ALTER TABLE public.items ALTER COLUMN note DROP NOT NULL",
        "DROP TRIGGER IF EXISTS ecm_set_not_null_items_note_fill ON public.items",
        "DROP FUNCTION IF EXISTS public.ecm_set_not_null_items_note_fill()",
    ]
    assert plan.phase("expand").downgrade[1].skip_if  # only where NOT NULL is set
    assert plan.backfill is not None
    assert plan.backfill["set_sql"] == "note = '(none)'"
    assert plan.backfill["pending_sql"] == plan.backfill["mismatch_sql"] == "note IS NULL"
    assert plan.reverse_backfill is None
    assert plan.breaks == ({"table": "public.items", "column": "note", "kind": "not-null"},)
    assert plan.touches == {"public.items": ["note"]}
    assert plan.removes == {} and plan.adds == {}
    assert set(plan.creates) == {
        "ecm_set_not_null_items_note_fill",
        "ecm_set_not_null_items_note_nn",
    }
    assert any("ORM object keeps None" in n for n in plan.notes)


def test_without_fill_phases() -> None:
    plan = SetNotNull("items", "note").build(facts())
    assert plan.phase("expand").upgrade == ()  # a NOT VALID check now would fail old code's updates
    check = plan.phase("backfill").upgrade
    assert [s.kind for s in check] == ["concurrent"]
    assert "SELECT count(*) INTO n FROM public.items WHERE note IS NULL" in check[0].sql
    assert "ERRCODE = 'not_null_violation'" in check[0].sql
    assert "'id=' || id::text" in check[0].sql and "ORDER BY id LIMIT 10" in check[0].sql
    contract = plan.phase("contract").upgrade
    assert [s.kind for s in contract] == ["guard", "concurrent", "ddl", "concurrent", "ddl", "ddl"]
    # Old code may write NULL until the guard sees it gone: the contract proves it again first.
    assert "SELECT count(*) INTO n FROM public.items WHERE note IS NULL" in contract[1].sql
    assert "run the contract again" in contract[1].sql
    assert "SET NOT NULL" in contract[4].sql
    assert plan.backfill is None
    assert plan.creates == ("ecm_set_not_null_items_note_nn",)
    assert plan.breaks == ({"table": "public.items", "column": "note", "kind": "not-null"},)


def test_sample_keys_of_composite_and_keyless_tables() -> None:
    composite = SetNotNull("items", "note").build(facts(primary_key=("a", "b")))
    sql = composite.phase("backfill").upgrade[0].sql
    assert "'(' || 'a=' || a::text || ', ' || 'b=' || b::text || ')'" in sql and "ORDER BY a, b" in sql
    keyless = SetNotNull("items", "note").build(facts(primary_key=()))
    assert "'ctid=' || ctid::text" in keyless.phase("backfill").upgrade[0].sql


def test_fill_reading_other_columns() -> None:
    plan = SetNotNull("items", "note", fill="'n/a-' || name || qty::text").build(facts())
    function = sqls(plan, "expand")[1]
    assert "NEW.note := 'n/a-' || new.name || CAST(new.qty AS text);" in function
    assert plan.backfill is not None
    assert plan.backfill["set_sql"] == "note = 'n/a-' || name || CAST(qty AS text)"
    # Columns the trigger reads are touched too: a plan that renamed or dropped one would break it.
    assert plan.touches == {"public.items": ["note", "name", "qty"]}


def test_hostile_names_are_quoted() -> None:
    col = 'n"o $ecm$ te'
    f = facts(
        schema="Sch ema",
        name="It'ems",
        column=ColumnFacts(col, "text"),
        columns=("id", col, "Other Col"),
    )
    plan = SetNotNull("It'ems", col, fill="\"Other Col\" || '$ecm$'").build(f)
    function = sqls(plan, "expand")[1]
    assert '"Sch ema".ecm_set_not_null_it_ems_n_o_ecm_te_' in function
    # The body contains $ecm$ (a name and the fill do): another dollar tag is chosen.
    assert "AS $ecm1$\n" in function and function.endswith("$ecm1$")
    assert 'NEW."n""o $ecm$ te" := new."Other Col" || \'$ecm$\';' in function
    trigger = sqls(plan, "expand")[2]
    assert 'ON "Sch ema"."It\'ems"' in trigger and 'WHEN (NEW."n""o $ecm$ te" IS NULL)' in trigger
    check = SetNotNull("It'ems", col).build(f).phase("backfill").upgrade[0].sql
    assert "rows of Sch ema.It''ems hold NULL in n\"o $ecm$ te (first keys: " in check and "$ecm1$" in check


def test_dollar_quoted() -> None:
    assert dollar_quoted("x") == "$ecm$\nx\n$ecm$"
    assert dollar_quoted("$ecm$ $ecm1$") == "$ecm2$\n$ecm$ $ecm1$\n$ecm2$"


@pytest.mark.parametrize(
    ("fill", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1; DROP TABLE items", "not a single SQL expression"),
        ("1, 2", "not a single SQL expression"),
        ("1 FROM items", "not a single SQL expression"),
        ("1 AS x", "not a single SQL expression"),
        ("'a", "not a single SQL expression"),
        ("NULL", "is NULL"),
        ("NULL::text", "is NULL"),
        ("(SELECT 1)", "subquery"),
        ("EXISTS (SELECT 1)", "subquery"),
        ("$1", "parameter"),
        ("count(*)", "aggregate or window"),
        ("row_number() OVER ()", "aggregate or window"),
        ("string_agg(DISTINCT name, ',')", "aggregate or window"),
        ("items.name", "bare names"),
        ("items.*", "bare names"),
        ("note || 'x'", "itself"),
        ("nosuch", "does not exist"),
    ],
)
def test_bad_fills(fill: str, fragment: str) -> None:
    with pytest.raises(BadInput) as info:
        SetNotNull("items", "note", fill=fill).build(facts())
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_good_fills() -> None:
    for fill, update in [
        ("''", "''"),
        ("0", "0"),
        ("'50%'", "'50%'"),
        ("now()", "now()"),
        ("'{}'::jsonb", "CAST('{}' AS jsonb)"),
        ("coalesce(name, 'x') -- a comment", "COALESCE(name, 'x')"),
        ("CASE WHEN qty > 0 THEN 'some' ELSE 'none' END", "CASE WHEN qty > 0 THEN 'some' ELSE 'none' END"),
    ]:
        assert parse_fill(fill, "note", facts()).update_sql == update


def test_column_refusals() -> None:
    with pytest.raises(BadInput, match="primary key"):
        SetNotNull("items", "id").build(facts(column=ColumnFacts("id", "bigint", nullable=False)))
    with pytest.raises(BadInput, match="already NOT NULL"):
        SetNotNull("items", "name").build(facts(column=ColumnFacts("name", "text", nullable=False)))
    with pytest.raises(BadInput, match="generated column"):
        SetNotNull("items", "note").build(facts(column=ColumnFacts("note", "text", generated="s")))
    with pytest.raises(BadInput, match="partitioned"):
        SetNotNull("items", "note").build(facts(kind="p"))


def test_plan_round_trips_through_json() -> None:
    import json

    plan = SetNotNull("items", "note", fill="'x'").build(facts())
    assert json.loads(json.dumps(plan.header()))["breaks"] == [
        {"table": "public.items", "column": "note", "kind": "not-null"}
    ]
