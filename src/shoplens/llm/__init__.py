"""Language-model providers behind one small protocol (see ``base``)."""

from shoplens.llm.base import LLMError, LLMProvider
from shoplens.llm.registry import provider_from_config

__all__ = ["LLMError", "LLMProvider", "provider_from_config"]
