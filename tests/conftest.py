"""Shared fixtures: a secret key for the session, a small demo shop built once, helpers
to write a shop from literal files."""

from __future__ import annotations

import base64
import os
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoplens.config import Config, load_config
from shoplens.jobs import Summary, run_demo
from shoplens.store import Store

os.environ.setdefault("SHOPLENS_SECRET_KEY", base64.urlsafe_b64encode(b"k" * 32).decode())
# keys created by tests that unset the variable go to a folder of this run, not the user's config
os.environ.setdefault("SHOPLENS_KEY_DIR", tempfile.mkdtemp(prefix="shoplens-keys-"))


# a shop of customers and orders: the config most ingest tests start from
CONFIG_CO = """
[[sources]]
table = "customers"
path = "customers.csv"
[[sources]]
table = "orders"
path = "orders.csv"
"""


def write_shop(folder: Path, files: dict[str, str | bytes], config: str) -> Config:
    """Write source files and a shoplens.toml into ``folder`` and load the config."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else textwrap.dedent(content).lstrip("\n").encode("utf-8")
        (folder / name).write_bytes(data)
    (folder / "shoplens.toml").write_text(textwrap.dedent(config), encoding="utf-8")
    return load_config(folder / "shoplens.toml")


@pytest.fixture
def store_for() -> Iterator[callable]:  # type: ignore[valid-type]
    opened: list[Store] = []

    def _open(cfg: Config) -> Store:
        st = Store.for_config(cfg)
        opened.append(st)
        return st

    yield _open
    for st in opened:
        st.close()


@pytest.fixture(scope="session")
def demo_shop(tmp_path_factory: pytest.TempPathFactory) -> Summary:
    """A 300-customer demo shop, generated, ingested and built once per test run."""
    return run_demo(tmp_path_factory.mktemp("demo") / "shop", customers=300, seed=7)
