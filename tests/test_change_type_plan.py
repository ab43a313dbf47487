"""The pure change-type planner: which shape a pair of types gets, and what is refused, without a database.

Whether the in-place list is true of the server is measured in tests/test_change_type.py.
"""

from __future__ import annotations

import pytest

from expandcontract.errors import BadInput
from expandcontract.plan import types
from expandcontract.plan.facts import CheckFact, ColumnFacts, IndexFact, TableFacts
from expandcontract.plan.ops import REGISTRY
from expandcontract.plan.ops.change_type import ChangeType


def facts(column: ColumnFacts | None = None, **overrides: object) -> TableFacts:
    base: dict[str, object] = {
        "schema": "public",
        "name": "items",
        "column": column or ColumnFacts("qty", "integer", nullable=False, default="0"),
        "columns": ("id", "qty", "code", "at"),
        "primary_key": ("id",),
        "row_estimate": 300,
    }
    base.update(overrides)
    return TableFacts(**base)  # type: ignore[arg-type]


def shape(op: ChangeType, f: TableFacts | None = None) -> list[str]:
    return [p.name for p in op.build(f or facts(op_column(op))).phases]


def op_column(op: ChangeType) -> ColumnFacts:
    old = {"qty": "integer", "code": "text", "at": "timestamp without time zone"}[op.column_name]
    return ColumnFacts(op.column_name, old)


def test_registered() -> None:
    assert REGISTRY["change-type"] is ChangeType


P = types.parse


@pytest.mark.parametrize(
    ("old", "new", "in_place", "same_name", "one_to_one"),
    [
        ("varchar(20)", "varchar(40)", True, True, True),
        ("varchar(20)", "varchar", True, True, True),
        ("character varying(20)", "text", True, True, True),
        ("varchar", "text", True, True, True),
        ("varbit(8)", "varbit(16)", True, True, True),
        ("numeric(10,2)", "numeric(12,2)", True, True, True),
        ("numeric(10,2)", "numeric", True, True, True),
        ("numeric(10,2)", "numeric(12,4)", False, True, True),  # rewrites, but every value fits
        ("timestamp", "timestamptz", True, True, True),
        ("timestamp without time zone", "timestamp with time zone", True, True, True),
        ("timestamp(3)", "timestamptz", True, True, True),
        # A precision the values must be rounded to rewrites the table (measured): not in place.
        ("timestamp", "timestamptz(3)", False, False, False),
        # An array's elements are coerced one by one: every array pair rewrites (measured).
        ("varchar(20)[]", "varchar(40)[]", False, True, True),
        ("varchar[]", "text[]", False, True, True),
        ("numeric(10,2)[]", "numeric(12,2)[]", False, True, True),
        ("timestamp[]", "timestamptz[]", False, True, True),
        ("integer", "bigint", False, True, True),
        ("smallint", "integer", False, True, True),
        ("real", "double precision", False, True, True),
        ("integer[]", "bigint[]", False, True, True),
        ("bigint", "integer", False, False, False),
        ("varchar(40)", "varchar(20)", False, False, False),
        ("text", "varchar(20)", False, False, False),
        ("text", "varchar", False, False, False),
        ("numeric(12,2)", "numeric(10,2)", False, False, False),
        ("numeric", "numeric(10,2)", False, False, False),
        ("integer", "text", False, False, True),
        ("bigint", "numeric", False, False, True),
        ("text", "integer", False, False, False),
        ("varchar(20)", "varchar(40)[]", False, False, False),
        ("myschema.mytype", "text", False, False, False),
    ],
)
def test_the_lists(old: str, new: str, in_place: bool, same_name: bool, one_to_one: bool) -> None:
    a, b = P(old), P(new)
    assert types.in_place(a, b, 150000) is in_place
    assert types.same_name(a, b) is same_name
    assert types.one_to_one(a, b) is one_to_one
    assert types.can_fail(a, b) is not same_name


def test_timestamptz_in_place_needs_postgresql_12() -> None:
    assert types.in_place(P("timestamp"), P("timestamptz"), 120000)
    assert not types.in_place(P("timestamp"), P("timestamptz"), 110000)


@pytest.mark.parametrize(
    ("column", "new", "expected"),
    [
        (ColumnFacts("code", "character varying(20)"), "text", ["contract"]),
        (ColumnFacts("qty", "integer"), "bigint", ["expand", "backfill", "contract"]),
        (ColumnFacts("at", "timestamp without time zone"), "timestamptz", ["contract"]),
    ],
)
def test_shapes(column: ColumnFacts, new: str, expected: list[str]) -> None:
    assert shape(ChangeType("items", column.name, new), facts(column)) == expected


INDEX = IndexFact(
    "items_code_idx", "CREATE INDEX items_code_idx ON public.items USING btree (code)", columns=("code",)
)


@pytest.mark.parametrize(
    ("column", "new", "overrides", "why"),
    [
        # ALTER TYPE re-checks CHECK constraints: a scan of the table under ACCESS EXCLUSIVE.
        (
            ColumnFacts("code", "character varying(20)"),
            "text",
            {"checks": (CheckFact("items_code_check", "(length((code)::text) > 0)"),)},
            "check",
        ),
        # ... and rebuilds expression and partial indexes,
        (
            ColumnFacts("code", "character varying(20)"),
            "text",
            {
                "indexes": (
                    IndexFact(
                        "items_lower_idx",
                        "CREATE INDEX items_lower_idx ON public.items USING btree (lower((code)::text))",
                        expression=True,
                    ),
                )
            },
            "expression index",
        ),
        (
            ColumnFacts("code", "character varying(20)"),
            "text",
            {
                "indexes": (
                    IndexFact(
                        "items_part_idx",
                        "CREATE INDEX items_part_idx ON public.items USING btree (id) WHERE ((code)::text <> ''::text)",
                        partial=True,
                    ),
                )
            },
            "partial index",
        ),
        # ... and every index of a timestamp column becoming timestamptz (another operator class).
        (
            ColumnFacts("at", "timestamp without time zone"),
            "timestamptz",
            {
                "indexes": (
                    IndexFact(
                        "items_at_idx",
                        "CREATE INDEX items_at_idx ON public.items USING btree (at)",
                        columns=("at",),
                    ),
                )
            },
            "index",
        ),
    ],
)
def test_in_place_pairs_that_would_scan_or_rebuild_go_through_a_shadow(
    column: ColumnFacts, new: str, overrides: dict[str, object], why: str
) -> None:
    plan = ChangeType("items", column.name, new).build(facts(column, **overrides))
    assert [p.name for p in plan.phases] == ["expand", "backfill", "contract"], why
    assert plan.spec["in_place"] is False


def test_a_plain_index_stays_in_place_for_varchar() -> None:
    plan = ChangeType("items", "code", "text").build(
        facts(ColumnFacts("code", "character varying(20)"), indexes=(INDEX,))
    )
    assert [p.name for p in plan.phases] == ["contract"]


def test_timestamp_conversions_are_utc_whatever_the_session_zone() -> None:
    """Old code's writes through the trigger, new code's through the cast back, and the backfill read
    the wall clock as UTC, as the in-place change does; a plain cast would read it in the TimeZone of
    whichever session writes the row."""
    at = ColumnFacts("at", "timestamp without time zone")
    plan = ChangeType("items", "at", "timestamptz", rename_to="at_tz").build(facts(at))
    up, down = (s.sql for s in plan.phase("expand").upgrade[1:3])
    assert "SELECT CAST(pg_catalog.timezone('UTC', v) AS timestamptz)" in up
    assert "r := CAST(pg_catalog.timezone('UTC', v) AS timestamp" in down and "RETURN r;" in down
    # Same name, through a shadow (the column has an index): the rollback converts back as UTC too.
    index = IndexFact(
        "items_at_idx", "CREATE INDEX items_at_idx ON public.items USING btree (at)", columns=("at",)
    )
    plan = ChangeType("items", "at", "timestamptz").build(facts(at, indexes=(index,)))
    assert "CAST(pg_catalog.timezone('UTC', v) AS timestamptz)" in plan.phase("expand").upgrade[1].sql
    back = [s.sql for s in plan.phase("contract").downgrade if "ALTER COLUMN at TYPE" in s.sql]
    assert back == [
        "ALTER TABLE public.items ALTER COLUMN at TYPE timestamp without time zone "
        "USING (at AT TIME ZONE 'UTC')::timestamp without time zone"
    ]


def test_same_name_outside_the_lists_is_refused_with_or_without_using() -> None:
    for using in (None, "qty::text"):
        with pytest.raises(BadInput, match="use --rename-to NEW") as info:
            ChangeType("items", "qty", "text", using=using).build(facts())
        assert "\n" not in str(info.value)


UNIQUE = IndexFact(
    "items_code_key",
    "CREATE UNIQUE INDEX items_code_key ON public.items USING btree (code)",
    unique=True,
    constraint="items_code_key",
    columns=("code",),
)


@pytest.mark.parametrize(
    ("column", "kwargs", "refused"),
    [
        (ColumnFacts("code", "text"), {"type": "integer", "rename_to": "code_num"}, True),
        (
            ColumnFacts("code", "text"),
            {"type": "integer", "rename_to": "code_num", "assume_injective": True},
            False,
        ),
        (
            ColumnFacts("code", "text"),
            {"type": "varchar(100)", "rename_to": "code2", "using": "lower(code)"},
            True,
        ),
        (ColumnFacts("code", "integer"), {"type": "text", "rename_to": "code_text"}, False),
        (ColumnFacts("code", "integer"), {"type": "bigint"}, False),
        (ColumnFacts("code", "integer"), {"type": "bigint", "using": "code::bigint"}, True),
        (
            ColumnFacts("code", "integer"),
            {"type": "bigint", "using": "code::bigint", "assume_injective": True},
            False,
        ),
    ],
)
def test_unique_columns(column: ColumnFacts, kwargs: dict[str, object], refused: bool) -> None:
    op = ChangeType("items", "code", **kwargs)  # type: ignore[arg-type]
    f = facts(column, indexes=(UNIQUE,))
    if refused:
        with pytest.raises(BadInput, match="--assume-injective"):
            op.build(f)
    else:
        op.build(f)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"dependents": (("generated column", "doubled"),)}, "generated column(s) doubled"),
        ({"dependents": (("trigger", "on_qty"),)}, "trigger(s) (UPDATE OF or WHEN) on_qty"),
        ({"dependents": (("rule", "keep_qty"),)}, "rule(s) keep_qty"),
        ({"dependent_views": ("public.v_items",)}, "view(s) public.v_items"),
        ({"column": ColumnFacts("qty", "integer", generated="s")}, "is a generated column"),
        ({"primary_key": ("qty",)}, "primary key"),
    ],
)
def test_refusals(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(BadInput) as info:
        ChangeType("items", "qty", "bigint").build(facts(**overrides))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_trigger_function_reading_the_column_refuses_only_rename_to() -> None:
    f = facts(dependents=(("trigger function", "stamp() of trigger stamp_qty"),))
    ChangeType("items", "qty", "bigint").build(f)  # the name stays: the function keeps working
    with pytest.raises(BadInput, match="trigger function"):
        ChangeType("items", "qty", "bigint", rename_to="qty2").build(f)


def test_unconvertible_values_are_told_from_conversions_to_null() -> None:
    """--using may map a value to NULL on purpose (nullif); only a conversion that raised holds the contract."""
    plan = ChangeType(
        "items", "code", "integer", rename_to="code_num", using="nullif(trim(code), '')::int"
    ).build(facts(ColumnFacts("code", "text")))
    assert plan.backfill is not None
    mismatch = plan.backfill["mismatch_sql"]
    assert "_fails(code)" in mismatch and "code IS NOT NULL AND code_num IS NULL" not in mismatch
    expand = "\n".join(s.sql for s in plan.phase("expand").upgrade)
    assert "RETURNS boolean" in expand and "RETURN true" in expand
    assert any(n.endswith("_fails") for n in plan.creates)
    dropped = "\n".join(s.sql for s in plan.phase("contract").upgrade)
    assert "DROP FUNCTION IF EXISTS public.ecm_change_type_items_code_code_num_fails(text)" in dropped
    assert plan.backfill["mismatch_label"] == "hold a value of code that does not convert to integer"
