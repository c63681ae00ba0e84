"""The text stage's two Python steps, as functions over Arrow tables, so any engine can
run them: in-process on DuckDB, or in Spark's executors (``mapInArrow``).

- ``TextRows``: one stored text in, one row out (language, sentiment, keywords, aspect
  mentions with evidence, the tokens topics are labelled with, the embedding). Results
  are cached per text (keyed by a hash of the masked text and of the analysis
  settings) beside the embeddings, so a text is analysed once, whatever build it is in.
- ``customer_text_rows``: one customer's rows in, one ``customer_text_features`` row
  out (sentiment mean, trend and negative share, aspect means, topic shares,
  keywords, interests, embedding centroid).

The analysers are loaded once per process (per Spark worker), not per batch.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shoplens.text.embed import text_key
from shoplens.text.keywords import interests
from shoplens.text.preprocess import Prepared, prepare
from shoplens.text.sentiment import label

ASPECT = pa.struct([("aspect", pa.string()), ("polarity", pa.string()), ("score", pa.float64()),
                    ("evidence", pa.string()), ("span_start", pa.int32()), ("span_end", pa.int32()),
                    ("via", pa.string())])
SOURCE = pa.schema([("text_id", pa.string()), ("customer_id", pa.string()), ("text", pa.string()),
                    ("created_at", pa.timestamp("us")), ("category", pa.string())])
ROWS = pa.schema([("text_id", pa.string()), ("customer_id", pa.string()), ("created_at", pa.timestamp("us")),
                  ("category", pa.string()), ("language", pa.string()), ("sentiment", pa.float64()),
                  ("sentiment_label", pa.string()), ("keywords", pa.list_(pa.string())), ("truncated", pa.bool_()),
                  ("live", pa.bool_()), ("tokens", pa.list_(pa.string())), ("aspects", pa.list_(ASPECT)),
                  ("vector", pa.list_(pa.float32())), ("cached", pa.bool_())])
_EPOCH = datetime(1970, 1, 1)  # stored times are naive UTC: never read them in the machine's zone
_ANALYSERS: dict[str, Any] = {}  # per process: settings hash and cache file -> Analysers
_READY: set[str] = set()  # result cache files whose tables this process has made
_RESULT_FIELDS = ("language", "sentiment", "keywords", "truncated", "live", "tokens", "aspects")


def result_key(prepared: Prepared) -> str:
    """The result cache's key: the masked, normalised text (and whether it was cut), so
    texts that differ only in width, repeated punctuation or spacing (好评！！ / 好评!)
    are analysed once."""
    return text_key("results", f"{prepared.text}\0{int(prepared.truncated)}")


class TextRows:
    """``TextRows(cfg)(batch)``: analyse a batch of ``SOURCE`` rows into ``ROWS``.
    Picklable (it carries the config, not the models), so Spark ships it to workers.

    Each distinct prepared text is analysed once per batch and once ever while the
    result cache holds it; ``analysed``, ``deduplicated`` and ``refined`` count this
    process' work (on Spark: each worker's)."""

    def __init__(self, cfg: Any, settings_hash: str, cache: Path | None) -> None:
        self.cfg, self.settings, self.cache = cfg, settings_hash, cache
        self.embedded = self.embedding_hits = self.analysed = self.deduplicated = self.refined = 0
        self.seconds = 0.0  # spent analysing texts not in the cache

    def _analysers(self) -> Any:
        # per shop as well as per settings: two shops in one process (an evaluation, a
        # test run) must not write one's texts into the other's embedding cache
        key = f"{self.settings}/{self.cfg.resolve(self.cfg.text.cache) if self.cfg.text.cache else ''}"
        if key not in _ANALYSERS:
            from shoplens.text.analysers import Analysers

            _ANALYSERS[key] = Analysers.for_shop(self.cfg)
        return _ANALYSERS[key]

    def _db(self) -> sqlite3.Connection:
        assert self.cache is not None
        if str(self.cache) not in _READY or not self.cache.exists():  # tables made once per process and file
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(self.cache, timeout=60)) as db, db:
                db.execute("CREATE TABLE IF NOT EXISTS text_results (key TEXT, settings TEXT, result TEXT, "
                           "PRIMARY KEY (key, settings))")
                db.execute("CREATE TABLE IF NOT EXISTS text_rates (settings TEXT PRIMARY KEY, texts_per_s REAL)")
            _READY.add(str(self.cache))
        return sqlite3.connect(self.cache, timeout=60)

    def _results(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if self.cache is None or not keys:
            return {}
        with contextlib.closing(self._db()) as db:
            out: dict[str, dict[str, Any]] = {}
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                out.update((k, json.loads(r)) for k, r in db.execute(
                    f"SELECT key, result FROM text_results WHERE settings = ? AND key IN ({','.join('?' * len(chunk))})",
                    [self.settings, *chunk]))
        return out

    def _remember(self, found: dict[str, dict[str, Any]]) -> None:
        if self.cache is None or not found:
            return
        with contextlib.closing(self._db()) as db, db:
            db.executemany("INSERT OR REPLACE INTO text_results VALUES (?, ?, ?)",
                           [(k, self.settings, json.dumps(v, ensure_ascii=False)) for k, v in found.items()])

    def cached_share(self, texts: list[str]) -> float:
        """The share of ``texts`` (a sample) whose results the cache holds."""
        if not texts:
            return 0.0
        max_chars = self.cfg.text.max_chars
        keys = [result_key(prepare(t, max_chars)) for t in texts]
        found = self._results(keys)
        return sum(k in found for k in keys) / len(keys)

    def last_rate(self) -> float | None:
        """Texts/s of the last run with these settings on this machine (None: never measured)."""
        if self.cache is None:
            return None
        with contextlib.closing(self._db()) as db:
            row = db.execute("SELECT texts_per_s FROM text_rates WHERE settings = ?", [self.settings]).fetchone()
        return None if row is None else float(row[0])

    def remember_rate(self) -> None:
        if self.cache is not None and self.analysed >= 100 and self.seconds > 0:
            with contextlib.closing(self._db()) as db, db:
                db.execute("INSERT OR REPLACE INTO text_rates VALUES (?, ?)", [self.settings, self.analysed / self.seconds])

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        from shoplens.text.analysers import text_tokens

        cols = batch.to_pydict()
        analysers = self._analysers()
        prepared = [prepare(t, analysers.max_chars) for t in cols["text"]]
        keys = [result_key(p) for p in prepared]
        known = self._results(keys)
        where: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        todo = [k for k in where if k not in known]  # each distinct new text once
        misses, hits = analysers.embedder.misses, analysers.embedder.hits
        fresh: dict[str, dict[str, Any]] = {}
        dim = analysers.embedder.dim
        vectors = np.zeros((len(keys), dim), np.float32)  # one row per text, kept as numpy (no Python floats)
        has = np.zeros(len(keys), bool)
        if todo:
            t0 = time.perf_counter()
            before = analysers.routes().get(analysers.refine_id, 0)
            results, emb = analysers.analyse_prepared([prepared[where[k][0]] for k in todo])
            assert emb is not None
            for k, r, tokens, v in zip(todo, results, text_tokens(results), emb, strict=True):
                vectors[where[k]] = v
                has[where[k]] = not r.prepared.empty
                fresh[k] = {
                    "language": r.prepared.language, "sentiment": r.sentiment, "keywords": r.keywords,
                    "truncated": r.prepared.truncated, "live": not r.prepared.empty, "tokens": tokens,
                    "aspects": [{"aspect": h.aspect, "polarity": h.polarity, "score": h.score, "evidence": h.evidence,
                                 "span_start": h.start, "span_end": h.end, "via": h.via} for h in r.aspects],
                    "prepared": r.prepared.text}
            self._remember(fresh)
            self.seconds += time.perf_counter() - t0
            self.analysed += len(todo)
            self.deduplicated += sum(len(where[k]) for k in todo) - len(todo)
            self.refined += analysers.routes().get(analysers.refine_id, 0) - before
        rows = [known.get(k) or fresh[k] for k in keys]
        again = [i for i, r in enumerate(rows) if r["live"] and not has[i]]
        if again:  # results from the cache: their embeddings from the embedding cache
            vectors[again] = analysers.embedder.embed([rows[i]["prepared"] for i in again])
            has[again] = True
        out = {n: cols[n] for n in ("text_id", "customer_id", "created_at", "category")}
        out |= {f: [r[f] for r in rows] for f in _RESULT_FIELDS}
        out["sentiment_label"] = [None if r["sentiment"] is None else label(r["sentiment"]) for r in rows]
        out["cached"] = [k in known for k in keys]
        self.embedded += analysers.embedder.misses - misses
        self.embedding_hits += analysers.embedder.hits - hits
        offsets = pa.array(np.arange(0, (len(keys) + 1) * dim, dim, dtype=np.int32))
        out["vector"] = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel()), mask=pa.array(~has))
        return pa.table({f.name: out[f.name] if f.name == "vector" else pa.array(out[f.name], f.type) for f in ROWS},
                        schema=ROWS)


def customer_text_rows(rows: pa.Table, aspects: list[str], categories: list[str], schema: pa.Schema) -> pa.Table:
    """One ``customer_text_features`` row per customer in ``rows`` (text rows with
    ``topic_id``, every row of a customer present)."""
    d = rows.drop_columns(["vector"]).to_pydict()
    column = pa.concat_arrays(rows.column("vector").chunks) if rows.num_rows else pa.array([], pa.list_(pa.float32()))
    offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
    by: dict[str, list[int]] = {}
    for i, c in enumerate(d["customer_id"]):
        by.setdefault(c, []).append(i)
    out: dict[str, list[Any]] = {f.name: [] for f in schema}
    for cid, idx in by.items():
        s = [(d["sentiment"][i], d["created_at"][i]) for i in idx if d["sentiment"][i] is not None]
        out["customer_id"].append(cid)
        out["n_texts"].append(len(idx))
        out["sentiment_mean"].append(float(np.mean([v for v, _t in s])) if s else None)
        out["sentiment_trend"].append(_slope([(t - _EPOCH).total_seconds() / 2592000.0 for _v, t in s], [v for v, _t in s]))
        labels = [d["sentiment_label"][i] for i in idx if d["sentiment"][i] is not None]
        out["negative_share"].append(sum(lab == "negative" for lab in labels) / len(labels) if labels else None)
        out["last_text_at"].append(max(d["created_at"][i] for i in idx))
        mentions = [m for i in idx for m in d["aspects"][i]]
        for a in aspects:
            pol = [1.0 if m["polarity"] == "positive" else -1.0 if m["polarity"] == "negative" else 0.0
                   for m in mentions if m["aspect"] == a]
            out[f"aspect_{a}"].append(sum(pol) / len(pol) if pol else None)
        out["n_aspect_mentions"].append(len(mentions))
        words, cats = interests([d["keywords"][i] for i in idx], categories)
        liked = Counter(d["category"][i] for i in idx
                        if d["category"][i] is not None and (d["sentiment"][i] or 0) >= 0.6)
        out["top_keywords"].append(words)
        out["interests"].append(list(dict.fromkeys(cats + [k for k, _n in liked.most_common()]))[:5])
        topics = Counter(d["topic_id"][i] for i in idx if d["topic_id"][i] is not None)
        total = sum(topics.values())
        out["topic_shares"].append(sorted((t, n / total) for t, n in topics.items()) if total else None)
        good = [values[offsets[i]:offsets[i + 1]] for i in idx if d["live"][i] and offsets[i + 1] > offsets[i]]
        if good:
            v = np.stack(good).astype(np.float32).mean(axis=0)
            out["embedding_centroid"].append((v / (np.linalg.norm(v) or 1.0)).astype(np.float32).tolist())
        else:
            out["embedding_centroid"].append(None)
    return pa.table({f.name: pa.array(out[f.name], f.type) for f in schema}, schema=schema)


def vector_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An (n, dim) float32 matrix from a list column whose rows all hold a vector."""
    arr = pa.concat_arrays(column.chunks) if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 0), np.float32)
    offsets, values = arr.offsets.to_numpy(), arr.values.to_numpy(zero_copy_only=False)
    return np.stack([values[offsets[i]:offsets[i + 1]] for i in range(len(arr))]).astype(np.float32)


def _slope(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of y on x (``regr_slope``): None with fewer than two distinct x."""
    if len(x) < 2:
        return None
    xa, ya = np.asarray(x), np.asarray(y)
    var = float(((xa - xa.mean()) ** 2).mean())
    return None if var == 0 else float(((xa - xa.mean()) * (ya - ya.mean())).mean() / var)
