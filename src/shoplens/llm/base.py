"""The LLM provider protocol and the pieces every provider shares.

A provider turns a list of chat messages into text. ShopLens never lets an LLM's words
reach the data directly: callers ask for JSON, validate it with pydantic, and check
every claim against computed figures (personas) or compile it through the filter
language's whitelist (audiences). A provider's response cache keeps only answers that
passed that validation: ``ask_json`` hands them back with ``remember``, so a rejected
answer is asked for again next time instead of being replayed from the cache.

Error messages name what went wrong (status, timeout, malformed answer) but never the
endpoint's URL or the body it sent back: they may reach API clients.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from shoplens.errors import LLMError

MAX_PROMPT_CHARS = 16_000
Model = TypeVar("Model", bound=BaseModel)


class AnswerRejected(LLMError):
    """The LLM answered valid JSON that a caller's check refused; ``problems`` says why."""

    def __init__(self, problems: Sequence[str], reply: str) -> None:
        super().__init__("the LLM's answer was rejected: " + "; ".join(problems))
        self.problems = list(problems)
        self.reply = reply


class LLMProvider(Protocol):
    name: str

    def complete(self, messages: list[dict[str, str]], json_mode: bool = False) -> str:
        """The assistant's reply to ``messages`` (a JSON-mode reply is not cached here)."""
        ...

    def remember(self, messages: list[dict[str, str]], reply: str) -> None:
        """Cache a JSON-mode ``reply`` to ``messages`` that passed validation (no-op without a cache)."""
        ...


class ResponseCache:
    """Replies keyed by a hash of (provider, model, messages), in a small SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT)")

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT reply FROM replies WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, reply: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", [key, reply])


def bounded(messages: list[dict[str, str]], limit: int = MAX_PROMPT_CHARS) -> list[dict[str, str]]:
    """Refuse prompts over ``limit`` characters rather than send (and pay for) them."""
    size = sum(len(m.get("content", "")) for m in messages)
    if size > limit:
        raise LLMError(f"prompt of {size:,} characters is over the {limit:,}-character limit")
    return messages


def ask_json(provider: LLMProvider, messages: list[dict[str, str]], model: type[Model], retries: int = 1,
             check: Callable[[Model], Sequence[str]] | None = None) -> Model:
    """Ask for JSON matching ``model``; one retry with the validation error shown.

    ``check`` returns the problems with a parsed answer (none: accepted); a refused answer
    raises ``AnswerRejected`` without a retry, so the caller decides what to tell the LLM.
    Only an accepted answer goes into the provider's cache.
    """
    history = list(messages)
    last = ""
    for _ in range(retries + 1):
        reply = provider.complete(history, json_mode=True)
        try:
            answer = model.model_validate_json(_strip_fences(reply))
        except ValidationError as err:
            last = str(err).splitlines()[0] if str(err) else "invalid"
            history = [*messages, {"role": "assistant", "content": reply},
                       {"role": "user", "content": f"That was not valid JSON for the schema ({last}). Answer with the JSON only."}]
            continue
        problems = list(check(answer)) if check is not None else []
        if problems:
            raise AnswerRejected(problems, reply)
        provider.remember(history, reply)
        return answer
    raise LLMError(f"the LLM did not return valid JSON after {retries + 1} tries ({last})")


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        t = t.rsplit("```", 1)[0]
    return t.strip()
