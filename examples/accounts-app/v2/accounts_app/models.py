"""The tables version 2 maps. Alembic's env.py and the LiveReporter both read this MetaData."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Identity, MetaData, Numeric, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData()


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(Text)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # A natural-key reference, so the rename also moves a foreign key on another table.
    account_name: Mapped[str] = mapped_column(
        String(200), ForeignKey("accounts.full_name", onupdate="CASCADE"), index=True
    )
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))


metadata = Base.metadata
