"""Plain-language audience questions (Chinese or English) -> the filter language.

Without an LLM (``[llm] type = "none"``, the default) the offline parser answers
(``serving.questions``: the phrases of docs/questions.md, refusing what it does not
understand). With an LLM configured, the question goes to it with the list of fields
and the JSON filter grammar; the answer must be a JSON filter, which is validated and compiled through the
same whitelist as a hand-written one, so an LLM (or a prompt-injected question) can
never produce SQL. PII in the question is masked before the LLM sees it. An answer whose
filter does not compile is never cached: the same question asks the LLM again.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from shoplens.llm.base import AnswerRejected, LLMProvider, ask_json
from shoplens.llm.template import is_template
from shoplens.privacy import mask_text
from shoplens.serving.audience import FilterError, compile_filter, to_text, valid_unicode
from shoplens.serving.profile_store import AUDIENCE_FIELDS
from shoplens.serving.questions import parse_question

MAX_QUESTION = 500
FIELD_NOTES = {
    "recency_days": "days since the last purchase", "n_orders": "paid orders", "total_spend": "total spend",
    "churn_risk": "0-1 probability of not buying in the next 90 days", "clv": "predicted 12-month value",
    "rfm_segment": "Champions, Loyal, Potential Loyalist, New, Promising, Need Attention, About to Sleep, "
                   "Can't Lose, At Risk, Hibernating, Lost, No purchase",
    "m_score": "1-5 spend quintile (5 = top 20%)", "r_score": "1-5 recency quintile (5 = most recent)",
    "discounted_spend_share": "0-1 share of spend on discounted orders", "return_rate": "0-1",
    "top_category": "top-level category, e.g. 数码, 服装", "age": "years", "city": "city name",
}


class FilterAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filter: dict[str, Any]
    explanation: str = ""


def prompt(question: str) -> list[dict[str, str]]:
    fields = "\n".join(f"- {f} ({k}){': ' + FIELD_NOTES[f] if f in FIELD_NOTES else ''}" for f, k in AUDIENCE_FIELDS.items())
    system = (
        "You turn a marketer's question about customers into a JSON filter. Use only these fields:\n"
        f"{fields}\n"
        'A condition is {"field": F, "op": OP, "value": V} with OP one of =, !=, <, <=, >, >=, between ([low, high]), in (list). '
        'Combine with {"and": [...]}, {"or": [...]}, {"not": {...}}. '
        'Answer with JSON only: {"filter": <filter>, "explanation": "<one sentence>"}. Never write SQL.'
    )
    example_q = "最近三个月没买过东西的高价值客户"
    example_a = {"filter": {"and": [{"field": "recency_days", "op": ">", "value": 90},
                                    {"field": "m_score", "op": ">=", "value": 5}]},
                 "explanation": "no purchase in 90 days, top spend quintile"}
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": example_q},
        {"role": "assistant", "content": json.dumps(example_a, ensure_ascii=False)},
        {"role": "user", "content": mask_text(question)},
    ]


def question_to_filter(provider: LLMProvider, question: str) -> tuple[dict[str, Any], str]:
    """The validated filter tree for ``question`` and the LLM's one-line explanation."""
    if not question.strip():
        raise FilterError("question: empty")
    if len(question) > MAX_QUESTION:
        raise FilterError(f"question: longer than {MAX_QUESTION} characters")
    if not valid_unicode(question):
        raise FilterError("question: not valid Unicode (a lone surrogate)")
    if is_template(provider):  # no LLM: the offline parser
        parsed = parse_question(question)
        if parsed.filter is None:
            raise FilterError(f"question: {parsed.reason}. Rephrase it, or write the filter itself ('text')")
        compile_filter(parsed.filter, AUDIENCE_FIELDS)
        return parsed.filter, "understood: " + "; ".join(f"{phrase} -> {to_text(c)}" for phrase, c in parsed.understood)
    try:
        answer = ask_json(provider, prompt(question), FilterAnswer, check=_filter_problems)
    except AnswerRejected as err:
        raise FilterError(f"the LLM's filter was rejected: {err.problems[0]}") from None
    return answer.filter, answer.explanation


def _filter_problems(answer: FilterAnswer) -> list[str]:
    try:
        compile_filter(answer.filter, AUDIENCE_FIELDS)
    except FilterError as err:
        return [str(err).removeprefix("filter: ")]
    return []
