"""A straightforward pandas implementation of ShopLens' behavioural features.

It is the baseline in ``bench/features.py`` and, because it is written independently of
the Ibis expressions, a cross-check in ``tests/test_features.py``: both must agree on
the demo shop. Definitions follow docs/data-model.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = 86400.0


def _days(later: pd.Series | pd.Timestamp, earlier: pd.Series) -> pd.Series:
    return (later - earlier).dt.total_seconds() / DAY  # type: ignore[union-attr]


def _div(num: pd.Series, den: pd.Series) -> pd.Series:
    num, den = num.astype(float), den.astype(float)
    return (num / den).where(den > 0)


def _score(values: pd.Series, buyer: pd.Series, descending: bool = False) -> pd.Series:
    v = values[buyer]
    v = -v if descending else v
    rank = v.rank(method="min")
    n = len(v)
    pr = (rank - 1) / (n - 1) if n > 1 else rank * 0.0
    score = np.minimum(np.floor(pr * 5).astype("int64") + 1, 5)
    return score.reindex(values.index).astype("Int64")


def category_spend(orders: pd.DataFrame, items: pd.DataFrame, products: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    paid = orders.loc[(orders.status == "paid") & (orders.order_ts < as_of), ["order_id", "customer_id"]]
    p = products[["product_id", "category"]].copy()
    p["category"] = p["category"].str.extract(r"^([^/>]+)", expand=False).str.strip()
    lines = items.merge(paid, on="order_id").merge(p, on="product_id")
    lines["category"] = lines["category"].fillna("unknown").replace("", "unknown")
    lines["spend"] = lines.quantity.astype(float) * lines.unit_price.astype(float) - lines.discount.astype(float)
    per = lines.groupby(["customer_id", "category"], as_index=False)["spend"].sum()
    per["share"] = per.spend / per.groupby("customer_id").spend.transform("sum")
    per = per.sort_values(["customer_id", "spend", "category"], ascending=[True, False, True])
    per["rank"] = per.groupby("customer_id").cumcount()
    return per


def pandas_features(
    customers: pd.DataFrame, orders: pd.DataFrame, items: pd.DataFrame, products: pd.DataFrame,
    events: pd.DataFrame, as_of: pd.Timestamp, rules: list,
) -> pd.DataFrame:
    o = orders[orders.order_ts < as_of].copy()
    o["amount"] = o.amount.astype(float)
    o["discount"] = o.discount.astype(float)
    o["is_paid"] = o.status == "paid"
    o["is_cancelled"] = o.status == "cancelled"
    o["is_returned"] = o.status == "returned"
    status = o.groupby("customer_id").agg(n_orders_all=("order_id", "size"), n_cancelled=("is_cancelled", "sum"),
                                         n_returned=("is_returned", "sum"))
    paid = o[o.is_paid].copy()
    since_90 = as_of - pd.Timedelta(days=90)
    paid["disc"] = paid.discount > 0
    paid["disc_spend"] = paid.amount.where(paid.disc, 0.0)
    paid["recent"] = paid.order_ts >= since_90
    paid["recent_spend"] = paid.amount.where(paid.recent, 0.0)
    money = paid.groupby("customer_id").agg(
        n_orders=("order_id", "size"), total_spend=("amount", "sum"), total_discount=("discount", "sum"),
        n_discounted=("disc", "sum"), discounted_spend=("disc_spend", "sum"), first_order_at=("order_ts", "min"),
        last_order_at=("order_ts", "max"), orders_last_90d=("recent", "sum"), spend_last_90d=("recent_spend", "sum"),
    )
    paid["day"] = paid.order_ts.dt.floor("D")
    daily = paid.groupby(["customer_id", "day"], as_index=False)["amount"].sum()
    btyd = daily.groupby("customer_id").agg(n_days=("day", "size"), first_day=("day", "min"), last_day=("day", "max"),
                                           all_spend=("amount", "sum"))
    first_spend = daily.sort_values("day").groupby("customer_id")["amount"].first()
    btyd["repeat_spend"] = btyd.all_spend - first_spend

    cats = category_spend(orders, items, products, as_of)
    top = cats[cats["rank"] == 0].set_index("customer_id")[["category", "share"]]
    top.columns = ["top_category", "top_category_share"]
    ncat = cats.groupby("customer_id").size().rename("n_categories")

    ev = events[events.event_ts < as_of]
    acts = pd.concat([paid[["customer_id", "order_ts"]].rename(columns={"order_ts": "ts"}),
                      ev[["customer_id", "event_ts"]].rename(columns={"event_ts": "ts"})])
    acts["hour"] = acts.ts.dt.hour
    acts["dow"] = acts.ts.dt.dayofweek
    acts["weekend"] = acts.dow >= 5
    acts["night"] = (acts.hour < 6) | (acts.hour >= 22)
    rhythm = acts.groupby("customer_id").agg(weekend_share=("weekend", "mean"), night_share=("night", "mean"))
    peaks = {}
    for key in ("hour", "dow"):
        counts = acts.groupby(["customer_id", key]).size().rename("n").reset_index()
        counts = counts.sort_values(["customer_id", "n", key], ascending=[True, False, True]).drop_duplicates("customer_id")
        peaks[key] = counts.set_index("customer_id")[key]

    since_30 = as_of - pd.Timedelta(days=30)
    e = ev.assign(view=ev.event_type == "view", search=ev.event_type == "search", cart=ev.event_type == "cart",
                  fav=ev.event_type == "favorite", recent=ev.event_ts >= since_30)
    evagg = e.groupby("customer_id").agg(n_events=("event_type", "size"), n_views=("view", "sum"), n_searches=("search", "sum"),
                                         n_cart_adds=("cart", "sum"), n_favorites=("fav", "sum"),
                                         n_sessions=("session_id", "nunique"), events_last_30d=("recent", "sum"))
    viewed = ev.loc[(ev.event_type == "view") & ev.product_id.notna(), ["customer_id", "product_id"]].drop_duplicates()
    bought = items.merge(paid[["order_id", "customer_id"]], on="order_id")[["customer_id", "product_id"]].drop_duplicates()
    bought["bought"] = 1
    vb = viewed.merge(bought, on=["customer_id", "product_id"], how="left")
    conv = vb.groupby("customer_id").agg(n_viewed_products=("product_id", "size"), n_viewed_bought=("bought", "count"))

    f = customers[["customer_id", "signup_at"]].set_index("customer_id")
    for part in (status, money, btyd, top, ncat, rhythm, peaks["hour"], peaks["dow"], evagg, conv):
        f = f.join(part)
    n_days = f.n_days.fillna(0)
    frequency = (n_days - 1).clip(lower=0).astype("int64")
    recency = _days(f.last_day, f.first_day)
    out = pd.DataFrame(index=f.index)
    out["tenure_days"] = _days(as_of, f.signup_at.fillna(f.first_order_at))
    out["n_orders"] = f.n_orders.fillna(0).astype("int64")
    out["n_orders_all"] = f.n_orders_all.fillna(0).astype("int64")
    out["total_spend"] = f.total_spend.fillna(0.0).round(2)
    out["aov"] = _div(f.total_spend, f.n_orders)
    out["first_order_at"] = f.first_order_at
    out["last_order_at"] = f.last_order_at
    out["recency_days"] = _days(as_of, f.last_order_at)
    out["frequency"] = frequency
    out["recency"] = recency
    out["T"] = _days(as_of - pd.Timedelta(days=1), f.first_day)
    out["monetary_value"] = _div(f.repeat_spend, frequency)
    out["mean_interpurchase_days"] = _div(recency, frequency)
    out["orders_last_90d"] = f.orders_last_90d.fillna(0).astype("int64")
    out["spend_last_90d"] = f.spend_last_90d.fillna(0.0).round(2)
    buyer = out.n_orders > 0
    out["r_score"] = _score(out.recency_days, buyer, descending=True)
    out["f_score"] = _score(out.n_orders.astype(float), buyer)
    out["m_score"] = _score(out.total_spend, buyer)
    out["rfm_score"] = (out.r_score.astype(str) + out.f_score.astype(str) + out.m_score.astype(str)).where(buyer)
    fm = (out.f_score + out.m_score + 1) // 2
    conds = [(out.r_score.between(*r.r) & fm.between(*r.fm)).fillna(False).to_numpy(bool) for r in rules]
    out["rfm_segment"] = np.where(buyer, np.select(conds, [r.name for r in rules], "Other"), "No purchase")
    out["rfm_segment_zh"] = np.where(buyer, np.select(conds, [r.name_zh for r in rules], "其他"), "未购买")
    out["discount_rate"] = _div(f.total_discount, f.total_spend + f.total_discount)
    out["discount_order_share"] = _div(f.n_discounted, f.n_orders)
    out["discounted_spend_share"] = _div(f.discounted_spend, f.total_spend)
    out["cancel_rate"] = _div(f.n_cancelled, f.n_orders_all)
    out["return_rate"] = _div(f.n_returned, f.n_orders.fillna(0) + f.n_returned.fillna(0))
    out["n_categories"] = f.n_categories.fillna(0).astype("int64")
    out["top_category"] = f.top_category
    out["top_category_share"] = f.top_category_share
    out["peak_hour"] = f.hour
    out["peak_weekday"] = f.dow
    out["weekend_share"] = f.weekend_share
    out["night_share"] = f.night_share
    for c in ("n_events", "n_views", "n_searches", "n_cart_adds", "n_favorites", "n_sessions", "events_last_30d"):
        out[c] = f[c].fillna(0).astype("int64")
    out["view_to_buy_rate"] = _div(f.n_viewed_bought, f.n_viewed_products)
    out["cart_to_order_rate"] = _div(f.n_orders.fillna(0), f.n_cart_adds)
    return out.reset_index()


def differing_columns(ours: pd.DataFrame, ref: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns where two feature tables (keyed by customer_id) disagree; [] when equal.

    Numbers are compared with a relative tolerance of 1e-9, timestamps and labels exactly;
    missing values must be missing on both sides.
    """
    a = ours.set_index("customer_id").sort_index()
    b = ref.set_index("customer_id").sort_index()
    if list(a.index) != list(b.index):
        return ["customer_id"]
    bad = []
    for col in columns:
        x, y = a[col], b[col]
        if pd.api.types.is_datetime64_any_dtype(x) or pd.api.types.is_datetime64_any_dtype(y):
            same = (pd.to_datetime(x).isna() == pd.to_datetime(y).isna()).all() and (
                pd.to_datetime(x).dropna() == pd.to_datetime(y).dropna()).all()
        elif pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            same = np.allclose(x.astype(float), y.astype(float), rtol=1e-9, atol=1e-6, equal_nan=True)
        else:
            same = (x.isna() == y.isna()).all() and (x.dropna().astype(str) == y.dropna().astype(str)).all()
        if not same:
            bad.append(col)
    return bad
