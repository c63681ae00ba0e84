"""``shoplens train sentiment`` and ``shoplens evaluate sentiment|aspects``.

Held-out accuracy per language for the shipped model (n-gram alone and stacked with e5
embeddings) beside the baselines named in the issue, in one run: SnowNLP's own
classifier for Chinese (trained by its authors on this whole corpus, so its figure on
our test split is optimistic) and VADER (rule-based) for English.
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
    return {"artifact": str(path), "hash": artifact_hash(splits), "head": str(target), "head_train_texts": head["n_train"]}


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
    emb.close()
    return out
