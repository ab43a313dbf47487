"""async-app, version 1: maps ``accounts.name`` (the column before the rename)."""

VERSION = "1"
