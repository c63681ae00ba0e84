"""The offline question parser (issue #14): meanings from docs/questions.md, grouping,
refusals, the canonical comparison, and accuracy on the evaluation questions."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from shoplens.cli import app
from shoplens.jobs import Summary
from shoplens.serving.audience import compile_filter
from shoplens.serving.profile_store import FLAT_FIELDS
from shoplens.serving.questions import canonical, evaluate_questions, load_questions, parse_question


def test_the_issue_example_compiles_without_an_llm() -> None:
    p = parse_question("最近三个月没买过东西、抱怨物流的高价值客户")
    assert canonical(p.filter) == canonical({"and": [
        {"field": "recency_days", "op": ">", "value": 90}, {"field": "aspect.logistics", "op": "<", "value": 0},
        {"field": "m_score", "op": ">=", "value": 5}]})
    assert [phrase for phrase, _c in p.understood] == ["最近3个月没买过东西", "抱怨物流", "高价值"]
    compile_filter(p.filter, FLAT_FIELDS)


@pytest.mark.parametrize(("question", "expected"), [
    ("北京或上海的女性客户", {"and": [{"or": [{"field": "city", "op": "=", "value": "北京"},
                                             {"field": "city", "op": "=", "value": "上海"}]},
                                     {"field": "gender", "op": "=", "value": "female"}]}),
    ("high-value customers in Beijing or Shanghai", {"and": [{"field": "m_score", "op": ">=", "value": 5},
                                                             {"field": "city", "op": "in", "value": ["北京", "上海"]}]}),
    ("流失风险高的或者抱怨物流的客户", {"or": [{"field": "churn_risk", "op": ">", "value": 0.6},
                                             {"field": "aspect.logistics", "op": "<", "value": 0}]}),
    ("deal seekers not in Toronto", {"and": [{"field": "discounted_spend_share", "op": ">", "value": 0.5},
                                             {"not": {"field": "city", "op": "=", "value": "Toronto"}}]}),
    ("repeat buyers with churn risk above 70%", {"and": [{"field": "n_orders", "op": ">=", "value": 2},
                                                         {"field": "churn_risk", "op": ">", "value": 0.7}]}),
    ("客户价值超过1万的", {"field": "clv", "op": ">", "value": 10000}),
    ("25到34岁", {"field": "age", "op": "between", "value": [25, 34]}),
    ("抱怨过物流或者客服的", {"or": [{"field": "aspect.logistics", "op": "<", "value": 0},
                                    {"field": "aspect.service", "op": "<", "value": 0}]}),
])
def test_phrases_and_grouping(question: str, expected: dict) -> None:
    assert canonical(parse_question(question).filter) == canonical(expected)


@pytest.mark.parametrize(("question", "why"), [
    ("收入高的客户", "no profile field"),
    ("high value customers who own a yacht", "not understood: 'own', 'yacht'"),  # partial: never drops a condition
    ("删除所有流失客户", "action"),
    ("the customer whose phone is 13812345678", "identifier"),
    ("'; DROP TABLE flat; --", "action"),
    ("抱怨包装或者价格", None),  # fine: both complaints
    ("物流", "praised or complained"),  # a bare aspect with nothing to take a polarity from
])
def test_refusals_say_why(question: str, why: str | None) -> None:
    p = parse_question(question)
    if why is None:
        assert p.filter is not None
        return
    assert p.filter is None and why in p.reason
    assert "13812345678" not in p.reason


def test_canonical_form_compares_meaning() -> None:
    a = {"and": [{"field": "age", "op": "between", "value": [25, 34]}, {"field": "city", "op": "in", "value": ["上海", "北京"]}]}
    b = {"and": [{"or": [{"field": "city", "op": "=", "value": "北京"}, {"field": "city", "op": "=", "value": "上海"}]},
                 {"and": [{"field": "age", "op": ">=", "value": 25.0}, {"field": "age", "op": "<=", "value": 34}]}]}
    assert canonical(a) == canonical(b)
    assert canonical(a) != canonical({"field": "age", "op": "between", "value": [25, 35]})
    assert canonical(None) is None and canonical({"not": b}) != canonical(b)


def test_accuracy_on_the_evaluation_questions() -> None:
    """Measured once on the held-out half at the end of development: 0.918 (112/122), every
    miss a refusal (docs/benchmarks.md). A regression below 0.90, or any wrong filter
    where a refusal would have been right, fails."""
    result = evaluate_questions()
    assert len(load_questions("dev")) + len(load_questions("heldout")) == 240
    assert result["heldout"]["accuracy"]["all"] >= 0.90 and result["dev"]["accuracy"]["all"] >= 0.95
    for split in ("dev", "heldout"):
        assert all(m["got"] is None for m in result[split]["misses"]), "a question compiled to a wrong filter"


def test_cli_audience_question(demo_shop: Summary) -> None:
    config = str(demo_shop.folder / "shoplens.toml")
    result = CliRunner().invoke(app, ["audience", "-q", "high-value customers who complained about delivery",
                                      "--config", config])
    assert result.exit_code == 0, result.output
    assert "understood:" in result.output and "m_score >= 5" in result.output and "customers" in result.output
    run = subprocess.run([sys.executable, "-m", "shoplens.cli", "audience", "-q", "customers with pets", "--config", config],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and run.stderr.strip().splitlines() == [
        "error: question: no profile field for 'pets'. Rephrase it, or write the filter itself ('text')"]
