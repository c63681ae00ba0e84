"""The build's recommend stage: fit ``HybridRecommender`` on the shop's paid purchases
and product views, rank a pool of products for every customer, apply the business
rules, and write

- ``recommendations``: per customer the ranked pool (``[recommend] rules`` ``pool``
  entries, enough for request-time filters), each with score, sources, reason (en, zh),
  category and whether the customer bought it already;
- ``product_similar``: per product its top neighbours bought together / viewed together;
- ``recommend_fallback``: per segment (and ``*`` for the whole shop) the popular list a
  customer who is not in the build is served.

The model is fitted on the driver from grouped purchase lines (one row per customer x
product x basket); on Spark the engine computes that table and the driver fits and
ranks (not yet per partition). Product names and categories are embedded with the text
step's embedder for the content source. Customers without personalisation consent are
left out of the fit and shown the shop's popular list.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shoplens.config import Config
from shoplens.engine.base import Snapshot
from shoplens.pipeline.stage import BaseStage, BuildContext, StageReport, TableSpec, empty
from shoplens.recommend.hybrid import HybridRecommender
from shoplens.recommend.reasons import Reasons, load_rules
from shoplens.recommend.rules import apply_rules

_S, _D, _I = pa.string(), pa.float64(), pa.int32()
RECOMMENDATIONS = pa.schema([("customer_id", _S), ("rank", _I), ("product_id", _S), ("name", _S), ("category", _S),
                             ("score", _D), ("source", _S), ("reason", _S), ("reason_zh", _S), ("purchased", pa.bool_())])
SIMILAR = pa.schema([("product_id", _S), ("kind", _S), ("rank", _I), ("similar_id", _S), ("score", _D)])
FALLBACK = pa.schema([("segment", _S), ("rank", _I), ("product_id", _S), ("score", _D)])
VIEW_TYPES = ("view", "click", "cart", "favorite")
SIMILAR_K = 20


class RecommendStage(BaseStage):
    name = "recommend"
    version = 1
    needs = ("customers", "orders", "order_items", "products", "events", "customer_consent", "customer_predictions",
             "customer_segments", "segments")
    makes = (TableSpec("recommendations", RECOMMENDATIONS, index=True), TableSpec("product_similar", SIMILAR, ("product_id",)),
             TableSpec("recommend_fallback", FALLBACK, ("segment",)))

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.recommend.enabled else "disabled in [recommend]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        rules = load_rules(None if cfg.recommend.rules == "default" else cfg.recommend.rules)
        return cfg.recommend.model_dump(exclude={"enabled"}) | {"rules_content": rules, "as_of": snapshot.as_of,
                                                                "embedder": _embedder_name(cfg)}

    def run(self, ctx: BuildContext) -> StageReport:
        cfg, engine, snap = ctx.cfg, ctx.engine, ctx.snapshot
        path = None if cfg.recommend.rules == "default" else cfg.recommend.rules
        rules = load_rules(path)
        inter, views, products, customers = _inputs(engine, snap)
        # personal data of customers without personalisation consent is not used, and they
        # are shown the shop's popular list
        consented = set(customers.loc[customers["personalisation"].fillna(False).astype(bool), "customer_id"])
        inter = inter[inter["customer_id"].isin(consented)]
        views = views[views["customer_id"].isin(consented)]
        if inter.empty:
            for spec in self.makes:
                ctx.write(spec, empty(spec.schema_for(cfg)))
            return StageReport(skipped={"recommend": "no paid purchases with products"})
        if (name := _embedder_name(cfg)) is not None:  # content similarity of product names and categories
            from shoplens.text.embed import make_embedder

            ctx.on_info(f"recommend: embedding {len(products):,} product names")
            texts = (products["name"].fillna("").astype(str) + " " + products["category"].fillna("").astype(str)).tolist()
            products = products.assign(embedding=list(make_embedder(name, None).embed(texts)))
        ctx.on_info(f"recommend: fitting on {len(inter):,} purchase lines")
        model = HybridRecommender(non_repeat_threshold=float(rules["rules"].get("non_repeat_threshold", 0.05)),
                                  profile_features=("clv", "churn_risk"), max_train_customers=cfg.recommend.fit_sample,
                                  n_candidates=cfg.recommend.candidates,
                                  reasons=Reasons(rules.get("reasons", {})))
        model.fit(inter, products, customers, views if len(views) else None, on_info=ctx.on_info)
        pool = int(rules["rules"].get("pool", 50))
        ids = customers["customer_id"].tolist()
        personal = [c for c in ids if c in consented]
        groups = {str(k): str(v) for k, v in customers.set_index("customer_id")["group"].dropna().items()}
        ctx.on_info(f"recommend: ranking {pool} products for {len(personal):,} customers")
        # half as many again as kept: the rules may drop some
        recs = model.recommend(personal, n=pool + pool // 2, exclude_purchased=None, groups=groups)
        recs = pd.concat([recs, _not_personal([c for c in ids if c not in consented], model, pool + pool // 2)],
                         ignore_index=True)
        recs = apply_rules(recs, products, rules["rules"], pool)
        recs = _with_products(recs, products, model)
        ctx.write(self.makes[0], pa.Table.from_pandas(recs, schema=RECOMMENDATIONS, preserve_index=False))
        ctx.write(self.makes[1], pa.Table.from_pandas(_similar(model), schema=SIMILAR, preserve_index=False))
        ctx.write(self.makes[2], pa.Table.from_pandas(_fallback(model, pool), schema=FALLBACK, preserve_index=False))
        served = recs.loc[recs["rank"] == 1, "source"].str.split(",").str[0]
        summary = {"customers": len(ids), "products": len(model.items_),
                   "fallback": {k: int(v) for k, v in served[served.str.startswith("fallback")].value_counts().items()},
                   "ranker": getattr(model, "validation_", None), "popularity": model.popularity_}
        return StageReport(summary=summary)


def _embedder_name(cfg: Config) -> str | None:
    """The text step's embedder for product content, when the text step runs."""
    return cfg.text.embedder if cfg.text.enabled else None


def _inputs(engine: Any, snap: Snapshot) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    orders = engine.table("orders")
    items = engine.table("order_items")
    paid = orders.filter(orders.status == "paid")
    lines = items.join(paid, items.order_id == paid.order_id).select(
        customer_id=paid.customer_id, product_id=items.product_id, ts=paid.order_ts, quantity=items.quantity)
    lines = lines.filter(lines.product_id.notnull())
    inter = engine.collect(lines.group_by("customer_id", "product_id", "ts").agg(quantity=lines.quantity.sum())).to_pandas()
    ev = engine.table("events")
    ev = ev.filter(ev.event_type.isin(VIEW_TYPES) & ev.product_id.notnull())
    views = engine.collect(ev.group_by("customer_id", "product_id").agg(ts=ev.event_ts.max())).to_pandas()
    products = engine.collect(engine.table("products").select("product_id", "name", "category")).to_pandas()
    c = engine.table("customers", snap).select("customer_id")
    seg = engine.table("customer_segments", snap)
    names = engine.table("segments", snap).select("segment_id", group="name")
    pred = engine.table("customer_predictions", snap).select("customer_id", "clv", "churn_risk")
    rows = c.left_join(seg, c.customer_id == seg.customer_id).drop("customer_id_right")
    rows = rows.left_join(names, rows.segment_id == names.segment_id).drop("segment_id_right")
    rows = rows.left_join(pred, rows.customer_id == pred.customer_id).drop("customer_id_right")
    consent = engine.table("customer_consent", snap).select("customer_id", "personalisation")
    rows = rows.left_join(consent, rows.customer_id == consent.customer_id).drop("customer_id_right")
    customers = engine.collect(rows.select("customer_id", "group", "clv", "churn_risk", "personalisation")).to_pandas()
    # one order whatever the engine returned: the fit's indices, and so ALS and the ranker, follow it
    return (inter.sort_values(["customer_id", "product_id", "ts"], ignore_index=True),
            views.sort_values(["customer_id", "product_id"], ignore_index=True),
            products.sort_values("product_id", ignore_index=True),
            customers.sort_values("customer_id", ignore_index=True))


def _not_personal(ids: list[str], model: HybridRecommender, k: int) -> pd.DataFrame:
    """The shop's popular list for customers without personalisation consent."""
    top = model.fitted_.pop.top(k)
    en, zh = (model.reasons or Reasons.load()).render("popular", {})
    n = len(top)
    return pd.DataFrame({"customer_id": np.repeat(ids, n), "rank": np.tile(np.arange(1, n + 1), len(ids)),
                         "product_id": np.tile(model.items_[top].to_numpy(), len(ids)),
                         "score": np.tile(model.fitted_.pop.overall[top], len(ids)), "source": "fallback:no_consent",
                         "reason": en, "reason_zh": zh})


def _with_products(recs: pd.DataFrame, products: pd.DataFrame, model: HybridRecommender) -> pd.DataFrame:
    p = model.products_.set_index("product_id")
    out = recs.assign(name=recs["product_id"].map(p["name"]).astype(str),
                      category=recs["product_id"].map(p["category"]).astype(str))
    bought = model.fitted_.x.counts
    u = model.users_.get_indexer(out["customer_id"])
    i = model.items_.get_indexer(out["product_id"])
    ok = (u >= 0) & (i >= 0)
    purchased = np.zeros(len(out), dtype=bool)
    purchased[ok] = np.asarray(bought[u[ok], i[ok]]).ravel() > 0
    out["purchased"] = purchased
    out["rank"] = out["rank"].astype(np.int32)
    return out[[f.name for f in RECOMMENDATIONS]]


def _similar(model: HybridRecommender) -> pd.DataFrame:
    frames = []
    for kind, source in (("bought_together", model.fitted_.co), ("viewed_together", model.fitted_.views)):
        if source is None:
            continue
        s = source.sim.tocoo()
        f = pd.DataFrame({"p": s.row, "q": s.col, "score": s.data.astype(float)})
        f = f.sort_values(["p", "score"], ascending=[True, False])
        f["rank"] = f.groupby("p").cumcount() + 1
        f = f[f["rank"] <= SIMILAR_K]
        frames.append(pd.DataFrame({"product_id": model.items_[f["p"]].to_numpy(), "kind": kind,
                                    "rank": f["rank"].astype(np.int32).to_numpy(),
                                    "similar_id": model.items_[f["q"]].to_numpy(), "score": f["score"].to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[f.name for f in SIMILAR])


def _fallback(model: HybridRecommender, k: int) -> pd.DataFrame:
    pop = model.fitted_.pop
    rows = []
    for segment, table in [("*", pop.overall), *pop.groups.items()]:
        top = pop.top(k, None if segment == "*" else segment)
        rows.append(pd.DataFrame({"segment": segment, "rank": np.arange(1, len(top) + 1, dtype=np.int32),
                                  "product_id": model.items_[top].to_numpy(), "score": table[top]}))
    return pd.concat(rows, ignore_index=True)

