"""The build's segment step: cluster the snapshot's customers, describe each segment
and write ``segments`` and ``customer_segments`` into the snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from shoplens.llm import provider_from_config
from shoplens.models.btyd import ModelError
from shoplens.models.personas import llm_persona, segment_stats
from shoplens.models.segment_map import write_maps
from shoplens.models.segments import Segmenter, design_matrix
from shoplens.pipeline.stage import BuildContext, TableSpec, empty
from shoplens.store import segments_dir


def segment_snapshot(ctx: BuildContext, segments: TableSpec, assignments: TableSpec) -> dict[str, str]:
    """Write both tables (empty when segmentation is not possible); returns
    {"segments": reason} when it had to be skipped, else {}."""
    cfg, store, schema = ctx.cfg, ctx.engine.store, ctx.snapshot.schema
    frame = store.con.execute(
        f"SELECT f.*, p.churn_risk, p.clv, t.mean_rating, x.sentiment_mean, {ctx.snapshot.as_of.year} - d.birth_year AS age "
        f"FROM {schema}.customer_features f JOIN {schema}.customers d USING (customer_id) "
        f"LEFT JOIN {schema}.customer_predictions p USING (customer_id) "
        f"LEFT JOIN {schema}.customer_text_features x USING (customer_id) "
        "LEFT JOIN (SELECT customer_id, avg(rating) AS mean_rating FROM texts GROUP BY 1) t USING (customer_id)"
    ).df().set_index("customer_id").sort_index()
    sc = cfg.segments
    X, used = design_matrix(frame)
    try:
        seg = Segmenter(sc.method, (sc.k_min, max(sc.k_min, sc.k_max)), bootstrap=sc.bootstrap).fit(X)
    except ModelError as err:
        for spec in (segments, assignments):
            ctx.write(spec, empty(spec.schema_for(cfg)))
        return {"segments": str(err)}
    labels = seg.result_.labels
    cats = {str(cid): [str(c)] for cid, c in frame["top_category"].dropna().items()}
    quotes: dict[str, tuple[list[str], list[str]]] = {}
    for cid, text, rating in store.con.execute(
            "SELECT customer_id, text, rating FROM (SELECT customer_id, text, rating, row_number() OVER "
            "(PARTITION BY customer_id, rating <= 2 ORDER BY text_id) AS k FROM texts WHERE rating IS NOT NULL) WHERE k = 1").fetchall():
        neg, pos = quotes.setdefault(cid, ([], []))
        (neg if rating <= 2 else pos if rating >= 4 else []).append(text[:200])
    stats = segment_stats(frame, labels, used, cats, quotes)
    all_cats = {str(c) for c in frame["top_category"].dropna().unique()}
    provider = provider_from_config(cfg)  # the template writer without [llm]
    metrics = json.dumps(seg.result_.metrics | {"k": seg.result_.k, "method": sc.method,
                                                "features": used, "scores_by_k": seg.result_.scores_by_k})
    rows = []
    for s in stats:
        persona = llm_persona(provider, s, all_cats, sc.language)
        rows.append((s.segment_id, persona.name, persona.persona, json.dumps(persona.actions, ensure_ascii=False),
                     persona.source, json.dumps(persona.problems, ensure_ascii=False), s.size, s.share,
                     json.dumps({k: round(v, 3) for k, v in s.zscores.items()}), json.dumps(s.categories, ensure_ascii=False), metrics,
                     json.dumps(s.quotes_positive, ensure_ascii=False), json.dumps(s.quotes_negative, ensure_ascii=False)))
    seg_schema = segments.schema_for(cfg)
    ctx.write(segments, pa.table([pa.array([r[i] for r in rows], f.type) for i, f in enumerate(seg_schema)], schema=seg_schema))
    write_maps(X, labels, {r[0]: r[1] for r in rows}, segments_dir(Path(store.path)) / f"{schema}-map")
    ctx.write(assignments, pa.table({"customer_id": pa.array(frame.index.astype(str), pa.string()),
                                     "segment_id": pa.array(labels.astype(np.int32))}))
    return {}
