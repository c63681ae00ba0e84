"""Text commands: ``shoplens analyze``, ``train sentiment``, ``evaluate sentiment|aspects``.
They register on the app defined in ``shoplens.cli._common``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from shoplens.cli._common import DEFAULT_CONFIG, ConfigOpt, app, console, err_console, evaluate_app

train_app = typer.Typer(help="Train the models that ship as artifacts.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _text_config(config: Path) -> Any:
    """``[text]`` from the config when there is one; defaults otherwise (analyze needs no
    shop), with the embedding cache in the user's cache folder rather than the cwd."""
    from shoplens.config import Config, load_config
    from shoplens.text.embed import USER_EMBED_CACHE

    if config.exists():
        return load_config(config)
    cfg = Config()
    cfg.text.cache = str(USER_EMBED_CACHE)
    return cfg


def _rate_printer(label: str) -> Any:
    def show(done: int, total: int, rate: float) -> None:
        err_console.print(f"{label}: {done:,}/{total:,} ({rate:.1f} texts/s)", end="\r")
    return show


@app.command()
def analyze(
    text: Annotated[str | None, typer.Argument(help="The text; '-' or nothing reads standard input.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print the analysis as JSON.")] = False,
) -> None:
    """Analyse one text: language, sentiment, aspects with evidence, keywords (PII masked first)."""
    from shoplens.text.analysers import Analysers

    raw = sys.stdin.read() if text in (None, "-") else text
    with err_console.status("loading text models"):
        analysers = Analysers.for_shop(_text_config(config))
        results, _ = analysers.analyse([raw])
    analysers.close()
    doc = results[0].as_dict()
    if as_json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    console.print(f"text: {escape(doc['text'])}", soft_wrap=True)
    score = doc["sentiment"]
    console.print(f"language: {doc['language']}   sentiment: {doc['sentiment_label'] or '-'}"
                  + ("" if score is None else f" (P(positive) = {score:.3f})") + ("   [truncated]" if doc["truncated"] else ""))
    table = Table("aspect", "polarity", "P(positive)", "evidence", "via", title="aspects")
    for h in doc["aspects"]:
        table.add_row(h["aspect"], h["polarity"], f"{h['score']:.3f}", escape(h["evidence"]), h["via"])
    console.print(table if doc["aspects"] else "aspects: none found")
    console.print(f"keywords: {', '.join(doc['keywords']) or '-'}")


@train_app.command("sentiment")
def train_sentiment_cmd(
    out: Annotated[Path | None, typer.Option(help="Where to write the stacked head JSON (default: inside the package).")] = None,
) -> None:
    """Retrain the sentiment model (n-gram artifact + stacked e5 head) on the training splits."""
    from shoplens.text.evaluate import train

    result = train(out, _rate_printer("embedding training texts"))
    err_console.print()
    console.print_json(json.dumps(result))


@evaluate_app.command("sentiment")
def evaluate_sentiment_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Held-out sentiment accuracy (zh, en) of the shipped model beside SnowNLP and VADER."""
    from shoplens.text.evaluate import evaluate_sentiment

    result = evaluate_sentiment(_rate_printer("embedding held-out texts"))
    err_console.print()
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    share = "{accuracy:.4f} ({refined_share:.0%} to e5)".format
    table = Table("language", "test texts", "n-gram", "replaced: e5 head on every text", "default: cascade",
                  "baseline", "baseline acc.", title=f"held-out sentiment accuracy (artifact {result['hash']})")
    for lang, r in result["languages"].items():
        table.add_row(lang, f"{r['n_test']:,}", f"{r['ngram']['accuracy']:.4f}",
                      f"{r['replaced']['accuracy']:.4f}" if "replaced" in r else "-",
                      share(**r["cascade"]) if "cascade" in r else "-",
                      r["baseline"]["name"], f"{r['baseline']['accuracy']:.4f}")
    console.print(table)
    v = result["zh_verified"]
    ci = "{accuracy:.4f} [{ci95[0]:.3f}, {ci95[1]:.3f}]".format
    table = Table("texts", "n-gram", "replaced: e5 head on every text", "default: cascade", "SnowNLP",
                  title=f"zh accuracy against verified labels (95% CI): {v['n']} held-out reviews labelled "
                        f"again by hand, {v['mixed']} mixed left out")
    table.add_row(f"{v['n_clear']:,}", ci(**v["ngram"]), ci(**v["replaced"]) if "replaced" in v else "-",
                  ci(**v["cascade"]) if "cascade" in v else "-", ci(**{k: v["baseline"][k] for k in ("accuracy", "ci95")}))
    console.print(table)
    console.print(f"corpus labels agree with the verified ones on {ci(**v['corpus_label_agreement'])} of the clear texts")


@evaluate_app.command("aspects")
def evaluate_aspects_cmd(
    detector: Annotated[str, typer.Option(help="learned (the default), learned-e5 (adds e5 clause embeddings) or lexicon.")] = "learned",
    embeddings: Annotated[bool, typer.Option(help="Lexicon detector: also assign aspects by e5 similarity to prototypes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Aspect detection P/R/F1 on hand-labelled clauses (550 held out), and clause polarity
    accuracy by the n-gram model, the replaced configuration and the default cascade."""
    from shoplens.text.aspect_model import load_aspect_model
    from shoplens.text.aspects import AspectAnalyser, evaluate_aspects, load_aspects
    from shoplens.text.cascade import Cascade
    from shoplens.text.embed import user_e5
    from shoplens.text.evaluate import default_cascade
    from shoplens.text.labelled import is_test, load_eval_set
    from shoplens.text.sentiment import load_sentiment

    if detector not in ("learned", "learned-e5", "lexicon"):
        raise typer.BadParameter(f"expected learned, learned-e5 or lexicon, found {detector!r}", param_hint="--detector")
    rows = load_eval_set()
    e5 = user_e5(_rate_printer("embedding clauses"))
    aspects = load_aspects()
    model = load_sentiment()
    found = None if detector == "lexicon" else load_aspect_model(aspects, e5 if detector == "learned-e5" else None)
    cascade, bulk = default_cascade(model, _rate_printer("embedding unsure clauses"))

    def analyser(sentiment: Any, polarity: Any) -> AspectAnalyser:
        return AspectAnalyser(sentiment, aspects, embedder=e5 if embeddings and found is None else None,
                              polarity_embedder=polarity, detector=found, detector_embedder=e5)

    polarity = {"n-gram": analyser(model, None), "replaced: e5 head on every clause": analyser(model, e5),
                "default: cheap stages of the cascade": analyser(Cascade(model, bulk.id, None, heads=cascade.heads), bulk)}
    test = [r for r in rows if is_test(r)]
    parts = {"test (held out)": test, "test zh": [r for r in test if r["lang"] == "zh"],
             "test en": [r for r in test if r["lang"] == "en"],
             "test2 (400)": [r for r in test if r["sample"] == "test2"],
             "test (150)": [r for r in test if r["sample"] == "test"],
             "training (in-sample)": [r for r in rows if not is_test(r)]}
    result = {name: evaluate_aspects(polarity["default: cheap stages of the cascade"], sub) for name, sub in parts.items()}
    result["polarity"] = {name: evaluate_aspects(a, test) for name, a in polarity.items()}
    if as_json:
        print(json.dumps(result, indent=2))
        return
    err_console.print()
    table = Table("aspect", "support", "precision", "recall", "F1",
                  title=f"{detector} aspect detection on the {len(test)} held-out test clauses")
    for name, s in sorted(result["test (held out)"]["aspects"].items()):
        table.add_row(name, str(s["support"]), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}")
    console.print(table)
    for name, r in result.items():
        if name != "polarity":
            console.print(f"{name:>15}: macro-F1 {r['macro_f1']:.3f}  micro-F1 {r['micro_f1']:.3f}  "
                          f"polarity accuracy {r['polarity_accuracy']:.3f} "
                          f"(n={r['n_polarity']}) over {r['n_clauses']} clauses")
    table = Table("clause polarity by", "accuracy", "clauses", title="polarity of the aspects found, held-out test clauses")
    for name, r in result["polarity"].items():
        table.add_row(name, f"{r['polarity_accuracy']:.3f}", str(r["n_polarity"]))
    console.print(table)


@evaluate_app.command("questions")
def evaluate_questions_cmd(
    split: Annotated[str, typer.Option(help="dev, heldout or both.")] = "both",
    show_misses: Annotated[bool, typer.Option("--misses", help="List the questions answered wrongly.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Plain-language questions -> filters without an LLM: exact-semantics accuracy on the
    240 evaluation questions (half held out), refusals counted right only where expected."""
    from shoplens.serving.questions import evaluate_questions

    if split not in ("dev", "heldout", "both"):
        raise typer.BadParameter(f"expected dev, heldout or both, found {split!r}", param_hint="--split")
    result = evaluate_questions(("dev", "heldout") if split == "both" else (split,))
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    table = Table("split", "questions", "refusals expected", "zh", "en", "all",
                  title="offline question parser: exact-semantics accuracy (docs/questions.md)")
    for name, r in result.items():
        acc = r["accuracy"]
        table.add_row(name, str(r["n"]), str(r["refusals_expected"]), f"{acc.get('zh', 0):.3f}", f"{acc.get('en', 0):.3f}",
                      f"{acc['all']:.3f} ({r['correct']['all']}/{r['n']})")
    console.print(table)
    if show_misses:
        for name, r in result.items():
            for m in r["misses"]:
                console.print(f"[{name}] {m['id']} {escape(m['question'])}\n  expected {json.dumps(m['expected'], ensure_ascii=False)}"
                              f"\n  got      {json.dumps(m['got'], ensure_ascii=False)}", soft_wrap=True)
