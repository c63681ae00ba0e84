"""Real API servers for tests: ``shoplens serve`` (or ``create_app`` under uvicorn) on a
free loopback port, waited for, and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from shoplens.config import load_config
from shoplens.serving.access import Access


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def role_keys(folder: Path, prefix: str = "test", roles: tuple[str, ...] = ("admin", "analyst", "service")) -> dict[str, str]:
    """A fresh API key per role for the shop in ``folder``."""
    access = Access(load_config(folder / "shoplens.toml").store_path)
    try:
        return {role: access.create_key(f"{prefix}-{role}", role) for role in roles}
    finally:
        access.close()


def wait_up(base: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    for _ in range(300):
        try:
            if httpx.get(base + "/health", timeout=1).status_code in (200, 503):
                return
        except httpx.TransportError:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.1)
    pytest.fail("the API server did not start")


@contextmanager
def serving(folder: Path, cli: bool = False, output: IO[bytes] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The API over the shop in ``folder``: ``shoplens serve`` when ``cli``, else
    ``create_app`` under uvicorn; yields the base URL and the process."""
    port = free_port()
    config = str(folder / "shoplens.toml")
    if cli:
        cmd = [sys.executable, "-m", "shoplens.cli", "serve", "-c", config, "--port", str(port)]
    else:
        code = ("import uvicorn; from shoplens.config import load_config; from shoplens.serving.api import create_app; "
                f"uvicorn.run(create_app(load_config({config!r})), host='127.0.0.1', port={port}, log_level='warning')")
        cmd = [sys.executable, "-c", code]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=output, stderr=subprocess.STDOUT if output else None)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base, proc)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def demo_server(demo_shop: Any, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[dict[str, Any]]:
    """The API over a copy of the session's demo shop, with a key per role."""
    folder = tmp_path_factory.mktemp(name) / "shop"
    shutil.copytree(demo_shop.folder, folder)
    keys = role_keys(folder)
    with serving(folder) as (base, _proc):
        yield {"base": base, "keys": keys, "folder": folder, "example": demo_shop.example_customer}
