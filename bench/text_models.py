"""Model-family comparisons behind the text step's choices (docs/benchmarks.md).

Run:  .venv/bin/python bench/text_models.py [sentiment] [aspects] [errors]

sentiment: on the held-out splits of ``shoplens.text.sentiment.load_splits`` (Chinese
only, where the choice was hard): character n-gram TF-IDF with logistic regression or
a linear SVM, e5 embeddings with logistic regression, and the n-gram + e5 stack.
e5 embeddings go through the shared cache (~/.cache/shoplens/embeddings.sqlite); a cold
cache embeds ~17k Chinese reviews first (about 10 minutes on 2 cores).

aspects: per-aspect logistic regression trained on the 550 development clauses of
``data/aspect_eval.tsv`` and scored on the 150 held-out ones, against the lexicon.

errors: the shipped (stacked) model's confident errors on the Chinese test split
(P > 0.9 or < 0.1 and wrong), with 25 of them printed (seed 0) for reading by hand.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from shoplens.text.aspects import is_test, load_aspects, load_eval_set
from shoplens.text.embed import HashEmbedder, user_e5
from shoplens.text.preprocess import normalise, prepare
from shoplens.text.sentiment import SentimentModel, _logit, load_splits


def sentiment() -> None:
    splits = load_splits()
    zh_test, y_test = splits.test["zh"]
    zh_train = [t for t in splits.train_texts if prepare(t).language in ("zh", "mixed")]
    label = dict(zip(splits.train_texts, splits.train_labels.tolist(), strict=True))
    y_train = np.array([label[t] for t in zh_train])
    train_n, test_n = [normalise(t) for t in zh_train], [normalise(t) for t in zh_test]
    for name, vec, clf in (
        ("char 1-3 TF-IDF + LR", TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True), LogisticRegression(C=4, max_iter=3000)),
        ("char 2-5 TF-IDF + linear SVM", TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True), LinearSVC(C=0.5)),
    ):
        pred = clf.fit(vec.fit_transform(train_n), y_train).predict(vec.transform(test_n))
        print(f"{name:<40} zh accuracy {(pred == y_test).mean():.4f}")
    ngram = SentimentModel().fit(zh_train, y_train)
    p_test = ngram.predict_proba(zh_test)
    print(f"{'hashed word 1-2 + char 1-4 + LR (ours)':<40} zh accuracy {((p_test >= 0.5) == y_test).mean():.4f}")
    emb = user_e5(lambda d, t, r: print(f"  embedding {d:,}/{t:,} ({r:.0f}/s)", end="\r", file=sys.stderr))
    e_train, e_test = emb.embed(zh_train), emb.embed(zh_test)
    lr = LogisticRegression(C=1, max_iter=3000).fit(e_train, y_train)
    print(f"{'e5 embedding + LR':<40} zh accuracy {(lr.predict(e_test) == y_test).mean():.4f}")
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(zh_train))
    for a, b in StratifiedKFold(5, shuffle=True, random_state=0).split(e_train, y_train):
        oof[b] = SentimentModel().fit([zh_train[i] for i in a], y_train[a]).predict_proba([zh_train[i] for i in b])
    stack = LogisticRegression(C=3, max_iter=5000).fit(np.c_[_logit(oof), e_train], y_train)
    pred = stack.predict(np.c_[_logit(p_test), e_test])
    print(f"{'n-gram + e5 stacked (zh-only head)':<40} zh accuracy {(pred == y_test).mean():.4f}")


def aspects() -> None:
    rows = load_eval_set()
    lex = load_aspects()
    names = [a.name for a in lex]
    texts = [prepare(r["clause"]).text for r in rows]
    y = np.array([[a in r["labels"] for a in names] for r in rows], int)
    hits = np.array([[a.search(t) for a in lex] for t in texts], int)
    dev = np.array([not is_test(r) for r in rows])
    e5, hashed = user_e5(None).embed(texts), HashEmbedder().embed(texts)

    def score(pred: np.ndarray) -> str:
        f1, tps, fps, fns = [], 0, 0, 0
        for j in range(len(names)):
            t, p = y[~dev, j], pred[~dev, j]
            tp, fp, fn = int(((p == 1) & (t == 1)).sum()), int(((p == 1) & (t == 0)).sum()), int(((p == 0) & (t == 1)).sum())
            tps, fps, fns = tps + tp, fps + fp, fns + fn
            if tp + fn:
                f1.append(2 * tp / (2 * tp + fp + fn))
        return f"held-out macro-F1 {np.mean(f1):.3f}, micro-F1 {2 * tps / (2 * tps + fps + fns):.3f}"

    print(f"{'lexicon (shipped)':<34} {score(hits)}")
    for name, x in (("LR on [lexicon, e5]", np.c_[hits * 3, e5]), ("LR on [lexicon, char hash]", np.c_[hits * 3, hashed]),
                    ("LR on e5", e5)):
        pred = hits.copy()
        for j in range(len(names)):
            if y[dev, j].sum() >= 3:
                clf = LogisticRegression(C=1, class_weight="balanced", max_iter=3000).fit(x[dev], y[dev, j])
                pred[~dev, j] = clf.predict(x[~dev])
        print(f"{name:<34} {score(pred)}")


def errors() -> None:
    from shoplens.text.sentiment import load_sentiment

    texts, labels = load_splits().test["zh"]
    p = load_sentiment().predict_proba(texts, user_e5(None).embed(texts))
    wrong = np.where(((p >= 0.5) != labels) & ((p > 0.9) | (p < 0.1)))[0]
    print(f"{len(wrong)} confident errors of {int(((p >= 0.5) != labels).sum())} errors on {len(texts):,} zh test texts")
    for i in np.random.default_rng(0).choice(wrong, min(25, len(wrong)), replace=False):
        print(f"label {labels[i]}  P(positive) {p[i]:.2f}  {texts[i][:90]}")


if __name__ == "__main__":
    parts = sys.argv[1:] or ["sentiment", "aspects", "errors"]
    if "sentiment" in parts:
        sentiment()
    if "aspects" in parts:
        aspects()
    if "errors" in parts:
        errors()
