"""Benchmark: choosing k and segmenting 10k, 100k and 1M customers, ShopLens'
Segmenter vs plain scikit-learn KMeans on the same matrix, in one process.

    .venv/bin/python bench/segments.py                 # ~5 min
    .venv/bin/python bench/segments.py --sizes 10000 100000

Matrix: 16 standardised features with 5 planted groups plus noise. Both sides try k =
3..8 and pick the best silhouette on the same 10,000-row sample. ShopLens uses KMeans
up to 50k customers and MiniBatchKMeans above, and also computes Davies-Bouldin,
Calinski-Harabasz and a 5-refit bootstrap ARI; the baseline runs KMeans (n_init=10)
for every k and nothing else. The ratio printed last is baseline / ShopLens time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import PeakRss, sizes_arguments  # noqa: E402

from shoplens.models.segments import Segmenter  # noqa: E402


def matrix(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, (5, 16))
    truth = rng.integers(0, 5, n)
    X = centres[truth] + rng.normal(0, 1.0, (n, 16))
    return (X - X.mean(0)) / X.std(0), truth


def baseline(X: np.ndarray) -> int:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best, best_k = -1.0, 0
    for k in range(3, 9):
        labels = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(X)
        s = silhouette_score(X, labels, sample_size=min(10_000, len(X)), random_state=0)
        if s > best:
            best, best_k = s, k
    return best_k


def main() -> None:
    args = sizes_arguments(__doc__)
    from sklearn.metrics import adjusted_rand_score

    ratios = []
    for n in args.sizes:
        X, truth = matrix(n)
        with PeakRss() as mem:
            t0 = time.perf_counter()
            seg = Segmenter(k_range=(3, 8)).fit(X)
            ours = time.perf_counter() - t0
        r = seg.result_
        print(f"{n:>9,} shoplens  {ours:7.2f} s  RSS +{mem.grew / 2**20:6,.0f} MiB  k={r.k} silhouette {r.metrics['silhouette']:.3f} "
              f"DB {r.metrics['davies_bouldin']:.3f} CH {r.metrics['calinski_harabasz']:,.0f} bootstrap ARI {r.metrics['stability_ari']:.3f} "
              f"ARI vs planted {adjusted_rand_score(truth, r.labels):.3f}")
        with PeakRss() as mem:
            t0 = time.perf_counter()
            k = baseline(X)
            base = time.perf_counter() - t0
        print(f"{n:>9,} sklearn   {base:7.2f} s  RSS +{mem.grew / 2**20:6,.0f} MiB  k={k}")
        ratios.append((n, base / ours))
    for n, ratio in ratios:
        print(f"ratio at {n:,} (plain KMeans / shoplens): {ratio:.2f}x")


if __name__ == "__main__":
    main()
