"""Single source of the version, read from installed metadata so it never drifts from pyproject."""

from __future__ import annotations


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    try:
        return _v("expandcontract")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"
