"""Dual-write helpers for SQLAlchemy models: keep OLD and NEW in step from the application.

The expand's trigger already keeps both columns in step for every writer. These helpers
are for what a trigger does poorly: a transformation easier in Python (``to_new`` /
``to_old``), or a deployment that wants the mirroring visible in application code.

Using them means the model maps both OLD and NEW, so an instance running this code
blocks the contract, correctly: the flow is three deploys (v1 maps OLD; v2 maps both
through these helpers; v3 maps NEW only; then contract) instead of the trigger-only two
(v1 OLD; v2 NEW only; then contract). See docs/live.md.

Only the ORM unit of work is covered: ``session.execute(update(...))``, bulk inserts and
raw SQL bypass mapper events, which is what the trigger is for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, func, inspect
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.elements import ColumnElement

Converter = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


def _convert(fn: Converter, value: Any) -> Any:
    # NULL stays NULL on both sides, so converters never have to handle None.
    return None if value is None else fn(value)


def _check_attributes(model: type[Any], *names: str) -> None:
    mapper = inspect(model, raiseerr=False)
    if not isinstance(mapper, Mapper):
        raise TypeError(f"{model!r} is not a mapped SQLAlchemy class")
    for name in names:
        if name not in mapper.attrs:
            raise ValueError(f"{mapper.class_.__name__} maps no attribute {name!r}")


@dataclass
class DualWrite:
    """The listeners :func:`dual_write` installed; :meth:`remove` takes them off again."""

    model: type[Any]
    old: str
    new: str
    to_new: Converter
    to_old: Converter
    _listeners: list[tuple[str, Callable[..., None]]] = field(default_factory=list, repr=False)

    def before_insert(self, mapper: Mapper[Any], connection: Any, target: Any) -> None:
        old_value = getattr(target, self.old)
        new_value = getattr(target, self.new)
        if new_value is None and old_value is not None:
            setattr(target, self.new, _convert(self.to_new, old_value))
        elif new_value is not None:
            mirrored = _convert(self.to_old, new_value)
            if old_value != mirrored:  # only NEW given, or both and they disagree: NEW wins
                setattr(target, self.old, mirrored)

    def before_update(self, mapper: Mapper[Any], connection: Any, target: Any) -> None:
        state = inspect(target)
        old_changed = state.attrs[self.old].history.has_changes()
        new_changed = state.attrs[self.new].history.has_changes()
        if new_changed:  # only NEW, or both (NEW wins)
            setattr(target, self.old, _convert(self.to_old, getattr(target, self.new)))
        elif old_changed:
            setattr(target, self.new, _convert(self.to_new, getattr(target, self.old)))

    def remove(self) -> None:
        for name, fn in self._listeners:
            event.remove(self.model, name, fn)
        self._listeners.clear()


def dual_write(
    model: type[Any],
    old: str,
    new: str,
    *,
    to_new: Converter | None = None,
    to_old: Converter | None = None,
) -> DualWrite:
    """Make every ORM flush of ``model`` set ``old`` and ``new`` consistently.

    Attribute names, not column names. On INSERT the side left unset (None) is filled
    from the other; on UPDATE the side that changed is copied to the other; when both
    are given and disagree, NEW wins — the same truth table as the expand's trigger, so
    the two never fight. ``to_new``/``to_old`` convert non-null values (default: copy).
    Subclasses are covered (listeners propagate).
    """
    _check_attributes(model, old, new)
    helper = DualWrite(model, old, new, to_new or _identity, to_old or _identity)
    for name, fn in (("before_insert", helper.before_insert), ("before_update", helper.before_update)):
        event.listen(model, name, fn, propagate=True)
        helper._listeners.append((name, fn))
    return helper


def coalesce_new(
    model: type[Any],
    old: str,
    new: str,
    *,
    to_new_sql: Callable[[Any], ColumnElement[Any]] | None = None,
) -> ColumnElement[Any]:
    """``COALESCE(new, old)`` for queries: read NEW, falling back to OLD while a backfill runs.

    ``to_new_sql`` turns the OLD column into NEW's type in SQL (e.g. ``lambda c: cast(c, Integer)``)
    when a Python converter was used for writes.
    """
    _check_attributes(model, old, new)
    old_column = getattr(model, old)
    fallback = to_new_sql(old_column) if to_new_sql is not None else old_column
    return func.coalesce(getattr(model, new), fallback)


def dual_read(
    old: str,
    new: str,
    *,
    to_new: Converter | None = None,
    to_new_sql: Callable[[Any], ColumnElement[Any]] | None = None,
) -> hybrid_property[Any]:
    """A hybrid property reading NEW, falling back to OLD, on instances and in queries.

    Declare it in the model body (``display_name = dual_read("name", "full_name")``);
    on an instance it converts OLD with ``to_new``, in SQL it is :func:`coalesce_new`.
    """
    convert = to_new or _identity

    def getter(self: Any) -> Any:
        value = getattr(self, new)
        return value if value is not None else _convert(convert, getattr(self, old))

    def expression(cls: Any) -> ColumnElement[Any]:
        old_column = getattr(cls, old)
        fallback = to_new_sql(old_column) if to_new_sql is not None else old_column
        return func.coalesce(getattr(cls, new), fallback)

    prop: hybrid_property[Any] = hybrid_property(getter)
    return prop.expression(expression)
