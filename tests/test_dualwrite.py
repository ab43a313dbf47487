"""dual_write / coalesce_new / dual_read with real ORM sessions, with and without the expand's trigger."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Integer, Text, cast, create_engine, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from expandcontract import DualWrite, coalesce_new, dual_read, dual_write
from expandcontract.sql.trigger import function_sql, trigger_sql
from expandcontract.urls import normalize


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    full_name: Mapped[str | None] = mapped_column(Text)
    display = dual_read("name", "full_name")


class Person(Base):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    full_name: Mapped[str | None] = mapped_column(Text)
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}  # noqa: RUF012


class Staff(Person):
    """Single-table subclass: the listeners propagate to it."""

    __mapper_args__ = {"polymorphic_identity": "staff"}  # noqa: RUF012


class Score(Base):
    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(primary_key=True)
    points_text: Mapped[str | None] = mapped_column(Text)
    points: Mapped[int | None] = mapped_column(Integer)


@pytest.fixture
def engine(database_url: str, db: psycopg.Connection) -> Iterator[Engine]:
    db.execute("CREATE TABLE users (id int PRIMARY KEY, name text, full_name text)")
    db.execute("CREATE TABLE scores (id int PRIMARY KEY, points_text text, points int)")
    eng = create_engine(normalize(database_url))
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def helper() -> Iterator[DualWrite]:
    h = dual_write(User, old="name", new="full_name")
    try:
        yield h
    finally:
        h.remove()


def add_trigger(db: psycopg.Connection) -> None:
    db.execute(function_sql("public", "users_dual_write", "name", "full_name"))
    db.execute(trigger_sql("public", "users", "users_dual_write", "users_dual_write"))


def stored(db: psycopg.Connection) -> dict[int, tuple[object, object]]:
    return {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, name, full_name FROM users").fetchall()}


def exercise(engine: Engine, db: psycopg.Connection) -> None:
    """Inserts and updates through the ORM; both sides must agree in Python and in the table."""
    with Session(engine) as session:
        session.add_all(
            [
                User(id=1, name="Ada Lovelace"),  # only OLD (v1-style code)
                User(id=2, full_name="Grace Hopper"),  # only NEW (v3-style code)
                User(id=3, name="stale", full_name="Edsger Dijkstra"),  # both disagree: NEW wins
                User(id=4),  # neither
            ]
        )
        session.commit()
        users = {u.id: u for u in session.scalars(select(User))}
        assert {i: (u.name, u.full_name) for i, u in users.items()} == {
            1: ("Ada Lovelace", "Ada Lovelace"),
            2: ("Grace Hopper", "Grace Hopper"),
            3: ("Edsger Dijkstra", "Edsger Dijkstra"),
            4: (None, None),
        }
        users[1].name = "Ada King"  # only OLD changed
        users[2].full_name = "Rear Admiral Hopper"  # only NEW changed
        users[3].name, users[3].full_name = "ignored", "E. W. Dijkstra"  # both: NEW wins
        users[4].full_name = "Barbara Liskov"
        session.flush()
        # Consistent in memory right after the flush, before anything is re-read.
        assert all(u.name == u.full_name for u in users.values())
        session.commit()
    assert stored(db) == {
        1: ("Ada King", "Ada King"),
        2: ("Rear Admiral Hopper", "Rear Admiral Hopper"),
        3: ("E. W. Dijkstra", "E. W. Dijkstra"),
        4: ("Barbara Liskov", "Barbara Liskov"),
    }


def test_dual_write_keeps_both_attributes_equal(
    engine: Engine, db: psycopg.Connection, helper: DualWrite
) -> None:
    exercise(engine, db)


def test_dual_write_with_the_trigger_present(
    engine: Engine, db: psycopg.Connection, helper: DualWrite
) -> None:
    add_trigger(db)
    exercise(engine, db)
    # Bulk UPDATEs bypass the ORM events; the trigger covers them.
    with Session(engine) as session:
        session.execute(update(User).where(User.id == 1).values(name="Augusta Ada"))
        session.commit()
    assert stored(db)[1] == ("Augusta Ada", "Augusta Ada")


def test_without_the_helper_only_the_trigger_mirrors(engine: Engine, db: psycopg.Connection) -> None:
    add_trigger(db)
    with Session(engine) as session:
        session.add(User(id=1, name="Ada"))
        session.commit()
        user = session.get(User, 1)
        assert user is not None and user.full_name == "Ada"  # the trigger did it, read back after commit


def test_subclass_is_covered(engine: Engine, db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE people (id int PRIMARY KEY, kind text, name text, full_name text)")
    h = dual_write(Person, old="name", new="full_name")
    try:
        with Session(engine) as session:
            session.add_all([Staff(id=1, name="Ada"), Person(id=2, full_name="Grace")])
            session.commit()
        rows = db.execute("SELECT id, kind, name, full_name FROM people ORDER BY id").fetchall()
        assert rows == [(1, "staff", "Ada", "Ada"), (2, "person", "Grace", "Grace")]
    finally:
        h.remove()


def test_converters(engine: Engine, db: psycopg.Connection) -> None:
    h = dual_write(Score, old="points_text", new="points", to_new=int, to_old=str)
    try:
        with Session(engine) as session:
            session.add_all([Score(id=1, points_text="42"), Score(id=2, points=7)])
            session.commit()
            one = session.get(Score, 1)
            assert one is not None and one.points == 42
            one.points = 43
            session.commit()
        rows = db.execute("SELECT id, points_text, points FROM scores ORDER BY id").fetchall()
        assert rows == [(1, "43", 43), (2, "7", 7)]
        # Reading NEW with an SQL-side conversion of OLD for rows not yet backfilled.
        db.execute("INSERT INTO scores VALUES (3, '99', NULL)")
        expr = coalesce_new(Score, "points_text", "points", to_new_sql=lambda c: cast(c, Integer))
        with Session(engine) as session:
            assert session.scalars(select(expr).order_by(Score.id)).all() == [43, 7, 99]
    finally:
        h.remove()


def test_read_helpers_fall_back_to_old_while_backfill_runs(engine: Engine, db: psycopg.Connection) -> None:
    # Rows written by v1 code before the expand's backfill reached them: NEW is still NULL.
    db.execute("INSERT INTO users VALUES (1, 'Ada', NULL), (2, 'old', 'Grace')")
    with Session(engine) as session:
        expr = coalesce_new(User, old="name", new="full_name")
        assert session.scalars(select(expr).order_by(User.id)).all() == ["Ada", "Grace"]
        assert session.scalars(select(User.id).where(expr == "Ada")).all() == [1]
        # The hybrid: on instances and in queries alike.
        assert [u.display for u in session.scalars(select(User).order_by(User.id))] == ["Ada", "Grace"]
        assert session.scalars(select(User.id).where(User.display == "Grace")).all() == [2]


def test_remove_detaches_the_listeners(engine: Engine, db: psycopg.Connection) -> None:
    dual_write(User, old="name", new="full_name").remove()
    with Session(engine) as session:
        session.add(User(id=1, name="Ada"))
        session.commit()
    assert stored(db) == {1: ("Ada", None)}


def test_unknown_attribute_or_unmapped_class_is_rejected() -> None:
    with pytest.raises(ValueError, match="no attribute 'nickname'"):
        dual_write(User, old="name", new="nickname")
    with pytest.raises(TypeError, match="not a mapped"):
        dual_write(dict, old="a", new="b")


def test_dual_write_through_an_async_session(
    engine: Engine, db: psycopg.Connection, database_url: str, helper: DualWrite
) -> None:
    """Mapper events fire in AsyncSession's flush too (it runs the sync unit of work on asyncpg)."""
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

    async def app() -> dict[int, tuple[object, object]]:
        aengine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
        sessions = async_sessionmaker(aengine, expire_on_commit=False)
        try:
            async with sessions() as session:
                session.add_all(
                    [
                        User(id=1, name="Ada Lovelace"),
                        User(id=2, full_name="Grace Hopper"),
                        User(id=3, name="stale", full_name="Edsger Dijkstra"),
                    ]
                )
                await session.commit()
                users = {u.id: u for u in (await session.scalars(select(User))).all()}
                users[1].name = "Ada King"
                users[2].full_name = "Rear Admiral Hopper"
                users[3].name, users[3].full_name = "ignored", "E. W. Dijkstra"
                await session.flush()
                in_memory = {i: (u.name, u.full_name) for i, u in users.items()}
                await session.commit()
            async with AsyncSession(aengine) as session:  # a plain AsyncSession, no sessionmaker
                session.add(User(id=4, full_name="Barbara Liskov"))
                await session.commit()
            # Bulk statements bypass the events here as in sync code: the trigger's job.
            async with sessions() as session:
                await session.execute(update(User).where(User.id == 4).values(full_name="B. Liskov"))
                await session.commit()
            return in_memory
        finally:
            await aengine.dispose()

    in_memory = asyncio.run(app())
    assert all(name == full_name for name, full_name in in_memory.values()), in_memory
    assert stored(db) == {
        1: ("Ada King", "Ada King"),
        2: ("Rear Admiral Hopper", "Rear Admiral Hopper"),
        3: ("E. W. Dijkstra", "E. W. Dijkstra"),
        4: ("Barbara Liskov", "B. Liskov"),
    }
