"""Language-model providers behind one small protocol (see ``base``)."""

from shoplens.llm.base import LLMError, LLMProvider
from shoplens.llm.registry import provider_from_config
from shoplens.llm.template import TemplateWriter, is_template

__all__ = ["LLMError", "LLMProvider", "TemplateWriter", "is_template", "provider_from_config"]
