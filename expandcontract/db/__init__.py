"""Everything that talks to PostgreSQL lives here; the pure rooms never import it."""
