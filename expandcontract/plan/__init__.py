"""Pure planning: facts about a table in, phases of SQL steps out. No driver, no connection."""
