"""Any OpenAI-compatible chat endpoint: vLLM, Ollama, llama.cpp's server, hosted APIs.

POST ``{base_url}/chat/completions``; timeouts, retries with exponential backoff on
connection errors, 429 and 5xx (honouring Retry-After), optional streaming (server-sent
events), JSON mode, and a response cache keyed by the prompt's hash. A plain-text reply is
cached as received; a JSON-mode reply only once its caller accepted it (``remember``).

Errors say what happened (HTTP status, timeout, cannot connect, malformed answer) without
the endpoint's URL or response body, which may reach API clients; the body goes to the
``shoplens.llm`` logger at debug level.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import httpx

from shoplens.llm.base import LLMError, ResponseCache, bounded

RETRY_STATUS = {429, 500, 502, 503, 504}
log = logging.getLogger("shoplens.llm")


class OpenAICompatible:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 max_retries: int = 3, backoff_s: float = 0.5, stream: bool = False, cache: ResponseCache | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = os.environ.get(api_key_env, "")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.stream = stream
        self.cache = cache
        self.name = f"openai-compatible:{model}"

    def complete(self, messages: list[dict[str, str]], json_mode: bool = False) -> str:
        bounded(messages)
        key = ResponseCache.key(self.base_url, self.model, messages, json_mode)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return hit
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0, "stream": self.stream}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        reply = self._post(body, headers)
        if self.cache is not None and not json_mode:
            self.cache.put(key, reply)
        return reply

    def remember(self, messages: list[dict[str, str]], reply: str) -> None:
        """Cache a JSON-mode reply that passed its caller's validation."""
        if self.cache is not None:
            self.cache.put(ResponseCache.key(self.base_url, self.model, messages, True), reply)

    def _post(self, body: dict[str, Any], headers: dict[str, str]) -> str:
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * 2**attempt
            try:
                with httpx.Client(timeout=self.timeout_s) as client:
                    if self.stream:
                        return self._stream(client, url, body, headers)
                    r = client.post(url, json=body, headers=headers)
                if r.status_code in RETRY_STATUS:
                    last = f"HTTP {r.status_code}"
                    wait = float(r.headers.get("retry-after", wait)) if r.headers.get("retry-after", "").replace(".", "", 1).isdigit() else wait
                elif r.status_code != 200:
                    log.debug("LLM endpoint %s answered HTTP %s: %s", url, r.status_code, r.text[:200])
                    raise LLMError(f"the LLM endpoint answered HTTP {r.status_code}")
                else:
                    return self._content(r.json())
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s:g} s"
            except httpx.TransportError as err:
                last = f"cannot connect ({err.__class__.__name__})"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
                raise LLMError(f"the LLM endpoint sent a malformed response ({err.__class__.__name__})") from None
            if attempt < self.max_retries:
                time.sleep(min(wait, 30.0))
        raise LLMError(f"the LLM endpoint failed after {self.max_retries + 1} tries: {last}")

    @staticmethod
    def _content(data: dict[str, Any]) -> str:
        content = data["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("content is not text")
        return content

    def _stream(self, client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> str:
        parts: list[str] = []
        with client.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code != 200:
                raise LLMError(f"the LLM endpoint answered HTTP {r.status_code}")
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                delta = json.loads(payload)["choices"][0].get("delta", {})
                parts.append(delta.get("content") or "")
        return "".join(parts)
