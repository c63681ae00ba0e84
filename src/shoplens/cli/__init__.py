"""The ``shoplens`` command line: a thin door over the library.

Each command calls one library function; any ``ShopLensError`` becomes a one-line red
message and exit code 2, never a stack trace. One module per command group, all
registering on the app in ``_common``: ``shop`` (ingest, build, profiles, the demo), ``risk``
(the review queue),
``text`` (analyse and evaluate texts), ``tools`` (evaluation, segments, keys, serving,
audiences, erasure, the report).
"""

from shoplens.cli import insight, recommend, risk, shop, text, tools  # noqa: F401  (they register their commands)
from shoplens.cli._common import app, console, err_console, main

__all__ = ["app", "console", "err_console", "main"]
