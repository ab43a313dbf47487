"""One naming convention for every object a plan creates, always within 63 bytes.

Names are fixed at expand and never renamed later: a rename takes ACCESS EXCLUSIVE
and would break code that already uses the new names.
"""

from __future__ import annotations

import hashlib
import re

from ..sql.quoting import MAX_IDENTIFIER_BYTES

PREFIX = "ecm"


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def fit(name: str, *, key: str | None = None) -> str:
    """``name`` if it fits in 63 bytes, else a prefix of it plus a stable hash suffix."""
    raw = name.encode()
    if len(raw) <= MAX_IDENTIFIER_BYTES:
        return name
    suffix = "_" + _hash(key or name)
    budget = MAX_IDENTIFIER_BYTES - len(suffix)
    cut = raw[:budget].decode("utf-8", errors="ignore")
    return cut + suffix


def slug(text: str) -> str:
    """ASCII slug for plan ids and file names: readable, no quoting needed."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s or _hash(text, 6)


def plan_id(operation: str, table: str, *parts: str) -> str:
    words = [operation, table, *parts]
    readable = "_".join(slug(w) for w in words)
    exact = "\x00".join(words)
    # Non-ASCII or punctuation-heavy names would collide after slugging; a hash keeps them apart.
    if readable != "_".join(words) and any(slug(w) != w for w in words[1:]):
        readable = f"{readable}_{_hash(exact, 6)}"
    if len(readable) > 60:
        readable = readable[:51] + "_" + _hash(exact)
    return readable


def function_name(plan: str) -> str:
    return fit(f"{PREFIX}_{plan}_sync", key=plan + ":fn")


def trigger_name(plan: str) -> str:
    return fit(f"{PREFIX}_{plan}_sync", key=plan + ":trg")


def not_null_check(plan: str) -> str:
    return fit(f"{PREFIX}_{plan}_nn", key=plan + ":nn")


def derived(original: str, old: str, new: str, plan: str) -> str:
    """Name for the copy of ``original`` (index, FK, check) made for the new column."""
    # Replace the old column name only where it stands as a word of the name (between
    # underscores or at the ends), so "names_name_idx" becomes "names_full_name_idx".
    pattern = rf"(?<![^_]){re.escape(old)}(?![^_])"
    candidate = (
        re.sub(pattern, lambda _: new, original) if re.search(pattern, original) else f"{original}_{new}"
    )
    if candidate == original:
        candidate = f"{original}_{PREFIX}"
    return fit(candidate, key=f"{plan}:{original}")
