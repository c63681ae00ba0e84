"""Which LLM provider a config names: the one place that knows every implementation, so
``base`` (the protocol and shared helpers) never imports the modules that implement it.

``PROVIDERS`` maps each ``[llm] type`` to a factory; adding a provider is one entry (and
the value in ``LLMConfig.type``). Heavy implementations are imported by their factory,
only when configured. ``type = "none"`` gives the template writer, so there is always a
provider and callers never branch on ``None``.
"""

from __future__ import annotations

from collections.abc import Callable

from shoplens.config import Config
from shoplens.errors import ConfigError
from shoplens.llm.base import LLMProvider, ResponseCache
from shoplens.llm.template import TemplateWriter


def _template(cfg: Config) -> LLMProvider:
    return TemplateWriter()


def _local(cfg: Config) -> LLMProvider:
    from shoplens.llm.local_gguf import LocalGGUF

    return LocalGGUF()


def _openai(cfg: Config) -> LLMProvider:
    from shoplens.llm.openai_compat import OpenAICompatible

    llm = cfg.llm
    cache = ResponseCache(cfg.resolve(llm.cache)) if llm.cache else None
    return OpenAICompatible(llm.base_url, llm.model, api_key_env=llm.api_key_env, timeout_s=llm.timeout_s,
                            max_retries=llm.max_retries, cache=cache)


PROVIDERS: dict[str, Callable[[Config], LLMProvider]] = {"none": _template, "local": _local, "openai": _openai}


def provider_from_config(cfg: Config) -> LLMProvider:
    """The configured provider; the template writer when ``[llm] type = "none"`` (the default).

    >>> provider_from_config(Config()).name
    'template'
    """
    try:
        factory = PROVIDERS[cfg.llm.type]
    except KeyError:
        raise ConfigError(f"[llm] type: expected one of {sorted(PROVIDERS)}, got {cfg.llm.type!r}") from None
    return factory(cfg)
