"""Keywords per text and interests per customer.

Methods (``[text] keywords``):

- ``tfidf`` (default): Chinese by jieba's TF-IDF (its bundled IDF table), English by
  TF-IDF with a fixed IDF table from the bundled English review corpus, stop words
  removed; so a text's keywords never depend on the other texts of its batch.
- ``textrank``: jieba's TextRank for Chinese; English falls back to ``tfidf``.
- ``keybert``: KeyBERT's idea without its torch dependency: candidate words and
  2-grams are embedded with the text embedder and ranked by cosine similarity to the
  whole text, with maximal marginal relevance for diversity. Costs one embedding per
  candidate, so it suits ``analyze`` and small corpora.

``interests`` maps a customer's keywords onto the shop's category tree: a keyword that
names a category (or is named by one) becomes that category path.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from shoplens.text.embed import Embedder
from shoplens.text.preprocess import PLACEHOLDER, Prepared, _jieba, tokens

_ZH_STOP = set("的了是我也很都就和在有不这那还吧啊呢吗说要会个一又被把给让从对到得着过为与及")
_ZH_STOP |= {"没有", "一个", "我们", "你们", "他们", "这个", "那个", "就是", "但是", "不过", "可以", "感觉", "觉得",
             "还是", "非常", "比较", "真的", "已经", "因为", "所以", "如果", "而且", "自己", "什么", "东西", "时候"}


@lru_cache(maxsize=1)
def _en_stop() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS | {"im", "ive", "dont", "didnt", "doesnt", "just", "really", "got"})


def candidates(text: str) -> list[str]:
    """Content words (and English 2-grams) of a text, in order, without stop words."""
    words = [w for w in tokens(text) if len(w) > 1 and w not in _ZH_STOP and w not in _en_stop()]
    latin = [w for w in words if w.isascii()]
    pairs = [f"{a} {b}" for a, b in zip(latin, latin[1:], strict=False)]
    return list(dict.fromkeys(words + pairs))


def _zh_tfidf(text: str, k: int, method: str) -> list[str]:
    import jieba.analyse

    _jieba()
    fn = jieba.analyse.textrank if method == "textrank" else jieba.analyse.extract_tags
    return [w for w in fn(PLACEHOLDER.sub(" ", text), topK=k * 2) if w not in _ZH_STOP and len(w) > 1][:k]


_EN_TOKEN = re.compile(r"[a-z][a-z'-]+")


@lru_cache(maxsize=1)
def _en_idf() -> tuple[dict[str, float], float]:
    """Inverse document frequencies of English words in the bundled real review corpora
    (Rotten Tomatoes snippets and, when its source package is present, the VADER Amazon
    product-review sentences), smoothed as scikit-learn does, and their median for
    words they lack: a fixed table, like jieba's for Chinese, so a text's keywords do
    not depend on which texts it was analysed with (batches, Spark partitions, the
    result cache)."""
    from shoplens.datasets.corpora import amazon_snippets, english_reviews
    from shoplens.errors import MissingDependencyError

    pos, neg = english_reviews()
    try:
        products = tuple(t for t, _r, _id in amazon_snippets())
    except MissingDependencyError:
        products = ()
    docs = [set(_en_words(t)) for t in (*pos, *neg, *products)]
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
    return idf, float(np.median(list(idf.values()))) if idf else 1.0


def _en_words(text: str) -> list[str]:
    stop = _en_stop()
    return [w for w in _EN_TOKEN.findall(" ".join(w for w in tokens(text) if w.isascii())) if w not in stop]


def _en_tfidf(texts: list[str], k: int) -> list[list[str]]:
    """Top ``k`` words per text by sublinear tf x idf (ties: the earlier word first)."""
    idf, unknown = _en_idf()
    out = []
    for text in texts:
        words = _en_words(text)
        tf = Counter(words)
        first = {w: i for i, w in reversed(list(enumerate(words)))}
        score = {w: (1 + math.log(c)) * idf.get(w, unknown) for w, c in tf.items()}
        out.append(sorted(score, key=lambda w: (-score[w], first[w]))[:k])
    return out


def keybert(text: str, embedder: Embedder, k: int = 5, diversity: float = 0.5) -> list[str]:
    """Candidates ranked by similarity to the text, re-ranked by maximal marginal relevance."""
    cands = candidates(text)
    if not cands:
        return []
    doc = embedder.embed([text])[0]
    emb = embedder.embed(cands)
    rel = emb @ doc
    chosen = [int(np.argmax(rel))]
    while len(chosen) < min(k, len(cands)):
        redundancy = (emb @ emb[chosen].T).max(axis=1)
        score = (1 - diversity) * rel - diversity * redundancy
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return [cands[i] for i in chosen]


class KeywordExtractor:
    """Top-``k`` keywords per text by the configured method."""

    def __init__(self, method: str = "tfidf", k: int = 5, embedder: Embedder | None = None) -> None:
        if method == "keybert" and embedder is None:
            raise ValueError("the keybert method needs an embedder")
        self.method, self.k, self.embedder = method, k, embedder

    def extract(self, prepared: Sequence[Prepared]) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in prepared]
        en_idx = []
        for i, p in enumerate(prepared):
            if p.empty:
                continue
            if self.method == "keybert":
                assert self.embedder is not None
                out[i] = keybert(p.text, self.embedder, self.k)
            elif p.language in ("zh", "mixed"):
                out[i] = _zh_tfidf(p.text, self.k, self.method)
            else:
                en_idx.append(i)
        for i, kw in zip(en_idx, _en_tfidf([prepared[i].text for i in en_idx], self.k), strict=True):
            out[i] = kw
        return out


def interests(keywords: Sequence[Sequence[str]], categories: Sequence[str], top: int = 5) -> tuple[list[str], list[str]]:
    """(top keywords, category paths they name) for one customer's texts.

    >>> interests([["手机", "电池"], ["手机", "屏幕"]], ["数码/手机", "数码/耳机", "图书/小说"])
    (['手机', '电池', '屏幕'], ['数码/手机'])
    """
    counts = Counter(w for kws in keywords for w in kws)
    top_words = [w for w, _ in counts.most_common(top)]
    matched: list[str] = []
    for w, _ in counts.most_common():
        for path in categories:
            leaves = [s for s in path.split("/") if len(s) >= 2]
            if any(w == s or (len(w) >= 2 and (w in s or s in w)) for s in leaves) and path not in matched:
                matched.append(path)
    return top_words, matched[:top]
