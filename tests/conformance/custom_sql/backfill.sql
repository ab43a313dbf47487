-- Rows that existed before the expand get a label; rows new code writes keep theirs.
UPDATE items SET label = 'legacy-' || id WHERE label IS NULL AND origin = 'seed';
