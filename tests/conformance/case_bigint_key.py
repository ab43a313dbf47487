"""bigint-key's conformance case: ``items.id`` (serial) and ``children.item_id`` become bigint.

Old code maps the key and the referencing column as Integer (``Side.key_type``), new code as
BigInteger; both insert parent rows (taking the sequence) and child rows through the foreign
key in every phase. The contract swaps ``children.item_id`` first, then ``items.id``; each swap
waits until the live instances that map its table paused their prepared statements.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cases import Case, Side

SETUP = """
CREATE TABLE items (
    id serial PRIMARY KEY,
    name text NOT NULL,
    qty integer NOT NULL DEFAULT 0
);
CREATE TABLE children (id bigserial PRIMARY KEY, item_id integer REFERENCES items (id));
CREATE INDEX children_item_id_idx ON children (item_id);
INSERT INTO items (name, qty) SELECT 'seed-' || g, g FROM generate_series(1, {rows}) g;
INSERT INTO children (item_id) SELECT g FROM generate_series(1, {rows}, 7) g;
"""


@dataclass(frozen=True)
class KeySide(Side):
    key_type: str = "BigInteger"


CASE = Case(
    operation="bigint-key",
    setup_sql=SETUP,
    plan=("bigint-key", "items"),
    old=KeySide(
        columns={"name": "Text", "qty": "Integer"},
        write="qty",
        value="int",
        insert={"name": "v1"},
        child={"table": "children", "column": "item_id", "type": "Integer", "ref": "id"},
        key_type="Integer",
    ),
    new=KeySide(
        columns={"name": "Text", "qty": "Integer"},
        write="qty",
        value="int",
        insert={"name": "v2"},
        child={"table": "children", "column": "item_id", "type": "BigInteger", "ref": "id"},
        key_type="BigInteger",
    ),
    tables=("items", "children"),
    final_column="qty",
    final_checks=(
        (
            "SELECT count(*) FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped AND "
            "((attrelid = 'items'::regclass AND attname = 'id') OR (attrelid = 'children'::regclass "
            "AND attname = 'item_id')) AND format_type(atttypid, atttypmod) <> 'bigint'",
            "items.id and children.item_id are bigint",
        ),
        (
            "SELECT count(*) FROM pg_sequence WHERE seqrelid = pg_get_serial_sequence('items', 'id')::regclass "
            "AND seqtypid <> 'bigint'::regtype",
            "the sequence is bigint",
        ),
        (
            "SELECT count(*) FROM children c LEFT JOIN items i ON i.id = c.item_id "
            "WHERE c.item_id IS NOT NULL AND i.id IS NULL",
            "every child row references an item",
        ),
    ),
    bad_input=(
        (("bigint-key", "items", "qty"), "is not the primary key"),
        (("bigint-key", "children"), "already bigint"),
        (("bigint-key", "nosuch"), "does not exist"),
    ),
)
