"""Sentiment by a cascade: the cheapest model that is sure answers.

1. The n-gram model (``sentiment.SentimentModel``) scores every text (thousands/s).
2. Per language, either that score stands or a stacked head over [n-gram logit,
   embedding (, VADER's scores for English)] from the bulk embedder (``[text]
   embedder``, USE by default: every text is embedded anyway for topics and centroids,
   so this step costs one dot product) replaces it, whichever validates better.
3. Texts whose score is still within the language's band of 0.5 are embedded with e5
   (``[text] refine = "e5"``) and scored by an e5 head. e5 is the strong feature
   (English 0.75 -> 0.88 on validation) and 15-25x slower than USE, so it sees only
   the texts the cheaper stages are unsure of.

Heads and bands ship in ``data/sentiment_heads.json``, trained by ``shoplens train
sentiment`` on the training splits only (``train_heads``): one logistic regression
per embedder and language on out-of-fold n-gram logits plus embeddings (the movie
snippets left out, as for the original head). Each band is the smallest on a grid
(steps of 0.025) whose cascade keeps 5-fold validation accuracy within ``TOLERANCE`` of
the configuration it replaced (one e5 head shared by both languages, on every text);
Chinese is judged on 600 training reviews labelled again by hand, because its corpus
labels are too noisy to show what e5 buys. No threshold sees a test text. The file
records the n-gram model's training hash and is refused for any other, as the
original head is. The validation figures are in the file (docs/benchmarks.md, "Text
at scale").

Evidence clauses use a cascade without the e5 stage (``Analysers``): e5 on unsure
clauses made e5 the bulk of the work again.

Why by hand: the heads are scikit-learn logistic regressions; the routing (which text
goes to which model, under which threshold) is ours.

Decisions depend only on the text and the shipped file: the same text always takes
the same route, whatever batch it arrives in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np

from shoplens.text.preprocess import detect_language
from shoplens.text.sentiment import SentimentModel, _logit, training_hash

HEADS_FILE = "data/sentiment_heads.json"
NGRAM = "ngram"  # the n-gram model's score as the base (the bulk embedder has no head, or validates worse)
LANGUAGES = ("zh", "en")
TOLERANCE = 0.002  # validation accuracy a band may give up against the replaced configuration
GRID = tuple(round(0.025 * i, 3) for i in range(21))  # 0 .. 0.5


def head_language(language: str) -> str:
    """The head a text is scored by: English for English, Chinese for the rest
    (``mixed`` texts are mostly Chinese by weight)."""
    return "en" if language == "en" else "zh"


_VADER: list[Any] = []


def vader(texts: Sequence[str]) -> np.ndarray:
    """VADER's compound, positive and negative scores per text (rules, ~19k texts/s): a
    feature of the English heads, where the n-gram model is weakest (validation 0.814 ->
    0.837 for the USE head)."""
    if not _VADER:
        from shoplens.errors import require

        _VADER.append(require("vaderSentiment.vaderSentiment", "text").SentimentIntensityAnalyzer())
    scores = [_VADER[0].polarity_scores(t) for t in texts]
    return np.array([[d["compound"], d["pos"], d["neg"]] for d in scores], float).reshape(len(scores), 3)


def features(head: dict[str, Any] | None, texts: Sequence[str], p: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """A head's inputs: [n-gram logit, embedding, (VADER scores when the head uses them)]."""
    parts = [_logit(p)[:, None], vectors]
    if head is None or head.get("vader"):
        parts.append(vader(texts))
    return np.hstack(parts)


def stack(head: dict[str, Any], texts: Sequence[str], p: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    w = np.r_[head["w_ngram"], head["w_embedding"], head.get("w_vader", [])]
    z = features(head, texts, p, vectors) @ w + head["bias"]
    return np.asarray(1 / (1 + np.exp(-z)))


def load_heads(digest: str) -> dict[str, Any] | None:
    """The shipped heads and bands when trained on the n-gram model with this training
    hash; None (with a warning) otherwise."""
    ref = resources.files("shoplens").joinpath(HEADS_FILE)
    if not ref.is_file():
        return None
    found = json.loads(ref.read_text("utf-8"))
    if found.get("ngram_hash") != digest:
        import warnings

        warnings.warn(f"sentiment heads {HEADS_FILE} were trained for n-gram artifact {found.get('ngram_hash')}, "
                      f"not {digest}: using the n-gram model alone (run 'shoplens train sentiment')", stacklevel=2)
        return None
    return dict(found)


class Cascade:
    """``predict_proba(texts, embeddings)`` (the ``Sentiment`` protocol) through the
    cascade; ``embeddings`` are the bulk embedder's vectors of ``texts`` (None: the
    n-gram model alone, as ``clause_polarity = "ngram"`` asks). ``routes`` counts which
    stage answered."""

    def __init__(self, model: SentimentModel, bulk_id: str | None, refine: Any | None = None,
                 heads: dict[str, Any] | None = None) -> None:
        self.model = model
        self.heads = heads if heads is not None else load_heads(training_hash_of(model)) or {}
        by = self.heads.get("heads", {})
        self.bulk_id = bulk_id if bulk_id in by else None
        self.base = self.bulk_id or NGRAM
        self.refine = refine if refine is not None and refine.id in by and refine.id != self.bulk_id else None
        # per language: which score the band applies to (the bulk head's or the n-gram model's) and the band
        found = self.heads.get("bands", {}).get(self.base, {})
        self.routes_by_language: dict[str, dict[str, Any]] = {}
        for lang in LANGUAGES:
            route = found.get(lang, {"base": self.base, "band": 0.0, "alone": self.base})
            self.routes_by_language[lang] = route if self.refine else {"base": route["alone"], "band": 0.0}
        self.routes: Counter[str] = Counter()

    def predict_proba(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        p, _via = self.score(texts, embeddings)
        return p

    def score(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """P(positive) per text and the stage that answered (``ngram``, or an embedder id)."""
        texts = list(texts)
        ngram = self.model.predict_proba(texts)
        p = ngram.copy()  # the heads stack on the n-gram score: keep it
        via = [NGRAM] * len(texts)
        if not texts or embeddings is None:
            self.routes.update(via)
            return p, via
        langs = np.array([head_language(detect_language(t)) for t in texts])
        heads = self.heads.get("heads", {})
        if self.bulk_id is not None:
            for lang in LANGUAGES:
                mine = np.flatnonzero(langs == lang)
                if len(mine) and self.routes_by_language[lang]["base"] == self.bulk_id:
                    p[mine] = stack(heads[self.bulk_id][lang], [texts[i] for i in mine], ngram[mine], embeddings[mine])
                    for i in mine:
                        via[i] = self.bulk_id
        if self.refine is not None:
            band = np.array([self.routes_by_language[lang]["band"] for lang in langs])
            unsure = np.flatnonzero(np.abs(p - 0.5) < band)
            if len(unsure):
                unsure_texts = [texts[i] for i in unsure]
                vectors = self.refine.embed(unsure_texts)
                base = ngram[unsure]
                for lang in LANGUAGES:
                    mine = np.flatnonzero(langs[unsure] == lang)
                    if len(mine):
                        p[unsure[mine]] = stack(heads[self.refine.id][lang], [unsure_texts[i] for i in mine],
                                                base[mine], vectors[mine])
                for i in unsure:
                    via[i] = self.refine.id
        self.routes.update(via)
        return p, via


def training_hash_of(model: SentimentModel) -> str:
    digest = model.training_hash_
    if digest is None:
        from shoplens.text.sentiment import load_splits

        digest = training_hash(load_splits())
    return str(digest)


# ---------------------------------------------------------------- training


def _cv(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 1, C: float = 3.0) -> np.ndarray:
    """Out-of-fold P(positive) of a logistic regression head."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros(len(y))
    for a, b in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        out[b] = LogisticRegression(C=C, max_iter=5000).fit(x[a], y[a]).predict_proba(x[b])[:, 1]
    return out


def _head(x: np.ndarray, y: np.ndarray, dim: int, C: float = 3.0) -> dict[str, Any]:
    """Weights of a head over ``features``: n-gram logit, ``dim`` embedding values, then
    VADER's three scores when ``x`` has them."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=5000).fit(x, y)
    w = clf.coef_[0]
    head = {"w_ngram": float(w[0]), "w_embedding": w[1:dim + 1].round(6).tolist(), "bias": float(clf.intercept_[0]),
            "n_train": len(y)}
    if x.shape[1] > dim + 1:
        head |= {"vader": True, "w_vader": w[dim + 1:].round(6).tolist()}
    return head


def choose_band(base: np.ndarray, refined: np.ndarray, y: np.ndarray, target: float) -> tuple[float, float, float]:
    """The smallest band on ``GRID`` whose cascade (``refined`` where ``base`` is within the
    band of 0.5) reaches ``target`` accuracy; (band, accuracy, share refined). The whole
    grid's last point (everything refined) when none does."""
    for band in GRID:
        unsure = np.abs(base - 0.5) < band
        acc = float(((np.where(unsure, refined, base) >= 0.5) == y).mean())
        if acc >= target:
            return band, acc, float(unsure.mean())
    return GRID[-1], float(((refined >= 0.5) == y).mean()), 1.0


def train_heads(oof: np.ndarray, texts: list[str], labels: np.ndarray, embedders: dict[str, Callable[[list[str]], np.ndarray]],
                refine_id: str, legacy: np.ndarray, digest: str, clean: dict[str, int] | None = None,
                legacy_head: dict[str, Any] | None = None) -> dict[str, Any]:
    """Heads per embedder and language, and the bands for each base.

    ``oof`` are out-of-fold n-gram P(positive) of ``texts``; ``embedders`` maps an
    embedder id to its embed function; ``legacy`` is the replaced configuration's
    out-of-fold P(positive) (the shared e5 head, ``legacy_head``), reported beside the
    rest and used as a language's e5 head where it validates better. ``clean``
    maps training texts labelled again by hand to their label: a language with such
    texts has its band judged on them (the corpus labels are noisy enough to hide
    what e5 buys: ``data/sentiment_zh_verified_val.tsv``)."""
    langs = np.array([head_language(detect_language(t)) for t in texts])
    out: dict[str, Any] = {"ngram_hash": digest, "tolerance": TOLERANCE, "heads": {}, "bands": {}, "validation": {}}
    val: dict[str, dict[str, np.ndarray]] = {NGRAM: {lang: oof[langs == lang] for lang in LANGUAGES}}
    for eid, embed in embedders.items():
        vectors = embed(texts)
        out["heads"][eid], val[eid] = {}, {}
        for lang in LANGUAGES:
            mine = np.flatnonzero(langs == lang)
            cheap = lang == "en" and eid != refine_id  # VADER helps the cheap English head (module docstring)
            x = features({"vader": cheap}, [texts[i] for i in mine], oof[mine], vectors[mine])
            out["heads"][eid][lang] = _head(x, labels[mine], vectors.shape[1])
            val[eid][lang] = _cv(x, labels[mine])
    val["replaced"] = {lang: legacy[langs == lang] for lang in LANGUAGES}
    for lang in LANGUAGES:
        mine = np.flatnonzero(langs == lang)
        sel, y = np.arange(len(mine)), labels[mine]  # where bands are judged
        judged = "corpus labels, out of fold"
        hand = [j for j, i in enumerate(mine) if clean and texts[i] in clean]
        if hand and clean:
            sel, y = np.array(hand), np.array([clean[texts[mine[j]]] for j in hand])
            judged = "training texts labelled again by hand, out of fold"
        per_language = float(((val[refine_id][lang][sel] >= 0.5) == y).mean())
        if legacy_head is not None and float(((val["replaced"][lang][sel] >= 0.5) == y).mean()) > per_language:
            # the shared head validates better for this language: e5 answers with it
            out["heads"][refine_id][lang] = {k: legacy_head[k] for k in ("w_ngram", "w_embedding", "bias", "n_train")}
            out["heads"][refine_id][lang]["shared"] = True
            val[refine_id][lang] = val["replaced"][lang]
        target = float(((val["replaced"][lang][sel] >= 0.5) == y).mean()) - TOLERANCE
        report: dict[str, Any] = {"n": len(mine), "judged_on": judged, "n_judged": len(sel)}
        report |= {k: round(float(((v[lang][sel] >= 0.5) == y).mean()), 4) for k, v in val.items()}
        routes: dict[str, dict[str, Any]] = {}
        for base in (NGRAM, *embedders):
            if base == refine_id:
                continue
            band, acc, _share = choose_band(val[base][lang][sel], val[refine_id][lang][sel], y, target)
            share = float((np.abs(val[base][lang] - 0.5) < band).mean())  # over all the language's texts
            routes[base] = {"base": base, "band": band, "accuracy": round(acc, 4), "refined_share": round(share, 4)}
            report[f"{base} -> {refine_id}"] = routes[base]
        # each bulk embedder takes the cheaper route that reaches the target (its own head, or the n-gram
        # model); without refinement, the one that validates better
        for bulk in (NGRAM, *embedders):
            if bulk != refine_id:
                best = min((routes[b] for b in {NGRAM, bulk}), key=lambda r: (r["refined_share"], r["base"] != NGRAM))
                alone = max((NGRAM, bulk), key=lambda b: (report[b], b == NGRAM))
                out["bands"].setdefault(bulk, {})[lang] = {"base": best["base"], "band": best["band"], "alone": alone}
        out["validation"][lang] = report
    return out


def hand_labelled(file: str = "data/sentiment_zh_verified_val.tsv") -> dict[str, int]:
    """Training texts labelled again by hand: text -> 1 positive / 0 negative (mixed left out)."""
    import csv
    import io

    body = resources.files("shoplens").joinpath(file).read_text("utf-8")
    rows = csv.DictReader(io.StringIO("".join(line for line in body.splitlines(True) if not line.startswith("#"))),
                          delimiter="\t")
    return {r["text"]: int(r["verified"] == "positive") for r in rows if r["verified"] != "mixed"}
