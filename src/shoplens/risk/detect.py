"""The risk detectors: one function per flag type, each from plain tables to flags with
facts a person can check.

Every threshold comes from ``rules/risk.toml``. Where a flag rests on a count (returns,
deep discounts, unusual behaviour), the customer's figure is tested against the shop's
own (binomial tails, robust z-scores) and the Benjamini-Hochberg false discovery rate
over all customers draws the line (scipy's ``false_discovery_control``), so no share of
abusers is ever assumed; PyOD's detectors need one (pyod#144, #627). Linking and copy
groups are graph components (scipy's ``connected_components``); copies are found with
character n-gram TF-IDF (scikit-learn). The glue is written here because no library
turns these tests into reviewable flags.

Each detector returns a frame ``customer_id, type, level, score, facts, group`` (``facts``:
a list of ``{description, description_zh, sentiment}``; ``group``: the linked accounts'
group, else empty), one row per flagged customer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components

LEVELS = ("LOW", "MEDIUM", "HIGH")
COLUMNS = ["customer_id", "type", "level", "score", "facts", "group"]


def fact(spec: dict[str, str], **values: Any) -> dict[str, str]:
    return {"description": spec["en"].format(**values), "description_zh": spec["zh"].format(**values),
            "sentiment": spec.get("sentiment", "negative")}


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); empty in, empty out."""
    return stats.false_discovery_control(p) if len(p) else p


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def _level(q: float, medium: float, high: float, high_ok: bool = True) -> str | None:
    if q <= high and high_ok:
        return "HIGH"
    if q <= medium:
        return "MEDIUM"
    return None


def return_abuse(orders: pd.DataFrame, lines: pd.DataFrame, rules: dict[str, Any]) -> pd.DataFrame:
    """Customers returning far more than the shop does. ``orders``: customer_id, order_id,
    status, amount; ``lines``: order_id, top_category, above_median."""
    r, facts = rules["return_abuse"], rules["return_abuse"]["facts"]
    done = orders[orders["status"].isin(["paid", "returned"])]
    if done.empty:
        return _frame([])
    returned = done["status"] == "returned"
    base = float(returned.mean())
    wardrobe = set(r.get("wardrobing_categories", []))
    worn = lines.assign(w=lines["top_category"].isin(wardrobe) | lines["above_median"]).groupby("order_id")["w"].any()
    d = done.assign(ret=returned, value=np.where(returned, done["amount"], 0.0),
                    worn=returned & done["order_id"].map(worn).astype("boolean").fillna(False).astype(bool))
    per = d.groupby("customer_id").agg(orders=("ret", "size"), returned=("ret", "sum"), value=("value", "sum"),
                                       worn=("worn", "sum"))
    p = stats.binom.sf(per["returned"].to_numpy() - 1, per["orders"].to_numpy(), max(base, 1e-9))
    per["q"] = bh(p)
    rows = []
    for cid, x in per[(per["orders"] >= r["min_orders"]) & (per["returned"] > 0)].iterrows():
        rate = x.returned / x.orders
        level = _level(x.q, r["fdr_medium"], r["fdr_high"], rate >= r["high_min_rate"])
        if level is None:
            continue
        fs = [fact(facts["rate"], returned=int(x.returned), orders=int(x.orders), rate=rate, base=base),
              fact(facts["value"], value=float(x.value))]
        if x.worn >= 2:
            fs.append(fact(facts["wardrobing"], count=int(x.worn)))
        if x.orders > x.returned:
            fs.append(fact(facts["kept"], kept=int(x.orders - x.returned)))
        rows.append({"customer_id": cid, "type": "return_abuse", "level": level, "score": 1 - float(x.q), "facts": fs})
    return _frame(rows)


def components(links: pd.DataFrame, kinds: list[str], max_shared: int) -> pd.DataFrame:
    """Groups of accounts linked by shared identifier hashes: per customer its
    ``group`` id, the group's ``size`` and the identifier kinds shared within it."""
    lk = links[links["kind"].isin(kinds)].drop_duplicates(["customer_id", "link_hash"])
    width = lk.groupby("link_hash")["customer_id"].transform("size")
    lk = lk[(width >= 2) & (width <= max_shared)]
    if lk.empty:
        return pd.DataFrame(columns=["customer_id", "group", "size", "kinds"])
    cust = pd.Index(lk["customer_id"].unique())
    vals = pd.Index(lk["link_hash"].unique())
    n = len(cust)
    m = sparse.coo_matrix((np.ones(len(lk)), (cust.get_indexer(lk["customer_id"]), n + vals.get_indexer(lk["link_hash"]))),
                          shape=(n + len(vals), n + len(vals)))
    _, label = connected_components(m, directed=False)
    out = pd.DataFrame({"customer_id": cust, "group": label[:n]})
    out["size"] = out.groupby("group")["customer_id"].transform("size")
    kinds_of = lk.assign(group=label[cust.get_indexer(lk["customer_id"])]).groupby("group")["kind"].agg(
        lambda k: sorted(set(k)))
    out["kinds"] = out["group"].map(kinds_of)
    return out


def linked_accounts(groups: pd.DataFrame, rules: dict[str, Any]) -> pd.DataFrame:
    r, labels = rules["linked_accounts"], rules["labels"]
    rows = []
    members = groups.groupby("group")["customer_id"].agg(list)
    for cid, group, size, kinds in zip(groups["customer_id"], groups["group"], groups["size"].astype(int),
                                       groups["kinds"], strict=True):
        others = len(members[group]) - 1
        level = ("HIGH" if len(kinds) >= r["high_kinds"] else "MEDIUM") if size >= r["medium_size"] else "LOW"
        f = fact(r["facts"]["linked"], kinds=" / ".join(labels[k]["en"] for k in kinds),
                 kinds_zh="/".join(labels[k]["zh"] for k in kinds), others=others)
        # the other accounts are found through ``group`` when read, never written into the
        # facts: an erased account leaves with its own rows
        rows.append({"customer_id": cid, "type": "linked_accounts", "level": level,
                     "score": 1 - 1 / size, "facts": [f], "group": f"g{group}"})
    return _frame(rows)


def coupon_abuse(orders: pd.DataFrame, customers: pd.DataFrame, groups: pd.DataFrame,
                 rules: dict[str, Any]) -> pd.DataFrame:
    """New accounts that only buy deeply discounted (HIGH when linked to others doing
    the same: a farm), and established ones with far more deep discounts than the shop."""
    r, facts = rules["coupon_abuse"], rules["coupon_abuse"]["facts"]
    done = orders[orders["status"].isin(["paid", "returned"])]
    if done.empty:
        return _frame([])
    listed = done["amount"] + done["discount"]
    d = done.assign(deep=(done["discount"] >= r["deep_discount"] * listed) & (listed > 0))
    base = float(d["deep"].mean())
    per = d.groupby("customer_id").agg(orders=("deep", "size"), deep=("deep", "sum"), first=("order_ts", "min"))
    per = per.join(customers.set_index("customer_id")["signup_at"])
    per["days"] = (per["first"] - per["signup_at"]).dt.days
    per["new_only"] = (per["deep"] == per["orders"]) & (per["days"] <= r["new_account_days"])
    per["q"] = bh(stats.binom.sf(per["deep"].to_numpy() - 1, per["orders"].to_numpy(), max(base, 1e-9)))
    g = groups.set_index("customer_id")
    in_group = per.index.intersection(g.index)
    farm_mates = pd.Series(0, index=per.index)
    if len(in_group):
        farmers = per.loc[in_group, "new_only"]
        counts = farmers.groupby(g.loc[in_group, "group"]).sum()
        farm_mates.loc[in_group] = g.loc[in_group, "group"].map(counts).to_numpy() - farmers.astype(int).to_numpy()
    rows = []
    for cid, x in per[per["deep"] > 0].iterrows():
        mates = int(farm_mates.get(cid, 0))
        if x.new_only and mates >= 1:
            level, score = "HIGH", 1 - 0.5 ** (mates + 1)
        elif x.new_only and x.orders >= 2:
            level, score = "MEDIUM", 1 - 0.5 ** x.orders
        elif x.q <= r["fdr_medium"]:
            level, score = "MEDIUM", 1 - float(x.q)
        elif x.new_only:
            level, score = "LOW", 0.5
        else:
            continue
        fs = [fact(facts["deep"], deep=int(x.deep), orders=int(x.orders), depth=r["deep_discount"])]
        if x.new_only:
            fs.append(fact(facts["new"], days=int(x.days)))
        if mates:
            fs.append(fact(facts["farm"], others=mates))
        if x.orders > x.deep:
            fs.append(fact(facts["full_price"], paid=int(x.orders - x.deep)))
        rows.append({"customer_id": cid, "type": "coupon_abuse", "level": level, "score": float(score), "facts": fs})
    return _frame(rows)


def _copy_groups(texts: pd.DataFrame, r: dict[str, Any]) -> pd.DataFrame:
    """Per text in a copy group: the group's accounts and its time span in days."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    norm = texts["text"].fillna("").str.lower().str.replace(r"[\s\W\d_]+", "", regex=True)
    t = texts.assign(norm=norm)
    t = t[(t["norm"].str.len() >= r["min_chars"]) & t["product_id"].notna()]
    found = []
    for _pid, grp in t.groupby("product_id"):
        if grp["customer_id"].nunique() < r["min_accounts"]:
            continue
        x = TfidfVectorizer(analyzer="char", ngram_range=(2, 3)).fit_transform(grp["norm"])
        sim = (x @ x.T).tocoo()
        keep = sim.data >= r["near_duplicate"]
        adj = sparse.coo_matrix((np.ones(keep.sum()), (sim.row[keep], sim.col[keep])), shape=sim.shape)
        _, label = connected_components(adj, directed=False)
        g = grp.assign(label=label)
        for _l, members in g.groupby("label"):
            if members["customer_id"].nunique() < r["min_accounts"]:
                continue
            # the members within one window: the densest run of window_days
            ts = members.sort_values("created_at")
            span = (ts["created_at"].max() - ts["created_at"].min()).days
            if span > r["window_days"]:
                continue
            found.append(members.assign(accounts=members["customer_id"].nunique(), span=span))
    return pd.concat(found) if found else pd.DataFrame(columns=[*texts.columns, "accounts", "span"])


def review_manipulation(texts: pd.DataFrame, rules: dict[str, Any]) -> pd.DataFrame:
    """Copy groups across accounts, bursts, and ratings their own words contradict.
    ``texts``: text_id, customer_id, product_id, rating, text, created_at, sentiment."""
    r, facts = rules["review_manipulation"], rules["review_manipulation"]["facts"]
    reviews = texts[texts["rating"].notna()]
    if reviews.empty:
        return _frame([])
    copies = _copy_groups(reviews, r)
    ring: dict[str, tuple[int, int]] = {}
    if len(copies):
        g = copies.groupby("customer_id").agg(accounts=("accounts", "max"), span=("span", "max"))
        ring = {str(c): (int(a), int(sp)) for c, a, sp in zip(g.index, g["accounts"], g["span"], strict=True)}
    day = reviews["created_at"].dt.floor("D")
    burst = reviews.assign(day=day).groupby(["customer_id", "day"]).size().groupby("customer_id").max().to_dict()
    s, m = reviews["sentiment"], r["mismatch_sentiment"]
    mism = reviews.assign(x=((reviews["rating"] >= 4) & (s <= -m)) | ((reviews["rating"] <= 2) & (s >= m)))
    per = mism.groupby("customer_id").agg(reviews=("x", "size"), mismatch=("x", "sum"))
    rows = []
    for cid, x in per.iterrows():
        fs, level, score = [], None, 0.0
        if cid in ring:
            acc, span = ring[str(cid)]
            fs.append(fact(facts["ring"], others=acc - 1, days=max(span, 1)))
            level = "HIGH" if acc >= r["high_accounts"] else "MEDIUM"
            score = 1 - 1 / acc
        if (most := int(burst.get(cid, 0))) >= r["burst_reviews"]:
            fs.append(fact(facts["burst"], count=most))
            level, score = level or "MEDIUM", max(score, 0.6)
        if x.mismatch >= 2 and x.mismatch / x.reviews >= 0.5:
            fs.append(fact(facts["mismatch"], count=int(x.mismatch), reviews=int(x.reviews)))
            level, score = level or "LOW", max(score, 0.3)
        if level:
            rows.append({"customer_id": cid, "type": "review_manipulation", "level": level, "score": score, "facts": fs})
    return _frame(rows)


def unusual_behaviour(features: pd.DataFrame, rules: dict[str, Any]) -> pd.DataFrame:
    """Customers whose behaviour lies far out on some feature (``RobustScorer``)."""
    from shoplens.risk.anomaly import RobustScorer

    r, labels = rules["unusual_behaviour"], rules["labels"]
    cols = [c for c in r["features"] if c in features.columns]
    if features.empty or not cols:
        return _frame([])
    scorer = RobustScorer().fit(features[cols])
    p, z = scorer.p_values(features[cols])
    q = bh(np.minimum(p.min(axis=1) * len(cols), 1.0))
    rows = []
    for i in np.flatnonzero(q <= r["fdr_medium"]):
        level = "HIGH" if q[i] <= r["fdr_high"] else "MEDIUM"
        order = np.argsort(-z[i])
        fs = [fact(r["facts"]["feature"], label=labels[cols[j]]["en"], label_zh=labels[cols[j]]["zh"],
                   value=float(features[cols[j]].iloc[i]), typical=float(scorer.typical_[j]), z=float(z[i, j]))
              for j in order[:3] if z[i, j] >= r["min_z"]]
        rows.append({"customer_id": features["customer_id"].iloc[i], "type": "unusual_behaviour", "level": level,
                     "score": 1 - float(q[i]), "facts": fs})
    return _frame(rows)
