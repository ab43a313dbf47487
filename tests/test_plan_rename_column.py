"""Conformance test of the pure rename-column planner: facts in, phases and SQL out, no connection."""

from __future__ import annotations

import subprocess
import sys

import pytest

from expandcontract.errors import BadInput
from expandcontract.plan.facts import ColumnFacts, ForeignKeyFact, IndexFact, TableFacts
from expandcontract.plan.ops.rename_column import RenameColumn, build


def facts(**overrides: object) -> TableFacts:
    base: dict[str, object] = {
        "schema": "public",
        "name": "accounts",
        "column": ColumnFacts("name", "text", nullable=False, default="'anon'::text"),
        "columns": ("id", "name", "email"),
        "primary_key": ("id",),
        "row_estimate": 1000,
        "indexes": (
            IndexFact(
                "accounts_name_key",
                "CREATE UNIQUE INDEX accounts_name_key ON public.accounts USING btree (name)",
                unique=True,
                constraint="accounts_name_key",
                columns=("name",),
            ),
        ),
        "referenced_by": (
            ForeignKeyFact(
                "orders_name_fkey", "public", "orders", ("account_name",), "public", "accounts", ("name",)
            ),
        ),
    }
    base.update(overrides)
    return TableFacts(**base)  # type: ignore[arg-type]


def test_phases_and_shape() -> None:
    plan = build(RenameColumn("accounts", "name", "full_name"), facts())
    assert plan.plan_id == "rename_accounts_name_full_name"
    assert [p.name for p in plan.phases] == ["expand", "backfill", "contract"]
    assert plan.removes == {"public.accounts": ["name"]} and plan.adds == {"public.accounts": ["full_name"]}
    assert plan.backfill is not None and plan.backfill["key"] == ("id",) and plan.backfill["key_kind"] == "pk"
    expand = plan.phase("expand")
    sql = [s.sql for s in expand.upgrade]
    assert sql[0] == "ALTER TABLE public.accounts ADD COLUMN IF NOT EXISTS full_name text"  # no default
    assert any("CREATE OR REPLACE TRIGGER" in s and "BEFORE INSERT OR UPDATE" in s for s in sql)
    assert any("CHECK (full_name IS NOT NULL) NOT VALID" in s for s in sql)
    # NEW's indexes are built by the backfill once every row is copied, not at expand.
    assert not any("CREATE UNIQUE INDEX" in s for s in sql)
    after = [ix["step"]["sql"] for ix in plan.backfill["indexes"]]
    assert any("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS accounts_full_name_key" in s for s in after)
    assert all(ix["columns"] == ["full_name"] for ix in plan.backfill["indexes"])
    shown = [s.name for s in plan.shown_steps(plan.phase("backfill"))]
    assert shown[0] == "backfill" and "create index accounts_full_name_key (after the copy)" in shown
    # A foreign key from another table to NEW would reject old code's child rows until the
    # backfill reaches their parents: it is made at the contract, not at expand.
    assert not any("REFERENCES public.accounts (full_name)" in s for s in sql)
    contract = [s.sql for s in plan.phase("contract").upgrade]
    assert any("REFERENCES public.accounts (full_name) NOT VALID" in s for s in contract)
    assert plan.phase("contract").upgrade[0].kind == "guard"
    assert contract[-1] == "ALTER TABLE public.accounts DROP COLUMN IF EXISTS name"
    assert any(
        "ADD CONSTRAINT accounts_full_name_key UNIQUE USING INDEX accounts_full_name_key" in s
        for s in contract
    )
    assert any("SET DEFAULT 'anon'::text" in s for s in contract)
    assert plan.phase("contract").downgrade and plan.phase("expand").downgrade[0].kind == "guard"


def test_every_step_is_idempotent() -> None:
    plan = build(RenameColumn("accounts", "name", "full_name"), facts())
    markers = (
        "IF NOT EXISTS",
        "IF EXISTS",
        "CREATE OR REPLACE",
        "VALIDATE CONSTRAINT",
        "SET NOT NULL",
        "DROP NOT NULL",
        "SET DEFAULT",
        "DROP DEFAULT",
        "OWNED BY",
        "COMMENT ON",
        "GRANT",
    )
    for phase in plan.phases:
        for step in (*phase.upgrade, *phase.downgrade):
            if step.kind in ("guard", "backfill"):
                continue
            assert step.skip_if or any(m in step.sql for m in markers), step


def test_names_stay_within_63_bytes() -> None:
    table, old, new = "t" * 63, "o" * 63, "n" * 63
    ix = IndexFact("i" * 63, f"CREATE INDEX {'i' * 63} ON public.{table} USING btree ({old})", columns=(old,))
    plan = build(
        RenameColumn(table, old, new),
        facts(
            name=table, column=ColumnFacts(old, "text"), columns=("id", old), indexes=(ix,), referenced_by=()
        ),
    )
    assert len(plan.plan_id) <= 63
    import re

    for phase in plan.phases:
        for step in phase.upgrade:
            for ident in re.findall(r'"((?:[^"]|"")+)"|\b([a-z_][a-z0-9_]*)\b', step.sql):
                name = ident[0] or ident[1]
                assert len(name.encode()) <= 63, (step.name, name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "p"}, "partitioned"),
        ({"is_partition": True}, "partitioned"),
        ({"primary_key": ("name",)}, "primary key"),
        ({"column": ColumnFacts("name", "integer", identity="a")}, "identity"),
        ({"column": ColumnFacts("name", "integer", generated="s")}, "generated"),
        ({"dependent_views": ("public.v",)}, "view"),
        ({"policies": ("p",)}, "policies"),
        ({"columns": ("id", "name", "full_name")}, "already exists"),
    ],
)
def test_refusals(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        build(RenameColumn("accounts", "name", "full_name"), facts(**overrides))


def test_hostile_names_are_quoted_by_the_library() -> None:
    old, new = 'select "x"; --', "Ünïcode Name"
    plan = build(
        RenameColumn("Order Items", old, new),
        facts(
            name="Order Items",
            column=ColumnFacts(old, "text"),
            columns=("id", old),
            indexes=(),
            referenced_by=(),
        ),
    )
    add = plan.phase("expand").upgrade[0].sql
    assert add == 'ALTER TABLE public."Order Items" ADD COLUMN IF NOT EXISTS "Ünïcode Name" text'
    drop = plan.phase("contract").upgrade[-1].sql
    assert drop == 'ALTER TABLE public."Order Items" DROP COLUMN IF EXISTS "select ""x""; --"'


def test_planning_imports_no_driver() -> None:
    code = (
        "import sys; from expandcontract.plan.ops.rename_column import build; import expandcontract.guard; "
        "print([m for m in ('psycopg', 'psycopg2', 'sqlalchemy.engine.create') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
