"""``ecm backfill`` and ``ecm verify`` (being built: backfill-engine issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
