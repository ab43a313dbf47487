"""Pure PostgreSQL statement rendering: no driver imports, no connections."""
