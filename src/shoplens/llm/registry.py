"""Which LLM provider a config names: the one place that knows every implementation, so
``base`` (the protocol and shared helpers) never imports the modules that implement it."""

from __future__ import annotations

from shoplens.config import Config
from shoplens.llm.base import LLMProvider, ResponseCache


def provider_from_config(cfg: Config) -> LLMProvider | None:
    """The configured provider, or None when ``[llm] type = "none"`` (templates then)."""
    llm = cfg.llm
    if llm.type == "none":
        return None
    if llm.type == "local":
        from shoplens.llm.local_gguf import LocalGGUF

        return LocalGGUF()
    from shoplens.llm.openai_compat import OpenAICompatible

    cache = ResponseCache(cfg.resolve(llm.cache)) if llm.cache else None
    return OpenAICompatible(llm.base_url, llm.model, api_key_env=llm.api_key_env, timeout_s=llm.timeout_s,
                            max_retries=llm.max_retries, cache=cache)
