"""The application's models, version 2: ``name`` renamed to ``full_name``, ``age`` made bigint
and indexed, ``email`` made NOT NULL, ``nickname`` added."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    full_name: Mapped[str] = mapped_column(String(100), nullable=False)
    age: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    email: Mapped[str] = mapped_column(String(200), nullable=False)
    nickname: Mapped[str | None] = mapped_column(String(50), nullable=True)


metadata = Base.metadata
#: The attribute that holds the user's name in this version (the traffic process writes it).
NAME = "full_name"
