"""The provider for ``[llm] type = "none"``: the template writer, which is no language model.

It implements the provider protocol so that callers never branch on "is there an LLM?",
but it never pretends to be one: its ``name`` is ``"template"`` and ``is_template`` says
so. Each task that can run without an LLM makes that decision in one place, before any
prompt is built: personas (``shoplens.models.personas.llm_persona``) take the
deterministic template, labelled ``source = "template"``. A task that needs free text
understood, i.e. turning a plain-language audience question into a filter, reaches
``complete`` and is refused with the 400 the API has always answered. A no-LLM parser
for such questions (issue #14) plugs in the same way, by checking ``is_template`` first.
"""

from __future__ import annotations

from shoplens.errors import FilterError
from shoplens.llm.base import LLMProvider

TEMPLATE = "template"
NEEDS_LLM = "plain-language questions need an LLM ([llm] in shoplens.toml); use 'text' instead"


class TemplateWriter:
    """The default provider: deterministic templates, no model.

    >>> writer = TemplateWriter()
    >>> writer.name, is_template(writer)
    ('template', True)
    """

    name = TEMPLATE

    def complete(self, messages: list[dict[str, str]], json_mode: bool = False) -> str:
        """Refused: understanding free text (a plain-language question) needs an LLM."""
        raise FilterError(NEEDS_LLM)

    def remember(self, messages: list[dict[str, str]], reply: str) -> None:
        """Nothing to cache: the template writer never answers a prompt."""


def is_template(provider: LLMProvider) -> bool:
    """Whether ``provider`` is the template writer rather than a language model.

    >>> is_template(TemplateWriter())
    True
    """
    return isinstance(provider, TemplateWriter)
