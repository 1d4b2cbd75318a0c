"""The installed atelier's version (pyproject.toml's, through the package metadata), which
`atelier --version` prints and every run records in its status.json."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def atelier_version() -> str:
    """'0.1.0', or '0+unknown' when atelier runs from a source tree that was never installed."""
    try:
        return version("atelier")
    except PackageNotFoundError:
        return "0+unknown"
