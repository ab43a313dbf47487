"""Several statements sent as one: a DO block that EXECUTEs each in order.

A step whose SQL holds several commands joined by ``;`` runs as one transaction on psycopg
(simple query protocol), but SQLAlchemy's asyncpg adapter prepares every statement, and a
prepared statement holds one command: such a step fails on an asyncpg project. A DO block is
one command on every driver and still one transaction. EXECUTE (rather than the statements
written into the block) keeps PL/pgSQL from reading names in them as its own variables.
"""

from __future__ import annotations

from collections.abc import Sequence

from .quoting import literal


def dollar_tag(body: str) -> str:
    """A dollar-quote tag the body does not contain."""
    tag, n = "$ecm$", 0
    while tag in body:
        n += 1
        tag = f"$ecm{n}$"
    return tag


def one_transaction(statements: Sequence[str]) -> str:
    """``statements`` as one command (itself when there is only one)."""
    cleaned = [s.strip().rstrip(";").strip() for s in statements if s.strip().rstrip(";").strip()]
    if len(cleaned) == 1:
        return cleaned[0]
    body = "BEGIN\n" + "\n".join(f"    EXECUTE {literal(s)};" for s in cleaned) + "\nEND"
    tag = dollar_tag(body)
    return f"DO {tag}\n{body}\n{tag}"
