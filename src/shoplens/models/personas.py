"""Segment statistics and personas that are checked against them.

Each segment gets its figures (size, means, z-scores vs the whole base, top
categories, mean rating, masked example quotes). A persona is written by the configured
LLM from those figures only, then *grounded*: every number it states must be one of the
figures (as given, rounded, or as a percentage), and every category it names must be
one of the segment's categories. A failing draft is retried once with the problems
listed, then replaced by the deterministic template; ``source`` records which happened.
Without an LLM (``[llm] type = "none"``, the template writer) the template is used and
labelled as such; ``llm_persona`` is the one place that decides.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from shoplens.llm.base import AnswerRejected, LLMError, LLMProvider, ask_json
from shoplens.llm.template import is_template

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*(?:\.\d+)?%?")


def _words() -> dict[str, dict[str, str]]:
    return tomllib.loads(resources.files("shoplens").joinpath("rules/segments.toml").read_text("utf-8"))


@dataclass
class SegmentStats:
    segment_id: int
    size: int
    share: float
    means: dict[str, float]
    base_means: dict[str, float]
    zscores: dict[str, float]
    categories: list[str]
    mean_rating: float | None
    quotes_negative: list[str] = field(default_factory=list)
    quotes_positive: list[str] = field(default_factory=list)

    def top_features(self, n: int = 3) -> list[str]:
        return sorted(self.zscores, key=lambda f: -abs(self.zscores[f]))[:n]

    def figures(self) -> dict[str, Any]:
        """The figures a persona may use (rounded as they are shown to the LLM)."""
        top = self.top_features(4)
        return {
            "customers": self.size,
            "share_of_base_percent": round(100 * self.share, 1),
            "top_categories": self.categories[:3],
            "distinguishing": {f: {"segment_mean": round(self.means[f], 2), "all_customers_mean": round(self.base_means[f], 2),
                                   "z": round(self.zscores[f], 2)} for f in top},
            "mean_rating": None if self.mean_rating is None else round(self.mean_rating, 2),
        }


class PersonaDraft(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(max_length=40)
    persona: str = Field(max_length=1200)
    actions: list[str] = Field(default_factory=list, max_length=5)


@dataclass
class Persona:
    name: str
    persona: str
    actions: list[str]
    source: str  # template | llm | llm-retried | template-after-rejected-llm
    problems: list[str] = field(default_factory=list)


def segment_stats(frame: pd.DataFrame, labels: np.ndarray, features: list[str],
                  categories: dict[str, list[str]], quotes: dict[str, tuple[list[str], list[str]]]) -> list[SegmentStats]:
    base_mean = frame[features].mean()
    base_std = frame[features].std(ddof=0).replace(0, np.nan)
    out = []
    for seg in sorted(np.unique(labels[labels >= 0])):
        members = frame[labels == seg]
        m = members[features].mean()
        z = ((m - base_mean) / base_std).fillna(0.0)
        cats = pd.Series([c for cid in members.index for c in categories.get(cid, [])[:1]]).value_counts()
        neg, pos = [], []
        for cid in members.index:
            n, p = quotes.get(cid, ([], []))
            neg += n
            pos += p
        rating = members["mean_rating"].mean() if "mean_rating" in members else np.nan
        out.append(SegmentStats(
            int(seg), len(members), len(members) / len(frame),
            {str(k): float(v) for k, v in m.items()}, {str(k): float(v) for k, v in base_mean.items()},
            {str(k): float(v) for k, v in z.items()}, [str(c) for c in cats.index[:5]],
            None if pd.isna(rating) else float(rating), neg[:3], pos[:3],
        ))
    return out


def figure(value: float, fmt: str | None, lang: str = "zh") -> str:
    """A figure as a marketer reads it (``format`` in rules/segments.toml).

    >>> figure(0.4512, "share"), figure(1234.5, "money"), figure(32.4, "days", "en"), figure(4.25, "stars")
    ('45.1%', '1,234', '32 days', '4.2 星')
    """
    if fmt == "share":
        return f"{100 * value:.1f}%"
    if fmt == "money":
        return f"{value:,.0f}"
    if fmt == "days":
        return f"{value:.0f} 天" if lang == "zh" else f"{value:.0f} days"
    if fmt == "years":
        return f"{value:.0f} 岁" if lang == "zh" else f"{value:.0f} years"
    if fmt == "stars":
        return f"{value:.1f} 星" if lang == "zh" else f"{value:.1f} stars"
    if fmt == "count":
        return f"{value:.1f}"
    return f"{value:.2f}"


def template_persona(s: SegmentStats, lang: str = "zh") -> Persona:
    """Deterministic persona from the figures and the phrase table; labelled as a template."""
    words = _words()
    top = s.top_features(3)

    def word(f: str, high: bool) -> str:
        entry = words.get(f)
        if entry is None:  # a feature the phrase table does not know: its name, in the language asked
            return (f"{f}{'高' if high else '低'}" if lang == "zh" else f"{'high' if high else 'low'} {f}")
        return entry[f"{'high' if high else 'low'}_{lang}"]

    parts = [word(f, s.zscores[f] > 0) for f in top[:2]]
    name = ("·".join(parts) if lang == "zh" else " & ".join(parts))[:40]
    cats = "、".join(s.categories[:2]) if lang == "zh" else ", ".join(s.categories[:2])
    facts = []
    for f in top:
        entry = words.get(f, {})
        label = entry.get(f"label_{lang}", f)
        seg_v, base_v = (figure(v, entry.get("format"), lang) for v in (s.means[f], s.base_means[f]))
        if lang == "zh":
            facts.append(f"{label}平均 {seg_v}（全体 {base_v}）")
        else:
            facts.append(f"{label} averages {seg_v} (all customers {base_v})")
    if lang == "zh":
        text = f"[模板生成] 该群体共 {s.size} 人，占 {100 * s.share:.1f}%。" + "；".join(facts) + "。" + (f"主要购买{cats}。" if cats else "")
    else:
        text = f"[template] {s.size} customers ({100 * s.share:.1f}%). " + "; ".join(facts) + "." + (f" Mostly buy {cats}." if cats else "")
    actions = []
    for f in top:
        if f in words:
            actions.append(words[f][f"action_{'high' if s.zscores[f] > 0 else 'low'}_{lang}"])
    return Persona(name, text, actions, "template")


def _allowed_numbers(figures: dict[str, Any]) -> set[float]:
    nums: set[float] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            for x in (float(v), round(float(v)), round(float(v), 1), round(100 * float(v), 1), round(100 * float(v))):
                nums.add(float(x))
    walk(figures)
    return nums


def check_grounding(draft: PersonaDraft, figures: dict[str, Any], all_categories: set[str]) -> list[str]:
    """Problems with a draft: no figures at all, numbers not among the figures, categories
    not the segment's. (Claims without numbers, e.g. invented ages or jobs, cannot be
    checked this way; the prompt forbids them and the template is always available.)"""
    allowed = _allowed_numbers(figures)
    problems = []
    text = f"{draft.name} {draft.persona} {' '.join(draft.actions)}"
    if not NUMBER.findall(draft.persona):
        problems.append("the persona states none of the segment's figures (size, share or a distinguishing mean)")
    for token in NUMBER.findall(text):
        value = float(token.rstrip("%").replace(",", ""))
        if not any(abs(value - a) <= max(0.051, 0.005 * abs(a)) for a in allowed):
            problems.append(f"the number {token} is not one of the segment's figures")
    own = set(figures.get("top_categories", []))
    for cat in sorted(all_categories - own):
        if cat and cat in text:
            problems.append(f"category '{cat}' is not among this segment's categories {sorted(own)}")
    return problems


def llm_persona(provider: LLMProvider, s: SegmentStats, all_categories: set[str], lang: str = "zh") -> Persona:
    """Persona written by the LLM from the figures only, grounded, else the template;
    the template writer (no LLM) gives ``template_persona``, ``source = "template"``."""
    if is_template(provider):
        return template_persona(s, lang)
    figures = s.figures()
    language = "Chinese (简体中文)" if lang == "zh" else "English"
    messages = [
        {"role": "system", "content": (
            "You write short marketing personas for customer segments. Use ONLY the figures given; "
            "do not invent numbers, products or complaints. Write in " + language + ". "
            'Answer JSON: {"name": "<at most 12 characters>", "persona": "<2-3 sentences>", "actions": ["<action>", ...]}')},
        {"role": "user", "content": json.dumps({"figures": figures, "example_quotes_negative": s.quotes_negative,
                                                "example_quotes_positive": s.quotes_positive}, ensure_ascii=False)},
    ]
    problems: list[str] = []
    for attempt in range(2):
        try:  # only a grounded draft reaches the LLM response cache
            draft = ask_json(provider, messages, PersonaDraft, check=lambda d: check_grounding(d, figures, all_categories))
        except AnswerRejected as err:
            problems = err.problems
            messages = [*messages, {"role": "assistant", "content": err.reply},
                        {"role": "user", "content": "Fix these problems, use only the given figures: " + "; ".join(problems)}]
            continue
        except LLMError as err:
            problems.append(str(err))
            break
        return Persona(draft.name, draft.persona, list(draft.actions), "llm" if attempt == 0 else "llm-retried")
    fallback = template_persona(s, lang)
    fallback.source = "template-after-rejected-llm"
    fallback.problems = problems
    return fallback
