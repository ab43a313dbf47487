"""async-app, version 2: maps ``accounts.full_name`` (the column after the rename)."""

VERSION = "2"
