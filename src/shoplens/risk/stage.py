"""The build's risk stage: flags with facts for a person to review (docs/risk.md).

Reads the paid and returned orders with their lines, the accounts' link hashes
(``customer_links``: keyed hashes written at ingest, never the identifiers), the reviews
with their sentiment and the behaviour features, runs the detectors of ``detect`` and
writes ``risk_flags``: per customer and flag type the level, the recommendation, a
score, the facts (JSON) and, for linked accounts, the group (the other members are
looked up by it when read, never written into a fact). Flags only for customers with a profile. The detectors run
on the driver from tables the engine computes.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shoplens import __version__
from shoplens.config import Config
from shoplens.engine.base import Snapshot
from shoplens.insight.aspects import top_category
from shoplens.pipeline.stage import BaseStage, BuildContext, StageReport, TableSpec
from shoplens.risk import detect

_S, _D = pa.string(), pa.float64()
RISK_FLAGS = pa.schema([("customer_id", _S), ("type", _S), ("level", _S), ("recommendation", _S), ("score", _D),
                        ("facts", _S), ("model_version", _S), ("group_id", _S)])
TYPES = ("return_abuse", "coupon_abuse", "linked_accounts", "review_manipulation", "unusual_behaviour")
MODEL_VERSION = f"risk-rules-1/shoplens-{__version__}"


def load_rules(path: str | Path | None = None) -> dict[str, Any]:
    """The whole ``risk.toml`` (the shipped one when ``path`` is None or "default")."""
    if path and str(path) != "default":
        return tomllib.loads(Path(path).read_text("utf-8"))
    return tomllib.loads(resources.files("shoplens").joinpath("rules/risk.toml").read_text("utf-8"))


class RiskStage(BaseStage):
    name = "risk"
    version = 1
    needs = ("customers", "orders", "order_items", "products", "texts", "customer_links", "customer_features",
             "text_analysis")
    makes = (TableSpec("risk_flags", RISK_FLAGS, index=True),)

    def skip_reason(self, cfg: Config) -> str | None:
        return None if cfg.risk.enabled else "disabled in [risk]"

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        return {"rules": load_rules(_rules_path(cfg)), "as_of": snapshot.as_of}

    def run(self, ctx: BuildContext) -> StageReport:
        rules = load_rules(_rules_path(ctx.cfg))
        data = inputs(ctx.engine, ctx.snapshot)
        ctx.on_info(f"risk: checking {len(data['features']):,} customers")
        flags = flag(data, rules)
        ctx.write(self.makes[0], to_table(flags, rules))
        counts = flags[flags["level"] != "LOW"].groupby(["type", "level"]).size().reset_index()
        return StageReport(summary={"flags": {f"{t}/{lv}": int(n) for t, lv, n in counts.itertuples(index=False)}})


def _rules_path(cfg: Config) -> str | None:
    return None if cfg.risk.rules == "default" else str(cfg.resolve(cfg.risk.rules))


def inputs(engine: Any, snap: Snapshot) -> dict[str, pd.DataFrame]:
    """The detectors' tables, computed by the engine and collected on the driver."""
    o = engine.table("orders")
    orders = engine.collect(o.select("customer_id", "order_id", "order_ts", "status", "amount", "discount")).to_pandas()
    for c in ("amount", "discount"):
        orders[c] = orders[c].astype(float)
    it, p = engine.table("order_items"), engine.table("products")
    lines = engine.collect(it.join(p, it.product_id == p.product_id).select(
        it.order_id, it.quantity, it.unit_price, p.category)).to_pandas()
    lines["unit_price"] = lines["unit_price"].astype(float)
    lines["top_category"] = top_category(lines["category"])
    lines["above_median"] = lines["unit_price"] > lines.groupby("category")["unit_price"].transform("median")
    customers = engine.collect(engine.table("customers", snap).select("customer_id", "signup_at")).to_pandas()
    links = engine.collect(engine.table("customer_links").select("customer_id", "kind", "link_hash")).to_pandas()
    t, a = engine.table("texts"), engine.table("text_analysis", snap)
    texts = engine.collect(t.left_join(a.select("text_id", "sentiment"), t.text_id == a.text_id).select(
        t.text_id, t.customer_id, t.product_id, t.rating, t.text, t.created_at, "sentiment")).to_pandas()
    f = engine.table("customer_features", snap)
    features = engine.collect(f.select("customer_id", "n_views", "n_sessions", "aov")).to_pandas()
    units = lines.merge(orders[["order_id", "customer_id"]], on="order_id").groupby("customer_id")["quantity"].mean()
    features["units_per_line"] = features["customer_id"].map(units).fillna(0.0)
    features["views_per_session"] = features["n_views"].fillna(0) / features["n_sessions"].fillna(0).clip(lower=1)
    # one order whatever the engine returned: the flags do not depend on it
    return {"orders": orders.sort_values("order_id", ignore_index=True), "lines": lines,
            "customers": customers, "links": links.sort_values(["customer_id", "kind", "link_hash"], ignore_index=True),
            "texts": texts.sort_values("text_id", ignore_index=True),
            "features": features.sort_values("customer_id", ignore_index=True)}


def flag(data: dict[str, pd.DataFrame], rules: dict[str, Any]) -> pd.DataFrame:
    """Every detector's flags for the customers with a profile, ``min_score`` applied."""
    groups = detect.components(data["links"], rules["linked_accounts"]["kinds"], rules["linked_accounts"]["max_shared"])
    frames = [detect.return_abuse(data["orders"], data["lines"], rules),
              detect.coupon_abuse(data["orders"], data["customers"], groups, rules),
              detect.linked_accounts(groups, rules),
              detect.review_manipulation(data["texts"], rules),
              detect.unusual_behaviour(data["features"], rules)]
    flags = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=detect.COLUMNS)
    flags = flags[flags["customer_id"].isin(set(data["features"]["customer_id"]))].copy()
    floor = flags["type"].map({t: float(rules[t].get("min_score", 0.0)) for t in TYPES}).fillna(0.0)
    flags.loc[flags["score"].astype(float) < floor, "level"] = "LOW"
    return flags.sort_values(["customer_id", "type"], ignore_index=True)


def to_table(flags: pd.DataFrame, rules: dict[str, Any]) -> pa.Table:
    rec = {lv: spec["recommendation"] for lv, spec in rules["levels"].items()}
    return pa.table({
        "customer_id": flags["customer_id"].astype(str).tolist(), "type": flags["type"].astype(str).tolist(),
        "level": flags["level"].astype(str).tolist(), "recommendation": flags["level"].map(rec).astype(str).tolist(),
        "score": np.round(flags["score"].astype(float).to_numpy(), 4),
        "facts": [json.dumps(f, ensure_ascii=False) for f in flags["facts"]],
        "model_version": [MODEL_VERSION] * len(flags),
        "group_id": [g if isinstance(g, str) else None for g in flags["group"]]}, schema=RISK_FLAGS)
