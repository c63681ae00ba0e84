"""One exception hierarchy for ShopLens.

Every error says what was expected and what was found, and knows the HTTP status the
REST door should answer with. The CLI turns any ``ShopLensError`` into a red message and
exit code 2 instead of a stack trace.
"""

from __future__ import annotations

import re
from typing import Any


class ShopLensError(Exception):
    """Base class: a problem the user can fix, described in words.

    ``http_status`` is what the REST door answers; ``code`` is a stable machine-readable
    name for the error, sent as ``{"error": message, "code": code}``.
    """

    http_status = 400
    code = "bad_request"


class ConfigError(ShopLensError):
    """The configuration file is missing, malformed or names an unknown key."""

    code = "config"


class SourceError(ShopLensError):
    """An input source cannot be read: missing file, bad encoding, missing column."""

    http_status = 422
    code = "source"


class NotFoundError(ShopLensError):
    """A customer, snapshot or data set does not exist."""

    http_status = 404
    code = "not_found"


class StoreError(ShopLensError):
    """The store is missing, locked or holds no complete snapshot yet."""

    http_status = 409
    code = "store"


class MissingDependencyError(ShopLensError):
    """An optional dependency is needed for this feature; the message says what to install."""

    http_status = 501
    code = "missing_dependency"


class AuthError(ShopLensError):
    """No API key, an unknown one, or a revoked or expired one."""

    http_status = 401
    code = "unauthorized"


class ForbiddenError(ShopLensError):
    """The caller's role may not do this."""

    http_status = 403
    code = "forbidden"


class ConsentError(ShopLensError):
    """A consent record or a consent check that cannot be honoured as asked."""

    http_status = 400
    code = "consent"


class FilterError(ShopLensError):
    """An audience filter that cannot be parsed or names an unknown field."""

    http_status = 400
    code = "filter"


class TextInputError(ShopLensError):
    """A text analyser was given something that is not text."""

    http_status = 422
    code = "text_input"


class ModelError(ShopLensError):
    """Data unfit for a model (too few customers, too short a history) or a failed fit."""

    http_status = 422
    code = "model"


class LLMError(ShopLensError):
    """The LLM could not be reached, timed out, refused, or answered unusably."""

    http_status = 502
    code = "llm"


class IntegrityError(ShopLensError):
    """A stored file failed its integrity check (checksum recorded when it was written)."""

    http_status = 503
    code = "integrity"


class StorageError(ShopLensError):
    """The file system refused: disk full, read-only folder, permission denied."""

    http_status = 507
    code = "storage"


_ABS_PATH = re.compile(r"(?<![\w:/.])(?:[A-Za-z]:)?(?:[/\\][^\s/\\'\"`:,;()\[\]]+){2,}[/\\]?")
_PID = re.compile(r"\s*\(?\bPID \d+\)?")


def public(message: str) -> str:
    """A message fit for a client: no file paths, no process ids, valid UTF-8, bounded.

    >>> public("no published profiles in /srv/shop/shoplens.profiles: run 'shoplens build' first")
    "no published profiles in <path>: run 'shoplens build' first"
    """
    text = _PID.sub("", _ABS_PATH.sub("<path>", message))
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= 500 else text[:497] + "..."


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
