"""Database URL handling: psycopg 3 for every postgres URL, and the `embedded` pseudo-URL.

Users paste URLs from Heroku-style environments (``postgres://``) and from libpq
(``postgresql://``); SQLAlchemy would pick psycopg2 for both, which we do not ship.
"""

from __future__ import annotations

from .errors import BadInput

_PREFIXES = ("postgresql://", "postgres://")
DRIVER = "postgresql+psycopg://"


def is_embedded(url: str) -> bool:
    return url == "embedded" or url.startswith("embedded:")


def normalize(url: str) -> str:
    """Return a SQLAlchemy URL that uses psycopg 3; resolve `embedded` by starting the server."""
    url = url.strip()
    if not url:
        raise BadInput("empty database URL: pass --database-url or set ECM_DATABASE_URL")
    if is_embedded(url):
        from .embedded import embedded_url

        directory = url.partition(":")[2] or None
        url = embedded_url(directory)
    for prefix in _PREFIXES:
        if url.startswith(prefix):
            return DRIVER + url[len(prefix) :]
    if url.startswith("postgresql+"):
        return url
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise BadInput(f"unsupported database URL scheme {scheme!r}: expandcontract needs a postgresql:// URL")


def libpq(url: str) -> str:
    """The same URL in the form libpq tools (psql) and psycopg.connect() accept."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def redact(url: str) -> str:
    """URL safe to print: password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
