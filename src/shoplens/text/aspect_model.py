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


SHIPPED = "data/aspects_model.npz"  # the trained default model (no embeddings): a first run trains nothing


def export_model(model: AspectClassifier, digest: str, path: Any) -> Any:
    """The model as plain arrays tagged with ``digest`` (``_digest``): IDF where it is not
    the default, and each aspect's non-zero weights (no pickle)."""
    if model.embedder_id is not None:
        raise ValueError("only the model without embeddings is shipped")
    idf = model.tfidf_.idf_
    seen = np.flatnonzero(idf != idf.max()).astype(np.int32)
    arrays: dict[str, Any] = {"digest": np.array(digest), "names": np.array(model.names), "n": np.array(len(idf)),
                              "idf_idx": seen, "idf": idf[seen], "idf_default": np.array(float(idf.max()))}
    for j, m in enumerate(model.models_):
        if m is None:
            continue
        coef = m.coef_.tocsr() if hasattr(m.coef_, "tocsr") else m.coef_
        from scipy.sparse import csr_matrix

        coef = csr_matrix(coef)
        arrays[f"w{j}_idx"], arrays[f"w{j}"] = coef.indices.astype(np.int32), coef.data
        arrays[f"w{j}_n"], arrays[f"b{j}"] = np.array(coef.shape[1]), m.intercept_
    np.savez_compressed(path, **arrays)
    return path


def load_shipped(path: Any, digest: str) -> AspectClassifier | None:
    """The shipped model when made for ``digest`` (same rows, aspects, config, embedder
    and scikit-learn version), else None."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    with np.load(path) as z:
        if str(z["digest"]) != digest:
            return None
        model = AspectClassifier([str(n) for n in z["names"]], None)
        idf = np.full(int(z["n"]), float(z["idf_default"]))
        idf[z["idf_idx"]] = z["idf"]
        model.hashers_ = ngram_hashers()
        model.tfidf_ = TfidfTransformer(sublinear_tf=True)
        model.tfidf_.idf_ = idf
        model.models_ = []
        for j in range(len(model.names)):
            if f"w{j}" not in z:
                model.models_.append(None)
                continue
            n = int(z[f"w{j}_n"])
            clf = LogisticRegression(C=MODEL_CONFIG["C"], class_weight=MODEL_CONFIG["class_weight"])
            clf.classes_ = np.array([0, 1])
            clf.coef_ = csr_matrix((z[f"w{j}"], z[f"w{j}_idx"], np.array([0, len(z[f"w{j}_idx"])])), shape=(1, n))
            clf.intercept_ = z[f"b{j}"]
            model.models_.append(clf)
    return model


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


def train_model(aspects: Sequence[Any], embedder: Embedder | None,
                rows: list[dict[str, Any]] | None = None) -> AspectClassifier:
    """Train on the training clauses (seconds; learned-e5 also embeds them)."""
    rows = rows if rows is not None else training_rows()
    names = [a.name for a in aspects]
    clauses = [prepare(r["clause"]).text for r in rows]  # as the build sees them: masked, normalised
    hits = np.array([[a.search(c) for a in aspects] for c in clauses], float)
    labels = np.array([[n in r["labels"] for n in names] for r in rows], int)
    vectors = embedder.embed(clauses) if embedder is not None else None
    return AspectClassifier(names, embedder.id if embedder is not None else None).fit(clauses, hits, vectors, labels)


def ship(path: Any) -> str:
    """Train the default model (bundled aspects, no embeddings) and write it to ``path``;
    returns its digest (``shoplens train sentiment`` ships it with the sentiment model)."""
    from shoplens.text.aspects import load_aspects

    aspects = load_aspects(None)
    rows = training_rows()
    digest = _digest(rows, aspects, None)
    export_model(train_model(aspects, None, rows), digest, path)
    return digest


def load_aspect_model(aspects: Sequence[Any], embedder: Embedder | None) -> AspectClassifier:
    """The trained model for these aspects and embedder: loaded once per process, from
    the model cache or trained now."""
    from shoplens.text.sentiment import model_dir

    rows = training_rows()
    embedder_id = embedder.id if embedder is not None else None
    digest = _digest(rows, aspects, embedder_id)
    path = model_dir() / f"aspects-{digest}.pkl"
    if str(path) in _LOADED:
        return _LOADED[str(path)]
    from importlib import resources

    shipped = resources.files("shoplens").joinpath(SHIPPED)
    if embedder_id is None and shipped.is_file() and (found := load_shipped(shipped, digest)) is not None:
        _LOADED[str(path)] = found
        return found
    if path.exists():
        with open(path, "rb") as fh:
            _LOADED[str(path)] = pickle.load(fh)
        return _LOADED[str(path)]
    model = train_model(aspects, embedder, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(model, fh)
    tmp.replace(path)  # a killed run never leaves half a model behind
    _LOADED[str(path)] = model
    return model
