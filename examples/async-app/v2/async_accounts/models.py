"""The tables version 2 maps. Alembic's env.py and the LiveReporter both read this MetaData."""

from __future__ import annotations

from sqlalchemy import BigInteger, Identity, MetaData, String, Text
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData()


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200), index=True)
    email: Mapped[str | None] = mapped_column(Text)


accounts = Account.__table__
metadata = Base.metadata
