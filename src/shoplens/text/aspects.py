"""Aspect-level sentiment: which aspects a clause talks about, with polarity and evidence.

Per clause (``preprocess.split_clauses``):

1. **Lexicon**: an aspect's words from ``rules/aspects.toml`` (Chinese by substring,
   English as whole words); the matched clause is the evidence span.
2. **Learned detector** (``[text] aspect_detector = "learned"``, the default, or
   ``"learned-e5"``; ``aspect_model``): a classifier per aspect over the lexicon's hits,
   n-grams (and the clause's e5 embedding) decides, keeping or overruling word hits.
3. **Embedding similarity** (lexicon detector only, ``[text] aspect_embeddings``): a
   clause with no word hit is compared with each aspect's prototype sentences; it is
   assigned to the best aspect when that similarity clears ``min_similarity`` and beats
   the runner-up by ``margin``. e5 similarities are compressed (RESOURCES.md), hence a
   margin, not a fixed threshold alone.
4. **Polarity** is the sentiment model's P(positive) on the clause: positive / neutral /
   negative at the same thresholds as documents. With ``[text] clause_polarity =
   "stacked"`` (the default) each evidence clause is embedded too (with the bulk
   embedder) and the cascade's cheap stages score it (better than the n-gram model
   alone, at one cheap embedding per clause: docs/benchmarks.md).

The labelled clauses are ``data/aspect_eval.tsv`` (2,700; its header says how each
sample was drawn): 550 test clauses (``is_test``) never train, tune or revise anything.
``evaluate_aspects`` reports per-aspect precision / recall / F1, macro and micro F1,
and polarity accuracy.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.errors import ConfigError
from shoplens.text.aspect_model import AspectClassifier
from shoplens.text.embed import Embedder
from shoplens.text.labelled import load_eval_set
from shoplens.text.preprocess import Prepared, prepare
from shoplens.text.sentiment import SentimentModel, label


@dataclass(frozen=True)
class AspectHit:
    aspect: str
    polarity: str  # positive / neutral / negative
    score: float  # P(positive) of the evidence clause
    evidence: str
    start: int  # offsets of the evidence in the prepared (masked, normalised) text
    end: int
    via: str  # lexicon (a word hit) / model (the learned detector, no word) / embedding (prototype similarity)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Aspect:
    name: str
    zh_name: str
    pattern: re.Pattern[str]
    exclude: re.Pattern[str] | None
    prototypes: tuple[str, ...]

    def search(self, clause: str) -> bool:
        if self.exclude is not None:
            clause = self.exclude.sub(lambda m: " " * len(m.group()), clause)
        return self.pattern.search(clause) is not None


def load_aspects(path: str | None = None) -> list[Aspect]:
    """Aspects from a TOML file (default: the bundled ``rules/aspects.toml``)."""
    origin = path or "rules/aspects.toml"
    try:
        src = Path(path).read_text("utf-8") if path else resources.files("shoplens").joinpath("rules/aspects.toml").read_text("utf-8")
        specs = tomllib.loads(src).get("aspect", {})
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"[text] aspects: cannot read {origin}: {err}") from None
    if not specs:
        raise ConfigError(f"[text] aspects: {origin} defines no [aspect.<name>] tables")
    out = []
    for name, spec in specs.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", name):
            raise ConfigError(f"[text] aspects: {origin}: aspect name must be lower-case letters, digits or _, found {name!r}")
        if not spec.get("zh") and not spec.get("en"):
            raise ConfigError(f"[text] aspects: {origin}: aspect {name!r} has no 'zh' or 'en' words")
        zh = "|".join(re.escape(w) for w in sorted(spec.get("zh", []), key=len, reverse=True))
        en = "|".join(re.escape(w) for w in sorted(spec.get("en", []), key=len, reverse=True))
        parts = [p for p in (zh, rf"(?<![a-z]){'(?:' + en + ')'}(?![a-z])" if en else "") if p]
        excl = "|".join(re.escape(w) for w in spec.get("exclude", []))
        out.append(Aspect(name, spec.get("zh_name", name), re.compile("|".join(parts), re.I),
                          re.compile(excl, re.I) if excl else None, tuple(spec.get("prototypes", []))))
    return out


class AspectAnalyser:
    """Finds aspects per clause; ``embedder=None`` uses the lexicon only."""

    def __init__(self, sentiment: SentimentModel, aspects: list[Aspect] | None = None,
                 embedder: Embedder | None = None, min_similarity: float = 0.86, margin: float = 0.04,
                 polarity_embedder: Embedder | None = None, detector: AspectClassifier | None = None,
                 detector_embedder: Embedder | None = None) -> None:
        self.sentiment, self.embedder, self.polarity_embedder = sentiment, embedder, polarity_embedder
        self.detector, self.detector_embedder = detector, detector_embedder
        self.aspects = aspects or load_aspects()
        self.min_similarity, self.margin = min_similarity, margin
        self._protos: np.ndarray | None = None
        self._proto_owner: list[int] = []

    def _prototypes(self) -> np.ndarray:
        if self._protos is None:
            assert self.embedder is not None
            texts = [p for a in self.aspects for p in a.prototypes]
            self._proto_owner = [i for i, a in enumerate(self.aspects) for _ in a.prototypes]
            self._protos = self.embedder.embed(texts)
        return self._protos

    def _by_embedding(self, clauses: list[str]) -> list[int | None]:
        if self.embedder is None or not clauses:
            return [None] * len(clauses)
        sims = self.embedder.embed(clauses) @ self._prototypes().T
        per_aspect = np.full((len(clauses), len(self.aspects)), -1.0)
        for j, owner in enumerate(self._proto_owner):
            per_aspect[:, owner] = np.maximum(per_aspect[:, owner], sims[:, j])
        order = np.argsort(-per_aspect, axis=1)
        best = per_aspect[np.arange(len(clauses)), order[:, 0]]
        second = per_aspect[np.arange(len(clauses)), order[:, 1]]
        ok = (best >= self.min_similarity) & (best - second >= self.margin)
        return [int(order[i, 0]) if ok[i] else None for i in range(len(clauses))]

    def _detect(self, prepared: Sequence[Prepared]) -> tuple[list[tuple[int, int, int, str]], dict[tuple[int, int], np.ndarray]]:
        """(text index, clause index, aspect index, via) per hit, and the clause embeddings
        computed on the way (the learned detector's, reused for polarity)."""
        keys = [(ti, ci) for ti, p in enumerate(prepared) for ci in range(len(p.clauses))]
        texts = [prepared[ti].clauses[ci].text for ti, ci in keys]
        hits = np.array([[a.search(t) for a in self.aspects] for t in texts], float).reshape(len(texts), len(self.aspects))
        if self.detector is not None:
            vectors = None
            if self.detector.embedder_id is not None and self.detector_embedder is not None and texts:
                vectors = self.detector_embedder.embed(texts)
            pred = self.detector.predict(texts, hits, vectors)
            found = [(ti, ci, int(ai), "lexicon" if hits[k, ai] else "model")
                     for k, (ti, ci) in enumerate(keys) for ai in np.flatnonzero(pred[k])]
            return found, {} if vectors is None else dict(zip(keys, vectors, strict=True))
        found = [(ti, ci, int(ai), "lexicon") for k, (ti, ci) in enumerate(keys) for ai in np.flatnonzero(hits[k])]
        misses = [key for k, key in enumerate(keys) if not hits[k].any()]
        assigned = self._by_embedding([prepared[ti].clauses[ci].text for ti, ci in misses])
        found.extend((ti, ci, ai, "embedding") for (ti, ci), ai in zip(misses, assigned, strict=True) if ai is not None)
        return found, {}

    def analyse(self, prepared: Sequence[Prepared]) -> list[list[AspectHit]]:
        """Aspect hits per text, in clause order."""
        found, known = self._detect(prepared)
        found.sort()
        keys = list(dict.fromkeys((ti, ci) for ti, ci, _a, _v in found))
        clauses = [prepared[ti].clauses[ci].text for ti, ci in keys]
        vectors = None
        if self.polarity_embedder is not None and clauses:
            same = self.detector is not None and self.detector.embedder_id == self.polarity_embedder.id
            vectors = np.array([known[k] for k in keys]) if same and known else self.polarity_embedder.embed(clauses)
        scores = dict(zip(keys, self.sentiment.predict_proba(clauses, vectors), strict=True))
        out: list[list[AspectHit]] = [[] for _ in prepared]
        for ti, ci, ai, via in found:
            c, s = prepared[ti].clauses[ci], float(scores[(ti, ci)])
            out[ti].append(AspectHit(self.aspects[ai].name, label(s), round(s, 4), c.text, c.start, c.end, via))
        return out


def evaluate_aspects(analyser: AspectAnalyser, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per-aspect precision / recall / F1, their macro average, and polarity accuracy
    (on the aspects both the labels and the analyser found)."""
    rows = rows or load_eval_set()
    prepared = [prepare(r["clause"]) for r in rows]
    # the labelled unit is the clause: analyse each one whole (no further splitting)
    prepared = [p if len(p.clauses) <= 1 else Prepared(p.text, p.language, (p.clauses[0].__class__(p.text, 0, len(p.text)),))
                for p in prepared]
    hits = analyser.analyse(prepared)
    per: dict[str, dict[str, Any]] = {}
    pol_ok = pol_n = 0
    for row, found in zip(rows, hits, strict=True):
        predicted = {h.aspect: h.polarity for h in found}
        for a in {x.name for x in analyser.aspects}:
            s = per.setdefault(a, {"tp": 0, "fp": 0, "fn": 0})
            truth, pred = a in row["labels"], a in predicted
            s["tp"] += truth and pred
            s["fp"] += pred and not truth
            s["fn"] += truth and not pred
            if truth and pred:
                pol_n += 1
                pol_ok += row["labels"][a] == predicted[a]
    for s in per.values():
        s["precision"] = s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else 0.0
        s["recall"] = s["tp"] / (s["tp"] + s["fn"]) if s["tp"] + s["fn"] else 0.0
        pr = s["precision"] + s["recall"]
        s["f1"] = 2 * s["precision"] * s["recall"] / pr if pr else 0.0
        s["support"] = s["tp"] + s["fn"]
    scored = [s["f1"] for s in per.values() if s["support"]]
    tp, fp, fn = (sum(s[k] for s in per.values()) for k in ("tp", "fp", "fn"))
    return {"aspects": per, "macro_f1": float(np.mean(scored)) if scored else 0.0,
            "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "polarity_accuracy": pol_ok / pol_n if pol_n else 0.0, "n_polarity": pol_n, "n_clauses": len(rows)}
