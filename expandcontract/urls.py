"""Database URL handling: ecm's own connections always use psycopg 3, whatever the project's driver.

Projects name their driver in the URL (``postgresql+psycopg2://``, ``postgresql+asyncpg://``)
or not at all (``postgresql://``, Heroku's ``postgres://``, a libpq URL with several
``host:port`` pairs). ecm derives one psycopg 3 URL from any of them: user, password,
host(s), port and database carried over, and of the query only what libpq itself
understands (asked of libpq, not listed here). A parameter only another driver knows
is dropped with a log line: passing asyncpg's ``prepared_statement_cache_size`` to
libpq would fail the connection, and guessing its meaning would be worse.

The other direction, :func:`for_driver`, turns a URL given to ecm into one for the
project's own driver, because the project's ``env.py`` runs the revisions with it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .errors import BadInput
from .log import get_logger

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DRIVER = "postgresql+psycopg://"
PSYCOPG = "postgresql+psycopg"
#: asyncpg's ``ssl`` accepts libpq's sslmode words; anything else (a file, an SSLContext) is not portable.
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
_TRUE = {"true", "1", "yes", "on"}


log = get_logger("expandcontract.urls")


def is_embedded(url: str) -> bool:
    return url == "embedded" or url.startswith("embedded:")


@functools.cache
def libpq_keywords() -> frozenset[str]:
    """Connection keywords the installed libpq understands (``host``, ``sslmode``, ``options``, …)."""
    import psycopg

    return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else url


def parse(url: str) -> URL:
    """Any PostgreSQL URL as a SQLAlchemy URL (driver as given); BadInput for anything else.

    libpq's multi-host form (``postgresql://h1:5432,h2:5433/db``) is parsed by libpq and
    becomes SQLAlchemy's ``?host=h1:5432&host=h2:5433``.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = url.strip()
    if not url:
        raise BadInput("empty database URL: pass --database-url or set ECM_DATABASE_URL")
    scheme = _scheme(url)
    base = scheme.split("+", 1)[0]
    if base not in ("postgresql", "postgres"):
        raise BadInput(
            f"unsupported database URL scheme {scheme!r}: expandcontract needs a postgresql:// URL"
        )
    if base == "postgres":  # Heroku-style; SQLAlchemy 1.4+ no longer accepts it
        url = "postgresql" + url[len("postgres") :]
    try:
        return make_url(url)
    except (ValueError, ArgumentError):
        pass
    return _parse_libpq(url)


def _parse_libpq(url: str) -> URL:
    import psycopg
    from sqlalchemy.engine import URL

    scheme, _, rest = url.partition("://")
    try:
        params = psycopg.conninfo.conninfo_to_dict("postgresql://" + rest)
    except psycopg.ProgrammingError as exc:
        raise BadInput(f"malformed database URL: {str(exc).splitlines()[0]}") from exc
    values = {k: str(v) for k, v in params.items() if v is not None}
    hosts = values.pop("host", "").split(",") if values.get("host") else []
    ports = values.pop("port", "").split(",") if values.get("port") else []
    if len(ports) == 1 and len(hosts) > 1:
        ports = ports * len(hosts)
    query: dict[str, str | list[str]] = {
        k: v for k, v in values.items() if k not in ("user", "password", "dbname")
    }
    if len(hosts) > 1:
        query["host"] = [
            f"{h}:{p}" if p else h for h, p in zip(hosts, ports or [""] * len(hosts), strict=True)
        ]
        host, port = None, None
    else:
        host = hosts[0] if hosts else None
        port = int(ports[0]) if ports and ports[0] else None
    return URL.create(
        scheme if "+" in scheme else "postgresql",
        username=values.get("user"),
        password=values.get("password"),
        host=host,
        port=port,
        database=values.get("dbname"),
        query=query,
    )


def driver_of(url: URL) -> str:
    """The URL's DBAPI: ``psycopg2`` for a bare ``postgresql://`` (SQLAlchemy's default)."""
    return url.get_driver_name() if "+" in url.drivername else "psycopg2"


def to_psycopg(url: str | URL) -> URL:
    """The psycopg 3 URL for the same database; ``embedded`` starts the embedded server."""
    from sqlalchemy.engine import URL as URLType

    if isinstance(url, URLType):
        parsed = url
    else:
        text = url.strip()
        if is_embedded(text):
            from .embedded import embedded_url

            text = embedded_url(text.partition(":")[2] or None)
        parsed = parse(text)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise BadInput(
            f"unsupported database URL scheme {parsed.drivername!r}: expandcontract needs PostgreSQL"
        )
    driver = parsed.get_driver_name() if "+" in parsed.drivername else "libpq"
    keywords = libpq_keywords()
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parsed.query.items():
        if key == "ssl" and key not in keywords:
            mapped = _sslmode(value)
            if mapped is not None and "sslmode" not in parsed.query:
                query["sslmode"] = mapped
                _dropped(key, driver, f"used as sslmode={mapped}")
                continue
        if key in keywords:
            query[key] = value
        else:
            _dropped(key, driver, "libpq (psycopg 3) does not know it")
    return parsed.set(drivername=PSYCOPG, query=query)


def _sslmode(value: str | tuple[str, ...]) -> str | None:
    word = (value[-1] if isinstance(value, tuple) else value).lower()
    if word in _SSLMODES:
        return word
    return "require" if word in _TRUE else None


def _dropped(key: str, driver: str, why: str) -> None:
    log.info("url_parameter_dropped", parameter=key, driver=driver, detail=why)


def normalize(url: str) -> str:
    """The psycopg 3 URL for any PostgreSQL URL (as a string, password included)."""
    return to_psycopg(url).render_as_string(hide_password=False)


def for_driver(url: str, driver_url: str | None) -> str:
    """``url`` rewritten for the driver that ``driver_url`` names (the project's own).

    A URL that names its driver is used as given. A bare ``postgresql://`` takes the
    project's driver when its configured URL names one, else psycopg 3 (SQLAlchemy's
    default, psycopg2, may not be installed). Query parameters the target driver does not
    share with libpq are translated (``sslmode`` → asyncpg's ``ssl``) or dropped with a log line.
    """
    text = url.strip()
    if is_embedded(text) or "+" in _scheme(text):
        return normalize(text) if is_embedded(text) else text
    target = PSYCOPG
    if driver_url and "+" in _scheme(driver_url):
        try:
            configured = parse(driver_url)
            target = configured.drivername
        except BadInput:
            pass
    psy = to_psycopg(text)
    if target == PSYCOPG:
        return psy.render_as_string(hide_password=False)
    query = dict(psy.query)
    if target.endswith("+asyncpg"):
        translated: dict[str, str | tuple[str, ...]] = {}
        for key, value in query.items():
            if key == "sslmode":
                translated["ssl"] = value
            elif key == "host":
                translated[key] = value
            else:
                _dropped(key, "asyncpg", "asyncpg does not take libpq parameters in the URL")
        query = translated
    return psy.set(drivername=target, query=query).render_as_string(hide_password=False)


def libpq(url: str) -> str:
    """The same URL in the form libpq tools (psql) and psycopg.connect() accept."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql+asyncpg://", "postgres://"):
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


def same_target(a: URL, b: URL) -> bool:
    """Whether two URLs name the same user, database and host(s) (drivers and options aside)."""

    def key(u: URL) -> tuple[object, ...]:
        hosts = u.query.get("host")
        return (u.username, u.database, u.host or "", u.port or 5432, hosts)

    return key(to_psycopg(a)) == key(to_psycopg(b))
