"""Exception hierarchy; every error the CLI can show maps to one exit code.

The CLI prints ``str(error)`` as a single line, so messages say what is wrong and
what to do about it, without needing the traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3


class EcmError(Exception):
    """Base class: an error with a user-facing one-line message and an exit code."""

    exit_code: int = EXIT_FAILURE


class OperationalError(EcmError):
    """The database or the environment failed us (unreachable server, DDL error)."""

    exit_code = EXIT_FAILURE


class BadInput(EcmError):
    """The user asked for something impossible or malformed; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class Refused(EcmError):
    """A guard refused to proceed because it would break live code or lose data."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reasons: list[str] = list(reasons or [])

    def __str__(self) -> str:
        # Reasons on their own lines: when a contract revision is run by plain `alembic`,
        # this text is all the user sees, so it must carry the reasons too.
        return "\n".join([self.message, *(f"  - {r}" for r in self.reasons)])


def first_line(exc: BaseException) -> str:
    """One line for a log field or a refusal: the driver's message (not SQLAlchemy's wrapper with
    the statement and parameters), else the exception's type."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__
