"""The build's text step: analyse every stored text, then aggregate per customer.

Writes into the snapshot schema:

- ``text_analysis``: one row per text (language, sentiment, label, keywords, topic);
- ``text_aspects``: one row per aspect mention with polarity and the evidence span;
- ``text_topics``: topic id, size and c-TF-IDF terms;
- ``customer_text_features``: per customer with at least one text (customers without
  text are absent, so the profile's LEFT JOIN gives explicit NULLs, never zeros).

Texts are read already masked (ingest masks them) and masked again by ``prepare``.
Per-customer aggregates are SQL over those tables (DuckDB); only the embedding centroid
and interests are computed in numpy / Python.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shoplens.config import Config
from shoplens.engine.base import Snapshot
from shoplens.pipeline.stage import BaseStage, BuildContext, StageReport, TableSpec
from shoplens.store import Store
from shoplens.text.analysers import Analysers, TextResult, text_tokens
from shoplens.text.aspects import load_aspects
from shoplens.text.keywords import interests
from shoplens.text.sentiment import label
from shoplens.text.topics import Topic, TopicModel

BATCH = 2000
ANALYSIS = pa.schema([("text_id", pa.string()), ("customer_id", pa.string()), ("created_at", pa.timestamp("us")),
                      ("language", pa.string()), ("sentiment", pa.float64()), ("sentiment_label", pa.string()),
                      ("keywords", pa.list_(pa.string())), ("topic_id", pa.int32()), ("truncated", pa.bool_())])
ASPECTS = pa.schema([("text_id", pa.string()), ("customer_id", pa.string()), ("aspect", pa.string()),
                     ("polarity", pa.string()), ("score", pa.float64()), ("evidence", pa.string()),
                     ("span_start", pa.int32()), ("span_end", pa.int32()), ("via", pa.string())])
TOPICS = pa.schema([("topic_id", pa.int32()), ("size", pa.int64()), ("terms", pa.list_(pa.string())),
                    ("label", pa.string())])
EXTRAS = pa.schema([("customer_id", pa.string()), ("top_keywords", pa.list_(pa.string())),
                    ("interests", pa.list_(pa.string())), ("embedding_centroid", pa.list_(pa.float32()))])


def _arrow(columns: dict[str, list[Any]], spec: pa.Schema) -> pa.Table:
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in spec}, schema=spec)


def customer_text_schema(cfg: Config) -> pa.Schema:
    """``customer_text_features``: one ``aspect_<name>`` column per configured aspect."""
    aspects = [a.name for a in load_aspects(_aspects_file(cfg))]
    return pa.schema([("customer_id", pa.string()), ("n_texts", pa.int64()), ("sentiment_mean", pa.float64()),
                      ("sentiment_trend", pa.float64()), ("negative_share", pa.float64()),
                      ("last_text_at", pa.timestamp("us")), *((f"aspect_{a}", pa.float64()) for a in aspects),
                      ("n_aspect_mentions", pa.int64()), ("top_keywords", pa.list_(pa.string())),
                      ("interests", pa.list_(pa.string())), ("topic_shares", pa.map_(pa.int32(), pa.float64())),
                      ("embedding_centroid", pa.list_(pa.float32()))])


def _aspects_file(cfg: Config) -> str | None:
    return None if cfg.text.aspects == "default" else str(cfg.resolve(cfg.text.aspects))


class TextStage(BaseStage):
    """Language, sentiment, aspects with evidence, keywords and topics per text; then
    per-customer text features."""

    name = "text"
    needs = ("texts", "products")
    makes = (TableSpec("text_analysis", ANALYSIS, ("text_id",)), TableSpec("text_aspects", ASPECTS, ("text_id", "aspect")),
             TableSpec("text_topics", TOPICS, ("topic_id",)), TableSpec("customer_text_features", customer_text_schema))

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.text.enabled else "disabled in [text]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        file = _aspects_file(cfg)
        return cfg.text.model_dump(exclude={"enabled", "cache"}) | {
            "aspects": Path(file).read_text("utf-8") if file else "default"}

    def run(self, ctx: BuildContext) -> StageReport:
        return StageReport(summary=text_step(ctx, self.makes))


def text_step(ctx: BuildContext, makes: tuple[TableSpec, ...]) -> dict[str, Any]:
    """Run the text analysers over ``texts`` and write the four tables; returns a summary."""
    cfg, store = ctx.cfg, ctx.engine.store  # type: ignore[attr-defined]
    tc = cfg.text
    on_info = ctx.on_info
    rows = store.con.sql("SELECT text_id, customer_id, text, created_at FROM texts ORDER BY text_id").to_arrow_table()
    n = rows.num_rows

    def progress(done: int, total: int, rate: float) -> None:
        on_info(f"text: embedded {done:,}/{total:,} new texts ({rate:.1f} texts/s)")

    aspect_list = load_aspects(_aspects_file(cfg))
    results: list[TextResult] = []
    vectors = np.zeros((n, 1), np.float32)
    embedded = hits = 0
    if n:
        analysers = Analysers.for_shop(cfg, progress)
        vectors = np.zeros((n, analysers.embedder.dim), np.float32)
        texts = rows.column("text").to_pylist()
        for i in range(0, n, BATCH):
            on_info(f"text: analysing {i:,}/{n:,}")
            res, vec = analysers.analyse(texts[i : i + BATCH])
            results.extend(res)
            assert vec is not None
            vectors[i : i + len(res)] = vec
        analysers.embedder.close()
        embedded, hits = analysers.embedder.misses, analysers.embedder.hits
    live = np.array([not r.prepared.empty for r in results], bool)
    topics = np.full(n, -1)
    model = TopicModel(min_topic_size=tc.min_topic_size)
    found: list[Topic] = []
    if tc.topics and live.any():
        on_info("text: topics")
        idx = np.where(live)[0]
        langs = ["en" if results[i].prepared.language == "en" else "zh" for i in idx]
        topics[idx] = model.fit_predict(vectors[idx], [t for t, ok in zip(text_tokens(results), live, strict=True) if ok], langs)
        found = model.topics_
    ids, cids = rows.column("text_id").to_pylist(), rows.column("customer_id").to_pylist()
    with_topic = tc.topics and n
    analysis, aspects, topics_spec, per_customer = makes
    ctx.write(analysis, _arrow({
        "text_id": ids, "customer_id": cids, "created_at": rows.column("created_at").to_pylist(),
        "language": [r.prepared.language for r in results],
        "sentiment": [r.sentiment for r in results],
        "sentiment_label": [None if r.sentiment is None else label(r.sentiment) for r in results],
        "keywords": [r.keywords for r in results],
        "topic_id": [int(t) if with_topic and live[i] else None for i, t in enumerate(topics.tolist())],
        "truncated": [r.prepared.truncated for r in results],
    }, ANALYSIS))
    mentions = [(ids[i], cids[i], h) for i, r in enumerate(results) for h in r.aspects]
    ctx.write(aspects, _arrow({
        "text_id": [t for t, _c, _h in mentions], "customer_id": [c for _t, c, _h in mentions],
        **{k: [getattr(h, a) for _t, _c, h in mentions] for k, a in
           (("aspect", "aspect"), ("polarity", "polarity"), ("score", "score"), ("evidence", "evidence"),
            ("span_start", "start"), ("span_end", "end"), ("via", "via"))},
    }, ASPECTS))
    ctx.write(topics_spec, _arrow({"topic_id": [t.topic_id for t in found], "size": [t.size for t in found],
                                   "terms": [t.terms for t in found], "label": [t.label for t in found]}, TOPICS))
    extras = _arrow(_customer_extras(ids, cids, results, vectors, live, store), EXTRAS)
    store.con.register("_text_extras", extras)
    try:
        ctx.write(per_customer, _features_sql(ctx.snapshot.schema, [a.name for a in aspect_list]))
    finally:
        store.con.unregister("_text_extras")
    return {"n_texts": n, "embedded": embedded, "cache_hits": hits, "topics": len(found),
            "outlier_share": round(getattr(model, "outlier_share_", 0.0), 4)}


def _customer_extras(ids: list[str], cids: list[str], results: list[TextResult], vectors: np.ndarray,
                     live: np.ndarray, store: Store) -> dict[str, list[Any]]:
    """Embedding centroid, top keywords and category interests per customer.

    Interests: category paths the customer's keywords name, then the categories of
    products the customer wrote about positively (P(positive) >= 0.6), most frequent first.
    """
    categories = [r[0] for r in store.con.execute(
        "SELECT DISTINCT category FROM products WHERE category IS NOT NULL").fetchall()]
    reviewed = dict(store.con.execute(
        "SELECT t.text_id, p.category FROM texts t JOIN products p USING (product_id) WHERE p.category IS NOT NULL"
    ).fetchall())
    order: dict[str, list[int]] = {}
    for i, c in enumerate(cids):
        order.setdefault(c, []).append(i)
    out_c, cents, kws, ints = [], [], [], []
    for c, idx in order.items():
        good = [i for i in idx if live[i]]
        if good:
            v = vectors[good].mean(axis=0)
            v = v / (np.linalg.norm(v) or 1.0)
            cents.append(v.astype(np.float32).tolist())
        else:
            cents.append(None)
        words, cats = interests([results[i].keywords for i in idx], categories)
        liked = Counter(reviewed[ids[i]] for i in idx if ids[i] in reviewed and (results[i].sentiment or 0) >= 0.6)
        out_c.append(c)
        kws.append(words)
        ints.append(list(dict.fromkeys(cats + [k for k, _n in liked.most_common()]))[:5])
    return {"customer_id": out_c, "top_keywords": kws, "interests": ints, "embedding_centroid": cents}


def _features_sql(schema: str, aspects: list[str]) -> str:
    pivots = ", ".join(
        f"avg(CASE polarity WHEN 'positive' THEN 1.0 WHEN 'negative' THEN -1.0 ELSE 0.0 END) "
        f"FILTER (WHERE aspect = '{a}') AS aspect_{a}" for a in aspects
    )
    return f"""
WITH base AS (
    SELECT customer_id, count(*) AS n_texts, avg(sentiment) AS sentiment_mean,
           -- change in P(positive) per 30 days, from texts over time (NULL with fewer than 2 dates)
           regr_slope(sentiment, epoch(created_at) / 2592000.0) AS sentiment_trend,
           avg(CASE WHEN sentiment_label = 'negative' THEN 1.0 WHEN sentiment IS NULL THEN NULL ELSE 0.0 END)
               AS negative_share,
           max(created_at) AS last_text_at
    FROM {schema}.text_analysis GROUP BY customer_id),
asp AS (SELECT customer_id, {pivots}, count(*) AS n_aspect_mentions FROM {schema}.text_aspects GROUP BY customer_id),
top AS (
    SELECT customer_id, map(list(topic_id ORDER BY topic_id), list(share ORDER BY topic_id)) AS topic_shares
    FROM (SELECT customer_id, topic_id, count(*) / sum(count(*)) OVER (PARTITION BY customer_id) AS share
          FROM {schema}.text_analysis WHERE topic_id IS NOT NULL GROUP BY customer_id, topic_id)
    GROUP BY customer_id)
SELECT b.*, {", ".join(f"asp.aspect_{a}" for a in aspects)}, coalesce(asp.n_aspect_mentions, 0) AS n_aspect_mentions,
       x.top_keywords, x.interests, top.topic_shares, x.embedding_centroid
FROM base b LEFT JOIN asp USING (customer_id) LEFT JOIN top USING (customer_id)
LEFT JOIN _text_extras x USING (customer_id)"""
