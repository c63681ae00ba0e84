"""The build's insight stage: product and service insight from what customers write
and buy (docs/insight.md).

Writes ``aspect_insight`` (per product, category and brand x aspect, with the fix-first
rank), ``aspect_quotes`` (the period's negative evidence spans, grouped; one row per
text so erasure removes a customer's quotes with their rows), ``aspect_alerts`` (weekly
complaint spikes under a false discovery rate) and ``segment_aspects`` (which segments
complain about what, and the CLV of those who do). Computed on the driver from tables
the engine collects (mentions and order lines, not texts' embeddings).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shoplens.config import Config
from shoplens.engine.base import Snapshot
from shoplens.errors import ModelError
from shoplens.insight import alerts, aspects
from shoplens.pipeline.stage import BaseStage, BuildContext, StageReport, TableSpec

_S, _D, _I, _B, _T = pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.timestamp("us")
ASPECT_INSIGHT = pa.schema([("level", _S), ("key", _S), ("name", _S), ("category", _S), ("aspect", _S),
                            ("mentions", _I), ("customers", _I), ("complainers", _I), ("negative_share", _D),
                            ("ci_low", _D), ("ci_high", _D), ("prev_negative_share", _D), ("change", _D),
                            ("category_negative_share", _D), ("difference", _D), ("return_rate", _D),
                            ("category_return_rate", _D), ("revenue", _D), ("revenue_at_risk", _D), ("fix_rank", _I),
                            ("shown", _B)])
QUOTES = pa.schema([("customer_id", _S), ("text_id", _S), ("product_id", _S), ("aspect", _S), ("evidence", _S),
                    ("created_at", _T), ("group_id", _S), ("group_size", _I), ("group_label", _S)])
ALERTS = pa.schema([("product_id", _S), ("name", _S), ("category", _S), ("aspect", _S), ("week", _T),
                    ("complaints", _I), ("customers", _I), ("texts", _I), ("share", _D), ("baseline_share", _D),
                    ("p_value", _D), ("q_value", _D)])
SEGMENT_ASPECTS = pa.schema([("segment_id", pa.int32()), ("segment", _S), ("aspect", _S), ("customers", _I),
                             ("complainers", _I), ("complainer_share", _D), ("mean_polarity", _D),
                             ("clv_at_stake", _D), ("shown", _B)])


class InsightStage(BaseStage):
    name = "insight"
    version = 1
    needs = ("texts", "products", "orders", "order_items", "text_aspects", "customer_segments", "segments",
             "customer_predictions")
    makes = (TableSpec("aspect_insight", ASPECT_INSIGHT, ("level", "key", "aspect")),
             TableSpec("aspect_quotes", QUOTES, ("customer_id", "text_id", "aspect")),
             TableSpec("aspect_alerts", ALERTS, ("product_id", "aspect", "week")),
             TableSpec("segment_aspects", SEGMENT_ASPECTS, ("segment_id", "aspect")))

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.insight.enabled else "disabled in [insight]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        return cfg.insight.model_dump(exclude={"enabled", "demand_weeks"}) | {"as_of": snapshot.as_of}

    def run(self, ctx: BuildContext) -> StageReport:
        ic = ctx.cfg.insight
        data = inputs(ctx.engine, ctx.snapshot)
        as_of = ctx.snapshot.cutoff
        ctx.on_info(f"insight: {len(data['mentions']):,} aspect mentions")
        table = aspects.aspect_table(data["mentions"], data["sales"], data["products"], as_of, ic.period_days,
                                     ic.min_customers)
        ctx.write(self.makes[0], _arrow(table, ASPECT_INSIGHT))
        ctx.write(self.makes[1], _arrow(quotes(data, as_of, ic.period_days, ic.group_similarity), QUOTES))
        found = alerts.weekly_alerts(data["texts"], data["mentions"], data["products"], ic.baseline_weeks,
                                     ic.prior_texts, ic.min_customers, ic.fdr)
        ctx.write(self.makes[2], _arrow(found, ALERTS))
        ctx.write(self.makes[3], _arrow(segment_aspects(data, as_of, ic.period_days, ic.min_customers), SEGMENT_ASPECTS))
        ranked = table[table["fix_rank"].notna()]
        return StageReport(summary={"fix_first": int(len(ranked)), "alerts": int(len(found))})


DEMAND = pa.schema([("segment_id", pa.int32()), ("segment", _S), ("category", _S), ("week", _T), ("units", _D),
                    ("units_lo_80", _D), ("units_hi_80", _D), ("units_lo_95", _D), ("units_hi_95", _D), ("revenue", _D),
                    ("revenue_lo_80", _D), ("revenue_hi_80", _D), ("revenue_lo_95", _D), ("revenue_hi_95", _D),
                    ("units_bottom_up", _D), ("revenue_bottom_up", _D), ("model", _S), ("disagreement", _D)])


class DemandStage(BaseStage):
    """Weekly units and revenue per segment x category for the next ``demand_weeks``:
    statsforecast per series and BG/NBD bottom-up, with their disagreement
    (``insight.demand``)."""

    name = "demand"
    version = 2  # 2: revenue intervals
    needs = ("orders", "order_items", "products", "customer_segments", "segments")
    makes = (TableSpec("demand_forecast", DEMAND, ("segment_id", "category", "week")),)

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.insight.enabled else "disabled in [insight]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        return {"weeks": cfg.insight.demand_weeks, "as_of": snapshot.as_of}

    def run(self, ctx: BuildContext) -> StageReport:
        from shoplens.insight.demand import bottom_up_by, ts_forecast, weekly

        engine, snap, h = ctx.engine, ctx.snapshot, ctx.cfg.insight.demand_weeks
        o, it, p = engine.table("orders"), engine.table("order_items"), engine.table("products")
        orders = engine.collect(o.filter(o.status != "cancelled").select("order_id", "customer_id", ts=o.order_ts)).to_pandas()
        lines = engine.collect(it.join(p, it.product_id == p.product_id).select(
            it.order_id, p.category, units=it.quantity.cast("float64"),
            revenue=(it.unit_price * it.quantity - it.discount).cast("float64"))).to_pandas()
        seg = engine.table("customer_segments", snap)
        groups = engine.collect(seg.join(engine.table("segments", snap).select("segment_id", "name"), "segment_id")
                                .select("customer_id", "segment_id", "name")).to_pandas()
        if orders.empty or groups.empty:
            ctx.write(self.makes[0], _arrow(pd.DataFrame(), DEMAND))
            return StageReport(skipped={"demand": "no segmented customers with orders"})
        lines["category"] = aspects.top_category(lines["category"])
        origin = pd.Timestamp(ctx.snapshot.cutoff).to_period("W-SUN").start_time  # the last whole week ends before it
        start = orders["ts"].min().to_period("W-SUN").start_time
        keys = groups.assign(group=groups["segment_id"].astype(str))[["customer_id", "group"]]
        hist = lines.merge(orders, on="order_id").merge(keys, on="customer_id")
        series = weekly(hist, ["group", "category"], start, origin).assign(
            unique_id=lambda d: d["group"] + "|" + d["category"], ds=lambda d: d["week"])
        ctx.on_info(f"demand: forecasting {series['unique_id'].nunique():,} segment x category series")
        units = ts_forecast(series, h, "units")
        revenue = ts_forecast(series, h, "revenue").rename(columns={
            "y_hat": "revenue", "lo_80": "revenue_lo_80", "hi_80": "revenue_hi_80", "lo_95": "revenue_lo_95",
            "hi_95": "revenue_hi_95"}).drop(columns=["model"])
        f = units.merge(revenue, on=["unique_id", "ds"], how="left")
        f[["group", "category"]] = f["unique_id"].str.split("|", n=1, expand=True)
        f["k"] = f.groupby("unique_id").cumcount() + 1
        skipped = {}
        try:
            bu = bottom_up_by(orders, lines, keys, origin, h).rename(
                columns={"week": "k", "units": "units_bottom_up", "revenue": "revenue_bottom_up"})
            f = f.merge(bu, on=["group", "category", "k"], how="left")
            f[["units_bottom_up", "revenue_bottom_up"]] = f[["units_bottom_up", "revenue_bottom_up"]].fillna(0.0)
        except ModelError as err:  # histories a BG/NBD cannot fit: the time series alone, said so
            f["units_bottom_up"] = f["revenue_bottom_up"] = np.nan
            skipped["demand_bottom_up"] = str(err)
        top = f[["y_hat", "units_bottom_up"]].max(axis=1)
        f["disagreement"] = ((f["y_hat"] - f["units_bottom_up"]) / top.where(top > 0)).fillna(0.0).where(
            f["units_bottom_up"].notna())
        names = groups.drop_duplicates("segment_id").set_index(groups.drop_duplicates("segment_id")["segment_id"].astype(str))
        out = pd.DataFrame({"segment_id": f["group"].astype(int).astype(np.int32), "segment": f["group"].map(names["name"]),
                            "category": f["category"], "week": f["ds"], "units": f["y_hat"],
                            "units_lo_80": f["lo_80"], "units_hi_80": f["hi_80"], "units_lo_95": f["lo_95"],
                            "units_hi_95": f["hi_95"], "revenue": f["revenue"], "revenue_lo_80": f["revenue_lo_80"],
                            "revenue_hi_80": f["revenue_hi_80"], "revenue_lo_95": f["revenue_lo_95"],
                            "revenue_hi_95": f["revenue_hi_95"], "units_bottom_up": f["units_bottom_up"],
                            "revenue_bottom_up": f["revenue_bottom_up"], "model": f["model"],
                            "disagreement": f["disagreement"]})
        ctx.write(self.makes[0], _arrow(out.sort_values(["segment_id", "category", "week"], ignore_index=True), DEMAND))
        return StageReport(summary={"series": int(series["unique_id"].nunique()), "weeks": h}, skipped=skipped)


def inputs(engine: Any, snap: Snapshot) -> dict[str, pd.DataFrame]:
    t, a = engine.table("texts"), engine.table("text_aspects", snap)
    texts = engine.collect(t.select("text_id", "customer_id", "product_id", "created_at")).to_pandas()
    mentions = engine.collect(a.join(t.select("text_id", "product_id", "created_at"), "text_id").select(
        "text_id", "customer_id", "product_id", "aspect", "polarity", "evidence", "created_at")).to_pandas()
    products = engine.collect(engine.table("products").select("product_id", "name", "category", "brand")).to_pandas()
    o, it = engine.table("orders"), engine.table("order_items")
    sales = engine.collect(it.join(o, it.order_id == o.order_id).select(
        it.product_id, o.order_ts, o.status, revenue=(it.unit_price * it.quantity - it.discount).cast("float64"))).to_pandas()
    seg = engine.table("customer_segments", snap)
    names = engine.table("segments", snap).select("segment_id", "name")
    pred = engine.table("customer_predictions", snap).select("customer_id", "clv")
    members = engine.collect(seg.left_join(names, "segment_id").left_join(pred, "customer_id").select(
        "customer_id", "segment_id", "name", "clv")).to_pandas()
    return {"texts": texts.sort_values("text_id", ignore_index=True),
            "mentions": mentions.sort_values(["text_id", "aspect"], ignore_index=True),
            "products": products.sort_values("product_id", ignore_index=True), "sales": sales,
            "members": members.sort_values("customer_id", ignore_index=True)}


def quotes(data: dict[str, pd.DataFrame], as_of: datetime, period_days: int, similarity: float) -> pd.DataFrame:
    from shoplens.text.preprocess import tokens

    m = data["mentions"]
    start = as_of - pd.Timedelta(days=period_days)
    neg = m[(m["polarity"] == "negative") & (m["created_at"] >= start) & (m["created_at"] < as_of)
            & m["evidence"].notna() & m["product_id"].notna()]
    neg = neg.drop_duplicates(["text_id", "aspect"])
    return aspects.complaint_groups(neg[["customer_id", "text_id", "product_id", "aspect", "evidence", "created_at"]],
                                    similarity, tokens)


def segment_aspects(data: dict[str, pd.DataFrame], as_of: datetime, period_days: int, min_customers: int) -> pd.DataFrame:
    """Per segment and aspect: customers, those who complained in the period, their
    share, the mean polarity of the segment's mentions and the CLV of the complainers."""
    members, m = data["members"], data["mentions"]
    members = members[members["segment_id"].notna()]
    if members.empty:
        return pd.DataFrame(columns=SEGMENT_ASPECTS.names)
    start = as_of - pd.Timedelta(days=period_days)
    m = m[(m["created_at"] >= start) & (m["created_at"] < as_of)].merge(members, on="customer_id")
    m = m.assign(pol=m["polarity"].map({"positive": 1.0, "negative": -1.0}).fillna(0.0))
    size = members.groupby(["segment_id", "name"]).size().rename("customers")
    g = m.groupby(["segment_id", "name", "aspect"])
    out = g["pol"].mean().rename("mean_polarity").to_frame()
    neg = m[m["polarity"] == "negative"].drop_duplicates(["customer_id", "aspect"])
    out = out.join(neg.groupby(["segment_id", "name", "aspect"]).agg(complainers=("customer_id", "size"),
                                                                     clv_at_stake=("clv", "sum")))
    out = out.reset_index().join(size, on=["segment_id", "name"])
    out[["complainers", "clv_at_stake"]] = out[["complainers", "clv_at_stake"]].fillna(0)
    out["complainer_share"] = out["complainers"] / out["customers"]
    out["shown"] = out["complainers"] >= min_customers
    out.loc[~out["shown"], ["complainer_share", "clv_at_stake"]] = np.nan
    out = out.rename(columns={"name": "segment"})
    out["segment_id"] = out["segment_id"].astype(np.int32)
    return out[SEGMENT_ASPECTS.names].sort_values(["segment_id", "aspect"], ignore_index=True)


def _arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    if frame.empty:
        return pa.table({f.name: pa.array([], f.type) for f in schema}, schema=schema)
    cols = {}
    for f in schema:
        s = frame[f.name]
        if pa.types.is_integer(f.type):
            cols[f.name] = pa.array(s.astype("Int64"), type=f.type, from_pandas=True)
        elif pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array(pd.to_datetime(s), type=f.type, from_pandas=True)
        else:
            cols[f.name] = pa.array(s, type=f.type, from_pandas=True)
    return pa.table(cols, schema=schema)
