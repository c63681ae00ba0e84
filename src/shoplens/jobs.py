"""Whole jobs composed from the stages: ingest + build, the demo, loading a data set.

These are what the CLI's longer commands call; each returns a ``Summary`` that the CLI
prints and tests inspect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplens.build import BuildResult, Step, build
from shoplens.config import Config, load_config
from shoplens.datasets.demo import generate
from shoplens.datasets.public import export_dataset
from shoplens.ingest.pipeline import IngestResult, Progress, ingest
from shoplens.store import Store


@dataclass
class Summary:
    """What one ingest + build produced."""

    folder: Path
    ingest: list[IngestResult]
    build: BuildResult
    tables: dict[str, int]
    segments: list[tuple[str, str, int, float]] = field(default_factory=list)
    top_categories: list[tuple[str, float]] = field(default_factory=list)
    example_customer: str | None = None
    clusters: list[tuple[int, str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "ingest": [r.as_dict() for r in self.ingest],
            "snapshot_id": self.build.snapshot_id,
            "as_of": self.build.as_of.isoformat(),
            "customers": self.build.n_customers,
            "not_profiled": self.build.not_profiled,  # no profiling consent (docs/consent.md)
            "build_seconds": round(self.build.seconds, 3),
            "predictions_skipped": self.build.skipped,
            "text": self.build.text,
            "tables": self.tables,
            "segments": [{"segment": s, "segment_zh": z, "customers": n, "mean_spend": round(m, 2)} for s, z, n, m in self.segments],
            "top_categories": [{"category": c, "spend": round(v, 2)} for c, v in self.top_categories],
            "example_customer": self.example_customer,
            "clusters": [{"id": i, "name": n, "customers": c} for i, n, c in self.clusters],
        }


def summarise(store: Store, folder: Path, results: list[IngestResult], built: BuildResult) -> Summary:
    s = f"snap_{built.snapshot_id}"
    segs = store.con.execute(
        f"SELECT rfm_segment, any_value(rfm_segment_zh), count(*), avg(total_spend) FROM {s}.customer_features "
        "GROUP BY 1 ORDER BY 3 DESC"
    ).fetchall()
    cats = store.con.execute(
        f"SELECT category, sum(spend) FROM {s}.customer_category_shares GROUP BY 1 ORDER BY 2 DESC LIMIT 8"
    ).fetchall()
    example = store.scalar(
        f"SELECT customer_id FROM {s}.customer_features ORDER BY total_spend DESC, customer_id LIMIT 1"
    )
    clusters = store.con.execute(f"SELECT segment_id, name, size FROM {s}.segments ORDER BY segment_id").fetchall()
    return Summary(folder, results, built, store.counts(), [tuple(r) for r in segs], [tuple(r) for r in cats], example,  # type: ignore[misc]
                   [tuple(r) for r in clusters])


def ingest_and_build(
    cfg: Config, progress: Progress | None = None, on_step: Step | None = None, create_key: bool = True
) -> Summary:
    """Ingest every source of ``cfg`` and build a new snapshot."""
    with Store.for_config(cfg) as store:
        results = ingest(cfg, store, progress, create_key=create_key)
        built = build(cfg, store, on_step=on_step)
        return summarise(store, cfg.root, results, built)


def run_demo(
    out: str | Path, customers: int = 2000, seed: int = 42, fresh: bool = False,
    progress: Progress | None = None, on_step: Step | None = None,
    on_generate: Callable[[Path], None] | None = None,
) -> Summary:
    """The main job: generate the demo shop (unless present), ingest it and build."""
    folder = Path(out)
    if fresh or not (folder / "shoplens.toml").exists():
        if fresh and folder.exists():
            for name in ("shoplens.duckdb", "shoplens.duckdb.wal"):
                (folder / name).unlink(missing_ok=True)
        generate(folder, customers=customers, seed=seed)
        if on_generate:
            on_generate(folder)
    return ingest_and_build(load_config(folder / "shoplens.toml"), progress, on_step)


def build_evaluation_shop(folder: str | Path, customers: int, seed: int) -> Config:
    """A generated demo shop (with its planted truths) ingested and built for an
    evaluation, recommendations off (the evaluations do not read them); its config."""
    generate(folder, customers=customers, seed=seed)
    cfg = load_config(Path(folder) / "shoplens.toml")
    cfg = cfg.model_copy(update={"recommend": cfg.recommend.model_copy(update={"enabled": False})})
    ingest_and_build(cfg)
    return cfg


def load_dataset(
    name: str, out: str | Path, progress: Progress | None = None, on_step: Step | None = None
) -> Summary:
    """Export a public data set to ``out`` and ingest + build it there."""
    folder = export_dataset(name, out)
    return ingest_and_build(load_config(folder / "shoplens.toml"), progress, on_step)
