"""One exception hierarchy for ShopLens.

Every error says what was expected and what was found, and knows the HTTP status the
REST door should answer with. The CLI turns any ``ShopLensError`` into a red message and
exit code 2 instead of a stack trace.
"""

from __future__ import annotations

from typing import Any


class ShopLensError(Exception):
    """Base class: a problem the user can fix, described in words."""

    http_status = 400


class ConfigError(ShopLensError):
    """The configuration file is missing, malformed or names an unknown key."""


class SourceError(ShopLensError):
    """An input source cannot be read: missing file, bad encoding, missing column."""

    http_status = 422


class NotFoundError(ShopLensError):
    """A customer, snapshot or data set does not exist."""

    http_status = 404


class StoreError(ShopLensError):
    """The store is missing, locked or holds no complete snapshot yet."""

    http_status = 409


class MissingDependencyError(ShopLensError):
    """An optional dependency is needed for this feature; the message says what to install."""

    http_status = 501


def require(module: str, extra: str) -> Any:
    """Import an optional module or raise an error that says how to install it.

    >>> require("json", "core")  # doctest: +ELLIPSIS
    <module 'json' ...>
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this feature needs the optional package '{module}': "
            f"install it with  pip install 'shoplens[{extra}]'"
        ) from exc
