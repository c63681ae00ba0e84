"""The build's text stage: analyse every stored text, then aggregate per customer.

Writes into the snapshot:

- ``text_analysis``: one row per text (language, sentiment, label, keywords, topic);
- ``text_aspects``: one row per aspect mention with polarity and the evidence span;
- ``text_topics``: topic id, size and c-TF-IDF terms;
- ``customer_text_features``: per customer with at least one text (customers without
  text are absent, so the profile's LEFT JOIN gives explicit NULLs, never zeros).

On any engine the same three steps run: per-text analysis (``rows.TextRows``, in
Spark's executors on the Spark engine), topics fitted on the driver, and per-customer
aggregation (``rows.customer_text_rows``, per group of a customer's texts). Topics are
fitted on every live text up to ``TOPIC_COLLECT`` texts (exactly as before); above that
on a sample of ``TopicModel.max_fit`` texts per language, and every text is assigned
to its nearest topic in the executors. Texts are read already masked (ingest masks
them) and masked again by ``prepare``.
"""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa

from shoplens import __version__
from shoplens.config import Config
from shoplens.engine.base import Snapshot, number
from shoplens.pipeline.stage import BaseStage, BuildContext, StageReport, TableSpec, settings_hash
from shoplens.text.aspects import load_aspects
from shoplens.text.rows import ROWS, SOURCE, TextRows, customer_text_rows, vector_matrix
from shoplens.text.topics import TopicModel

TOPIC_COLLECT = 50_000  # live texts up to which topics are fitted on all of them, on the driver
ANALYSIS = pa.schema([("text_id", pa.string()), ("customer_id", pa.string()), ("created_at", pa.timestamp("us")),
                      ("language", pa.string()), ("sentiment", pa.float64()), ("sentiment_label", pa.string()),
                      ("keywords", pa.list_(pa.string())), ("topic_id", pa.int32()), ("truncated", pa.bool_())])
ASPECTS = pa.schema([("text_id", pa.string()), ("customer_id", pa.string()), ("aspect", pa.string()),
                     ("polarity", pa.string()), ("score", pa.float64()), ("evidence", pa.string()),
                     ("span_start", pa.int32()), ("span_end", pa.int32()), ("via", pa.string())])
TOPICS = pa.schema([("topic_id", pa.int32()), ("size", pa.int64()), ("terms", pa.list_(pa.string())),
                    ("label", pa.string())])
TOPIC_OF = pa.schema([("text_id", pa.string()), ("topic_id", pa.int32())])  # -1: a live text in no topic


@lru_cache(maxsize=1)
def shipped_models() -> str:
    """Hash of the trained models that ship in the package: retraining them changes the
    stage's fingerprint and the result cache's key, so no stale result is reused."""
    from importlib import resources

    digest = hashlib.sha256()
    for name in ("sentiment_ngram.npz", "sentiment_head.json", "sentiment_heads.json", "aspects_model.npz"):
        ref = resources.files("shoplens").joinpath(f"data/{name}")
        digest.update(ref.read_bytes() if ref.is_file() else b"-")
    return digest.hexdigest()[:16]


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
    version = 4
    needs = ("texts", "products")
    makes = (TableSpec("text_analysis", ANALYSIS, ("text_id",)), TableSpec("text_aspects", ASPECTS, ("text_id", "aspect")),
             TableSpec("text_topics", TOPICS, ("topic_id",)), TableSpec("customer_text_features", customer_text_schema))

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.text.enabled else "disabled in [text]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        file = _aspects_file(cfg)
        return cfg.text.model_dump(exclude={"enabled", "cache"}) | {
            "aspects": Path(file).read_text("utf-8") if file else "default", "models": shipped_models()}

    def run(self, ctx: BuildContext) -> StageReport:
        cfg, engine, snap = ctx.cfg, ctx.engine, ctx.snapshot
        analysis, aspects, topics_spec, per_customer = self.makes
        texts, products = engine.table("texts"), engine.table("products")
        source = texts.left_join(products.select("product_id", "category"), "product_id").select(*SOURCE.names)
        n = number(engine, texts.count())
        if not engine.local_workers:  # executors on other machines: no cache erasure could reach
            cfg = cfg.model_copy(update={"text": cfg.text.model_copy(update={"cache": None})})
        cache = cfg.resolve(cfg.text.cache) if cfg.text.cache else None
        # the result cache is keyed by the settings and the code that made the results
        analyse = TextRows(cfg, settings_hash(self.settings(cfg, snap) | {"version": self.version, "shoplens": __version__}),
                           cache)
        plan = _plan(engine, source, n, analyse)
        ctx.on_note(plan["message"])
        step: Any = analyse
        if engine.name == "duckdb":  # in this process: report texts/s and the time left
            step = partial(_with_progress, fn=analyse, total=n, on_info=ctx.on_info, started=[time.perf_counter(), 0])
        engine.map_batches(snap, "_text_rows", source, step, ROWS)
        analyse.remember_rate()
        rows = engine.table("_text_rows", snap)
        model, assigned = _topics(ctx, rows)
        topic_of = engine.table("_topic_of", snap)
        joined = rows.left_join(topic_of, "text_id").select(*ROWS.names, "topic_id")
        ctx.write(analysis, joined.select(*ANALYSIS.names))
        m = rows.select("text_id", "customer_id", m=rows.aspects.unnest())
        ctx.write(aspects, m.select("text_id", "customer_id", *(m.m[f] for f in ASPECTS.names[2:])))
        found = model.topics_ if model is not None else []
        ctx.write(topics_spec, pa.table({"topic_id": [t.topic_id for t in found], "size": [assigned.get(t.topic_id, 0) for t in found],
                                         "terms": [t.terms for t in found], "label": [t.label for t in found]}, schema=TOPICS))
        categories = sorted(str(c) for c in engine.collect(products.select("category").filter(
            products.category.notnull()).distinct()).column(0).to_pylist())
        names = [a.name for a in load_aspects(_aspects_file(cfg))]
        schema = per_customer.schema_for(cfg)
        engine.map_groups(snap, per_customer.name, joined, "customer_id",
                          partial(customer_text_rows, aspects=names, categories=categories, schema=schema), schema,
                          within=("text_id",))
        reused = number(engine, rows.cached.sum())
        for scratch in ("_text_rows", "_topic_of"):
            engine.drop(snap, scratch)
        in_process = engine.name == "duckdb"  # on Spark the embedders run (and count) in the executors
        return StageReport(summary={
            "n_texts": n, "analysed": n - reused, "reused": reused, "topics": len(found),
            "distinct_analysed": analyse.analysed if in_process else None,
            "refined_e5": analyse.refined if in_process else None,
            "embedded": analyse.embedded if in_process else None,
            "cache_hits": analyse.embedding_hits if in_process else None,
            "estimate": {k: v for k, v in plan.items() if k != "message"},
            "outlier_share": round(getattr(model, "outlier_share_", 0.0), 4)})


PLAN_SAMPLE = 2_000  # texts looked up in the result cache before the stage, to estimate its work
DEFAULT_RATE = {"use": 250.0, "e5": 25.0, "hash": 1000.0}  # texts/s on 2 cores before a run here measured one


def _plan(engine: Any, source: Any, n: int, analyse: TextRows) -> dict[str, Any]:
    """How many texts are new and how long they will take, from a fixed sample of the
    texts looked up in the result cache and the last measured rate for these settings."""
    sample = source if n <= PLAN_SAMPLE else _every_kth(source, -(-n // PLAN_SAMPLE))
    texts = [t for t in engine.collect(sample.select("text")).column(0).to_pylist() if t is not None]
    share = analyse.cached_share(texts)
    new = round(n * (1 - share))
    measured = analyse.last_rate()
    rate = measured or DEFAULT_RATE.get(analyse.cfg.text.embedder, 100.0)
    seconds = new / rate
    basis = "the last run's rate" if measured else "a typical rate"
    message = (f"text: {n:,} texts, about {new:,} new and {n - new:,} reused from the cache"
               f"{f' (from a sample of {len(texts):,})' if n > len(texts) else ''}; "
               f"estimate {_duration(seconds)} at {rate:,.0f} texts/s ({basis})")
    return {"new": new, "reused": n - new, "seconds": round(seconds, 1), "texts_per_s": round(rate, 1),
            "sampled": len(texts), "message": message}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _with_progress(batch: pa.RecordBatch, fn: TextRows, total: int, on_info: Any, started: list[float]) -> pa.Table:
    """``fn(batch)``, then report texts done, texts/s and the time left."""
    out = fn(batch)
    started[1] += batch.num_rows
    done, elapsed = started[1], time.perf_counter() - started[0]
    rate = done / max(elapsed, 1e-9)
    on_info(f"text: {done:,}/{total:,} texts, {rate:,.0f} texts/s, {_duration((total - done) / rate)} left")
    return out


def _topics(ctx: BuildContext, rows: Any) -> tuple[TopicModel | None, dict[int, int]]:
    """Fit topics and write ``_topic_of`` (text id -> topic id); returns the model and
    the number of texts per topic."""
    cfg, engine, snap = ctx.cfg, ctx.engine, ctx.snapshot
    live = rows.filter(rows.live).select("text_id", "language", "vector", "tokens")
    n_live = number(engine, live.count())
    if not cfg.text.topics or not n_live:
        ctx.write(TableSpec("_topic_of", TOPIC_OF), pa.table({"text_id": [], "topic_id": []}, schema=TOPIC_OF))
        return None, {}
    ctx.on_info("text: topics")
    model = TopicModel(min_topic_size=cfg.text.min_topic_size)
    sample = live if n_live <= TOPIC_COLLECT else _every_kth(live, -(-n_live // (model.max_fit * 2)))
    got = engine.collect(sample.order_by("text_id"))
    vectors = vector_matrix(got.column("vector"))
    langs = ["en" if lang == "en" else "zh" for lang in got.column("language").to_pylist()]
    labels = model.fit_predict(vectors, got.column("tokens").to_pylist(), langs)
    if n_live <= TOPIC_COLLECT:
        ids = got.column("text_id").to_pylist()
        ctx.write(TableSpec("_topic_of", TOPIC_OF), pa.table({"text_id": ids, "topic_id": labels.tolist()}, schema=TOPIC_OF))
    else:  # every text to its nearest topic of its language, in the executors
        engine.map_batches(snap, "_topic_of", live, partial(_assign, model=model), TOPIC_OF)
    counts = engine.collect(engine.table("_topic_of", snap).topic_id.value_counts()).to_pydict()
    return model, {int(t): int(c) for t, c in zip(*counts.values(), strict=True) if t is not None}  # -1: outliers


def _every_kth(live: Any, k: int) -> Any:
    """Every ``k``-th live text in text id order: a sample that is the same on every
    engine and every run (a random one changed the topics from build to build)."""
    ids = live.select("text_id")
    ids = ids.mutate(i=ibis.row_number().over(order_by=ids.text_id)).filter(lambda t: t.i % k == 0)
    return live.semi_join(ids.select("text_id"), "text_id")


def _assign(batch: pa.RecordBatch, model: TopicModel) -> pa.Table:
    vectors = vector_matrix(batch.column("vector"))
    langs = ["en" if lang == "en" else "zh" for lang in batch.column("language").to_pylist()]
    labels = model.assign(vectors, langs)
    return pa.table({"text_id": batch.column("text_id"),
                     "topic_id": pa.array(labels.tolist(), pa.int32())})
