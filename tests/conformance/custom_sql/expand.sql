-- A new column for new code, and its index built without blocking writes.
ALTER TABLE items ADD COLUMN IF NOT EXISTS label text;
CREATE INDEX CONCURRENTLY IF NOT EXISTS items_label_idx ON items (label);
