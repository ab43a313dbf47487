"""``ecm instances``, ``ecm check-app`` and ``ecm guard check`` (being built: live-guard issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
