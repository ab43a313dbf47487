"""``ecm demo``: a scripted rename under live traffic, on a throwaway database.

The demo exists so a newcomer can watch the guarantees rather than read about them:
real application processes keep serving while the schema changes, the contract is
refused while old code runs, and a SIGTERM is what lets it through. Nothing here is
imported by ``expandcontract.cli`` at load time.
"""

from __future__ import annotations

#: The application name the simulated instances register under (and the refusal names).
APP_NAME = "demo-app"
#: The table the demo creates and renames a column of.
TABLE = "accounts"
OLD_COLUMN = "name"
NEW_COLUMN = "full_name"
