"""Learned aspect detection: ``[text] aspect_detector = "learned"`` (the default) or
``"learned-e5"``.

One logistic regression per aspect over the views of a clause: the lexicon's word hits
(``rules/aspects.toml``), hashed character 1-3-grams plus jieba / English words (TF-IDF),
and, for ``learned-e5``, the clause's e5 embedding (better, at one embedding per
clause). It is trained on the training clauses of ``data/aspect_eval.tsv`` (every row
that ``is_test`` does not mark: 2,150 hand-labelled clauses from the sentiment corpora),
so the 550 test clauses measure it exactly. C = 16 and balanced class weights were
chosen by 5-fold validation on the randomly sampled training clauses only
(docs/benchmarks.md, ``bench/text_models.py aspects``).

Why by hand: scikit-learn supplies the models; what is ours is the feature union (the
lexicon stays the strongest single signal, and the model learns when to overrule it).

The model trains on first use in seconds (learned-e5 also embeds the training clauses
once, through the shop's embedding cache) and is cached as ``aspects-<hash>.pkl`` beside
the sentiment artifact; the hash covers the training rows, the aspect definitions, the
feature config, the embedder and the scikit-learn version. It applies to the bundled
aspects only: the labels name those eight.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from shoplens.text.embed import Embedder
from shoplens.text.preprocess import normalise, prepare, tokens

MODEL_CONFIG: dict[str, Any] = {"family": "logistic regression per aspect on [lexicon, char1-3 + words tf-idf, embedding]",
                                "n_features": 2**18, "lexicon_weight": 2.0, "C": 16.0, "class_weight": "balanced",
                                "version": 2}


def ngram_hashers() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.pipeline import make_union

    n = MODEL_CONFIG["n_features"]
    return make_union(
        HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), n_features=n, alternate_sign=False, norm=None),
        HashingVectorizer(analyzer=tokens, n_features=n, alternate_sign=False, norm=None))


class AspectClassifier:
    """``predict(clauses, hits, vectors)`` -> boolean matrix (clause x aspect).

    ``hits`` is the lexicon's 0/1 matrix for the same clauses; ``vectors`` their
    embeddings when the model was trained with an embedder (else None)."""

    def __init__(self, names: Sequence[str], embedder_id: str | None) -> None:
        self.names, self.embedder_id = list(names), embedder_id

    def _matrix(self, clauses: Sequence[str], hits: np.ndarray, vectors: np.ndarray | None) -> Any:
        from scipy.sparse import csr_matrix, hstack

        parts = [csr_matrix(hits * MODEL_CONFIG["lexicon_weight"]),
                 self.tfidf_.transform(self.hashers_.transform([normalise(c) for c in clauses]))]
        if self.embedder_id is not None:
            if vectors is None:
                raise ValueError(f"aspect model was trained with embeddings from {self.embedder_id}: pass them")
            parts.append(csr_matrix(vectors))
        return hstack(parts).tocsr()

    def fit(self, clauses: Sequence[str], hits: np.ndarray, vectors: np.ndarray | None, labels: np.ndarray) -> AspectClassifier:
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression

        self.hashers_ = ngram_hashers()
        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(self.hashers_.transform([normalise(c) for c in clauses]))
        x = self._matrix(clauses, hits, vectors)
        self.models_: list[Any] = []
        for j in range(len(self.names)):
            y = labels[:, j]
            if y.sum() < 3:  # too few examples to learn from: the lexicon decides alone
                self.models_.append(None)
                continue
            model = LogisticRegression(C=MODEL_CONFIG["C"], class_weight=MODEL_CONFIG["class_weight"], max_iter=5000)
            self.models_.append(model.fit(x, y).sparsify())  # hashed n-grams never seen keep a zero weight
        return self

    def predict(self, clauses: Sequence[str], hits: np.ndarray, vectors: np.ndarray | None) -> np.ndarray:
        if not clauses:
            return np.zeros((0, len(self.names)), bool)
        x = self._matrix(clauses, hits, vectors)
        out = hits.astype(bool).copy()
        for j, model in enumerate(self.models_):
            if model is not None:
                out[:, j] = model.predict(x).astype(bool)
        return out


def training_rows() -> list[dict[str, Any]]:
    """The labelled clauses the model may learn from: never a test row."""
    from shoplens.text.labelled import is_test, load_eval_set

    return [r for r in load_eval_set() if not is_test(r)]


def _digest(rows: list[dict[str, Any]], aspects: Sequence[Any], embedder_id: str | None) -> str:
    import sklearn

    h = hashlib.sha256(json.dumps({"config": MODEL_CONFIG, "embedder": embedder_id, "sklearn": sklearn.__version__},
                                  sort_keys=True).encode())
    for r in rows:
        h.update(f"{r['clause']}\t{sorted(r['labels'].items())}\n".encode())
    for a in aspects:
        h.update(f"{a.name}:{a.pattern.pattern}:{a.exclude.pattern if a.exclude else ''}\n".encode())
    return h.hexdigest()[:16]


_LOADED: dict[str, AspectClassifier] = {}


def load_aspect_model(aspects: Sequence[Any], embedder: Embedder | None) -> AspectClassifier:
    """The trained model for these aspects and embedder: loaded once per process, from
    the model cache or trained now."""
    from shoplens.text.sentiment import model_dir

    rows = training_rows()
    embedder_id = embedder.id if embedder is not None else None
    path = model_dir() / f"aspects-{_digest(rows, aspects, embedder_id)}.pkl"
    if str(path) in _LOADED:
        return _LOADED[str(path)]
    if path.exists():
        with open(path, "rb") as fh:
            _LOADED[str(path)] = pickle.load(fh)
        return _LOADED[str(path)]
    names = [a.name for a in aspects]
    clauses = [prepare(r["clause"]).text for r in rows]  # as the build sees them: masked, normalised
    hits = np.array([[a.search(c) for a in aspects] for c in clauses], float)
    labels = np.array([[n in r["labels"] for n in names] for r in rows], int)
    vectors = embedder.embed(clauses) if embedder is not None else None
    model = AspectClassifier(names, embedder_id).fit(clauses, hits, vectors, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(model, fh)
    tmp.replace(path)  # a killed run never leaves half a model behind
    _LOADED[str(path)] = model
    return model
