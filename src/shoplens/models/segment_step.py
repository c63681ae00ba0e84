"""The build's segment step: cluster the snapshot's customers, describe each segment
and write ``segments`` and ``customer_segments`` into the snapshot.

The segmenter and the scaling are fitted on up to ``[segments] fit_sample`` customers
(the first by pseudonym, a uniform sample that every engine draws alike); when there
are more, every customer is assigned by ``Assigner`` in batches on the engine (on
Spark, in the executors), and the segment sizes are counted there. Personas are
written from the sample's figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pyarrow as pa

from shoplens.engine.base import Snapshot, number
from shoplens.llm import provider_from_config
from shoplens.models.btyd import ModelError
from shoplens.models.personas import llm_persona, segment_stats
from shoplens.models.segment_map import write_maps
from shoplens.models.segments import Design, Segmenter
from shoplens.pipeline.stage import BuildContext, TableSpec, empty
from shoplens.store import segments_dir


def segment_rows(engine: Any, snapshot: Snapshot) -> Any:
    """Every customer with what the segments are made of (an Ibis table)."""
    f = engine.table("customer_features", snapshot)
    d = engine.table("customers", snapshot)
    p = engine.table("customer_predictions", snapshot).select("customer_id", "churn_risk", "clv")
    x = engine.table("customer_text_features", snapshot).select("customer_id", "sentiment_mean")
    texts = engine.table("texts")
    rated = texts.group_by(cid=texts.customer_id).agg(mean_rating=texts.rating.cast("float64").mean())
    rows = f.join(d.select("customer_id", age=ibis.literal(snapshot.as_of.year) - d.birth_year), "customer_id")
    for other in (p, x):
        rows = rows.left_join(other, rows.customer_id == other.customer_id).drop("customer_id_right")
    return rows.left_join(rated, rows.customer_id == rated.cid).drop("cid")


@dataclass
class Assigner:
    """The fitted scaling and segmenter applied to one batch of customers."""

    design: Design
    segmenter: Segmenter

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        frame = batch.to_pandas()
        labels = self.segmenter.assign(self.design.transform(frame))
        return pa.table({"customer_id": frame.customer_id.astype(str).to_numpy(),
                         "segment_id": pa.array(np.asarray(labels, dtype=np.int32))})


def _quotes(engine: Any, sampled: Any) -> dict[str, tuple[list[str], list[str]]]:
    """Each sampled customer's first low-rated and first high-rated text."""
    t = engine.table("texts")
    t = t.filter(t.rating.notnull())
    t = t.mutate(k=ibis.row_number().over(group_by=[t.customer_id, t.rating <= 2], order_by=t.text_id))
    t = t.filter(t.k == 0)
    ids = sampled.select(cid=sampled.customer_id)
    firsts = engine.collect(t.join(ids, t.customer_id == ids.cid).select("customer_id", "text", "rating"))
    quotes: dict[str, tuple[list[str], list[str]]] = {}
    for cid, text, rating in zip(*(firsts.column(c).to_pylist() for c in ("customer_id", "text", "rating")), strict=True):
        neg, pos = quotes.setdefault(cid, ([], []))
        (neg if rating <= 2 else pos if rating >= 4 else []).append(text[:200])
    return quotes


def segment_snapshot(ctx: BuildContext, segments: TableSpec, assignments: TableSpec) -> dict[str, str]:
    """Write both tables (empty when segmentation is not possible); returns
    {"segments": reason} when it had to be skipped, else {}."""
    cfg, engine, snap = ctx.cfg, ctx.engine, ctx.snapshot
    sc = cfg.segments
    rows = segment_rows(engine, snap)
    n = number(engine, rows.count())
    sampled = rows.order_by("customer_id").limit(sc.fit_sample) if n > sc.fit_sample else rows
    frame = engine.collect(sampled).to_pandas().set_index("customer_id").sort_index()
    design = Design.fit(frame)
    X, used = design.transform(frame), design.columns
    try:
        seg = Segmenter(sc.method, (sc.k_min, max(sc.k_min, sc.k_max)), bootstrap=sc.bootstrap).fit(X)
    except ModelError as err:
        for spec in (segments, assignments):
            ctx.write(spec, empty(spec.schema_for(cfg)))
        return {"segments": str(err)}
    labels = seg.result_.labels
    if n > len(frame):  # a sample was fitted: every customer is assigned where the engine runs
        engine.map_batches(snap, assignments.name, rows, Assigner(design, seg), assignments.schema_for(cfg),
                           batch_rows=20_000)
        a = engine.table(assignments.name, snap)
        sizes = engine.collect(a.group_by("segment_id").agg(n=a.count())).to_pandas()
        counts = dict(zip(sizes.segment_id.astype(int), sizes.n.astype(int), strict=True))
    else:
        ctx.write(assignments, pa.table({"customer_id": pa.array(frame.index.astype(str), pa.string()),
                                         "segment_id": pa.array(labels.astype(np.int32))}))
        counts = {}
    cats = {str(cid): [str(c)] for cid, c in frame["top_category"].dropna().items()}
    stats = segment_stats(frame, labels, used, cats, _quotes(engine, sampled))
    for s in stats:  # sizes are of the whole base, the figures of the sample
        if counts:
            s.size, s.share = counts.get(s.segment_id, 0), counts.get(s.segment_id, 0) / n
    all_cats = {str(c) for c in frame["top_category"].dropna().unique()}
    provider = provider_from_config(cfg)  # the template writer without [llm]
    metrics = json.dumps(seg.result_.metrics | {"k": seg.result_.k, "method": sc.method, "features": used,
                                                "scores_by_k": seg.result_.scores_by_k, "customers": n,
                                                "fit_sample": sc.fit_sample, "fitted_on": len(frame)})
    rows_out = []
    for s in stats:
        persona = llm_persona(provider, s, all_cats, sc.language)
        rows_out.append((s.segment_id, persona.name, persona.persona, json.dumps(persona.actions, ensure_ascii=False),
                         persona.source, json.dumps(persona.problems, ensure_ascii=False), s.size, s.share,
                         json.dumps({k: round(v, 3) for k, v in s.zscores.items()}),
                         json.dumps(s.categories, ensure_ascii=False), metrics,
                         json.dumps(s.quotes_positive, ensure_ascii=False), json.dumps(s.quotes_negative, ensure_ascii=False)))
    seg_schema = segments.schema_for(cfg)
    ctx.write(segments, pa.table([pa.array([r[i] for r in rows_out], f.type) for i, f in enumerate(seg_schema)],
                                 schema=seg_schema))
    write_maps(X, labels, {r[0]: r[1] for r in rows_out}, segments_dir(Path(engine.store.path)) / f"{snap.schema}-map")
    return {}
