"""The query a ``precheck`` step runs: offending rows counted, a few keys shown."""

from __future__ import annotations

#: Sample keys a refused precheck shows.
SAMPLES = 5


def violations(from_where: str, sample_sql: str, *, limit: int = SAMPLES) -> str:
    """``SELECT count(*) OVER (), <sample> FROM … WHERE …  LIMIT n``.

    ``from_where`` is the rest of the query after SELECT's list (``FROM t WHERE …`` or
    ``FROM t GROUP BY k HAVING count(*) > 1``); ``sample_sql`` renders one offending row's
    key as text. The window count is taken before LIMIT, so it counts every offending row.
    """
    return f"SELECT count(*) OVER () AS total, ({sample_sql})::text AS sample {from_where} LIMIT {int(limit)}"
