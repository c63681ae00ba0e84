"""Model-family comparisons behind the text step's choices (docs/benchmarks.md).

Run:  .venv/bin/python bench/text_models.py [sentiment] [aspects] [errors]

sentiment: on the held-out splits of ``shoplens.text.sentiment.load_splits`` (Chinese
only, where the choice was hard): character n-gram TF-IDF with logistic regression or
a linear SVM, e5 embeddings with logistic regression, and the n-gram + e5 stack.
e5 embeddings go through the shared cache (~/.cache/shoplens/embeddings.sqlite); a cold
cache embeds ~17k Chinese reviews first (about 10 minutes on 2 cores).

aspects: how the learned aspect detector was chosen (validation on training clauses of
``data/aspect_eval.tsv`` only) and its test figures as the training set grew (about 15
minutes on 2 cores).

errors: the shipped (stacked) model's confident errors on the Chinese test split
(P > 0.9 or < 0.1 and wrong), with 25 of them printed (seed 0) for reading by hand.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from shoplens.text.aspects import load_aspects
from shoplens.text.embed import user_e5
from shoplens.text.labelled import is_test, load_eval_set
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


def _f1(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Macro (over aspects with support) and micro F1 of 0/1 matrices (clause x aspect)."""
    f1, tps, fps, fns = [], 0, 0, 0
    for j in range(truth.shape[1]):
        t, p = truth[:, j], pred[:, j]
        tp, fp, fn = int(((p == 1) & (t == 1)).sum()), int(((p == 1) & (t == 0)).sum()), int(((p == 0) & (t == 1)).sum())
        tps, fps, fns = tps + tp, fps + fp, fns + fn
        if tp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1)), 2 * tps / (2 * tps + fps + fns)


def aspects() -> None:
    """How the learned detector was chosen: 18 candidates by 5-fold validation on the
    randomly sampled training clauses (the test's distribution; the enriched ones always
    train), then the chosen one trained on growing prefixes of the training clauses and
    scored on the 550 test clauses, beside the lexicon."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.model_selection import KFold

    from shoplens.text.aspect_model import ngram_hashers

    rows = load_eval_set()
    lex = load_aspects()
    texts = [prepare(r["clause"]).text for r in rows]
    y = np.array([[a.name in r["labels"] for a in lex] for r in rows], int)
    hits = np.array([[a.search(t) for a in lex] for t in texts], float)
    test = np.array([is_test(r) for r in rows])
    rnd = np.array([r["sample"] in ("random", "fresh", "train-random") for r in rows]) & ~test
    e5 = user_e5(None).embed(texts)
    counts = ngram_hashers().transform([normalise(t) for t in texts])

    def features(kind: str, fit: np.ndarray) -> Any:
        grams = TfidfTransformer(sublinear_tf=True).fit(counts[fit]).transform(counts)
        parts = {"lex+e5": [csr_matrix(hits * 2), csr_matrix(e5)], "lex+char+word": [csr_matrix(hits * 2), grams],
                 "lex+e5+char+word": [csr_matrix(hits * 2), csr_matrix(e5), grams]}[kind]
        return hstack(parts).tocsr()

    def predict(x: Any, fit: np.ndarray, rows_out: np.ndarray, c: float, weight: str | None) -> np.ndarray:
        out = hits[rows_out].astype(int)
        for j in range(len(lex)):
            if y[fit, j].sum() >= 3:
                clf = LogisticRegression(C=c, class_weight=weight, max_iter=5000).fit(x[fit], y[fit, j])
                out[:, j] = clf.predict(x[rows_out])
        return out

    val, always = np.flatnonzero(rnd), np.flatnonzero(~test & ~rnd)
    print(f"validation on {len(val)} random training clauses; lexicon macro / micro {_f1(hits[val].astype(int), y[val])}")
    results = []
    for kind in ("lex+e5", "lex+char+word", "lex+e5+char+word"):
        for c in (1.0, 4.0, 16.0):
            for weight in ("balanced", None):
                pred = np.zeros((len(val), len(lex)), int)
                for a, b in KFold(5, shuffle=True, random_state=0).split(val):
                    fit = np.r_[always, val[a]]
                    pred[b] = predict(features(kind, fit), fit, val[b], c, weight)
                macro, micro = _f1(pred, y[val])
                results.append((macro, kind, c, weight))
                print(f"  {kind:<18} C={c:<5} class_weight={weight!s:<9} validation macro {macro:.3f} micro {micro:.3f}")
    _, kind, c, weight = max(results)
    print(f"chosen: {kind}, C={c}, class_weight={weight}")
    ids = np.array([r["id"] for r in rows])
    held = np.flatnonzero(test)
    print(f"{'lexicon':<34} test macro / micro {_f1(hits[held].astype(int), y[held])}")
    for last_id in (699, 1899, ids.max()):  # the sets as they grew: 550, 1,350, 2,150 training clauses
        fit = np.flatnonzero(~test & (ids <= last_id))
        print(f"{'chosen, ' + str(len(fit)) + ' training clauses':<34} test macro / micro "
              f"{_f1(predict(features(kind, fit), fit, held, c, weight), y[held])}")


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
