"""Topics: cluster text embeddings, label clusters with class-based TF-IDF terms.

BERTopic's recipe rebuilt on scikit-learn, because BERTopic itself installs
sentence-transformers and torch: reduce the embeddings (PCA instead of UMAP), cluster
density-based (HDBSCAN), then reduce outliers by assigning a noise text to its most
similar topic when that similarity reaches the topic's least similar member's
similarity (BERTopic's ``reduce_outliers(strategy="embeddings")``). Texts still left
over are outliers (topic -1); their share is reported. When HDBSCAN finds fewer than two
clusters, k-means with k chosen by silhouette takes over (no outliers).

Texts are clustered per language (``groups``): in a multilingual space the first split
is otherwise the language, not the subject. Large corpora are clustered on a seeded sample (``max_fit``) and the rest assigned to
the nearest topic by the same rule, so the cost stays bounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Topic:
    topic_id: int
    size: int
    terms: list[str]

    @property
    def label(self) -> str:
        return " / ".join(self.terms[:3])


def c_tf_idf(docs_tokens: Sequence[Sequence[str]], labels: np.ndarray, top: int = 8) -> dict[int, list[str]]:
    """Top terms per class: tf within the class x log(1 + mean class size / term frequency overall)."""
    classes = sorted(int(c) for c in set(labels.tolist()) if c >= 0)
    counts: dict[int, Counter[str]] = {c: Counter() for c in classes}
    for toks, lab in zip(docs_tokens, labels.tolist(), strict=True):
        if lab >= 0:
            counts[lab].update(toks)
    total: Counter[str] = Counter()
    for c in counts.values():
        total.update(c)
    avg = np.mean([sum(c.values()) for c in counts.values()]) if counts else 0.0
    out = {}
    for cls, cnt in counts.items():
        n = sum(cnt.values()) or 1
        scored = {w: (f / n) * np.log(1 + avg / total[w]) for w, f in cnt.items()}
        out[cls] = [w for w, _ in sorted(scored.items(), key=lambda kv: -kv[1])[:top]]
    return out


class TopicModel:
    """``fit_predict(embeddings, tokens)`` -> topic id per text (-1 = outlier); ``topics_``."""

    def __init__(self, min_topic_size: int = 10, max_fit: int = 20_000, seed: int = 0) -> None:
        self.min_topic_size, self.max_fit, self.seed = min_topic_size, max_fit, seed

    def _cluster(self, x: np.ndarray) -> np.ndarray:
        from sklearn.cluster import HDBSCAN, KMeans
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score

        reduced = PCA(n_components=min(10, x.shape[1], len(x) - 1), random_state=self.seed).fit_transform(x)
        size = max(self.min_topic_size, len(x) // 200)
        labels = HDBSCAN(min_cluster_size=size, min_samples=max(2, size // 2), copy=True).fit_predict(reduced)
        if len(set(labels.tolist()) - {-1}) >= 2:
            return np.asarray(labels)
        best, best_score = np.zeros(len(x), int), -1.0
        for k in range(2, min(12, len(x) // max(2, self.min_topic_size)) + 1):
            lab = KMeans(k, n_init=3, random_state=self.seed).fit_predict(reduced)
            score = silhouette_score(reduced, lab, sample_size=min(len(x), 3000), random_state=self.seed)
            if score > best_score:
                best, best_score = lab, score
        return np.asarray(best)

    def fit_predict(self, embeddings: np.ndarray, docs_tokens: Sequence[Sequence[str]],
                    groups: Sequence[str] | None = None) -> np.ndarray:
        """Topic per text. With ``groups`` (e.g. languages) each group is clustered on its
        own, so topics are about content rather than which language a text is in."""
        n = len(embeddings)
        keys = list(groups) if groups is not None else [""] * n
        labels = np.full(n, -1)
        cents: list[np.ndarray] = []
        floors: list[float] = []
        owners: list[str] = []
        for g in dict.fromkeys(keys):
            idx = np.array([i for i, k in enumerate(keys) if k == g])
            lab, c, f = self._fit_group(embeddings[idx])
            labels[idx] = np.where(lab >= 0, lab + len(cents), -1)
            cents.extend(c)
            floors.extend(f)
            owners.extend([g] * len(c))
        self.centroids_, self.floors_, self.groups_ = np.array(cents), np.array(floors), owners
        terms = c_tf_idf(docs_tokens, labels)
        self.topics_ = [Topic(t, int((labels == t).sum()), terms.get(t, [])) for t in range(len(cents))]
        self.outlier_share_ = float((labels == -1).mean()) if n else 0.0
        return labels

    def assign(self, embeddings: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
        """Topic per new text: the most similar topic of its group, when the similarity
        reaches that topic's floor (the least similar member it was fitted with); else -1."""
        keys = list(groups) if groups is not None else [""] * len(embeddings)
        labels = np.full(len(embeddings), -1)
        if not len(embeddings) or not len(self.centroids_):
            return labels
        sims = embeddings @ self.centroids_.T
        owner = np.asarray(self.groups_)
        for i, g in enumerate(keys):
            mine = np.where(owner == g)[0]
            if len(mine):
                j = mine[np.argmax(sims[i, mine])]
                labels[i] = j if sims[i, j] >= self.floors_[j] else -1
        return labels

    def _fit_group(self, emb: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
        n = len(emb)
        if n < 2 * self.min_topic_size:
            c = emb.mean(axis=0)
            return np.zeros(n, int), [c / (np.linalg.norm(c) or 1.0)], [-1.0]
        rng = np.random.default_rng(self.seed)
        fit_idx = rng.choice(n, self.max_fit, replace=False) if n > self.max_fit else np.arange(n)
        fit_labels = self._cluster(emb[fit_idx])
        ids = sorted(set(fit_labels.tolist()) - {-1})
        cents = np.stack([emb[fit_idx][fit_labels == t].mean(axis=0) for t in ids])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        floors = [float(np.min(emb[fit_idx][fit_labels == t] @ cents[j])) for j, t in enumerate(ids)]
        labels = np.full(n, -1)
        labels[fit_idx] = [ids.index(t) if t >= 0 else -1 for t in fit_labels.tolist()]
        todo = np.where(labels == -1)[0]
        if len(todo):
            sims = emb[todo] @ cents.T
            best = sims.argmax(axis=1)
            ok = sims[np.arange(len(todo)), best] >= np.asarray(floors)[best]
            labels[todo[ok]] = best[ok]
        return labels, list(cents), floors
