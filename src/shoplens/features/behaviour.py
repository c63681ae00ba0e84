"""Behavioural features per customer, as Ibis expressions.

The same expressions compile to DuckDB SQL (the default store) and to Spark SQL (the
scale-out path); ``tests/test_spark_parity.py`` runs both and compares. Rules that
portably differ between engines are avoided: day differences are computed from whole
epoch seconds, quintile scores use ``percent_rank`` (ties get equal scores, unlike
``ntile``), and every arg-max breaks ties on the smaller value.

Output schema: ``FEATURE_COLUMNS`` (one row per customer, documented in
docs/data-model.md) and ``CATEGORY_COLUMNS`` (one row per customer and top-level
category).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import ibis
import ibis.expr.types as ir

from shoplens.features.rfm import RfmRule, rfm_segment_exprs

DAY = 86400.0

FEATURE_COLUMNS: tuple[str, ...] = (
    "customer_id", "tenure_days", "n_orders", "n_orders_all", "total_spend", "aov",
    "first_order_at", "last_order_at", "recency_days", "frequency", "recency", "T",
    "monetary_value", "mean_interpurchase_days", "orders_last_90d", "spend_last_90d",
    "r_score", "f_score", "m_score", "rfm_score", "rfm_segment", "rfm_segment_zh",
    "discount_rate", "discount_order_share", "discounted_spend_share", "cancel_rate", "return_rate",
    "n_categories", "top_category", "top_category_share",
    "peak_hour", "peak_weekday", "weekend_share", "night_share",
    "n_events", "n_views", "n_searches", "n_cart_adds", "n_favorites", "n_sessions",
    "events_last_30d", "view_to_buy_rate", "cart_to_order_rate",
)
CATEGORY_COLUMNS: tuple[str, ...] = ("customer_id", "category", "spend", "share", "rank")


@dataclass(frozen=True)
class Tables:
    """The canonical tables as Ibis expressions (any backend)."""

    customers: ir.Table
    orders: ir.Table
    order_items: ir.Table
    products: ir.Table
    events: ir.Table


def _days(later: ir.TimestampValue, earlier: ir.TimestampValue) -> ir.FloatingValue:
    return (later.epoch_seconds() - earlier.epoch_seconds()).cast("float64") / DAY


def _count_if(cond: ir.BooleanValue) -> ir.IntegerScalar:
    return cond.ifelse(1, 0).sum()


def _safe_div(num: ir.NumericValue, den: ir.NumericValue) -> ir.FloatingValue:
    return (den > 0).ifelse(num.cast("float64") / den.cast("float64"), ibis.null("float64"))


def _argmax(counts: ir.Table, key: str) -> ir.Table:
    """Per customer, the ``key`` with most rows (ties: smallest key)."""
    w = ibis.window(group_by="customer_id", order_by=[ibis.desc("n"), key])
    ranked = counts.mutate(_rk=ibis.row_number().over(w))
    return ranked.filter(ranked._rk == 0).select("customer_id", key)


def category_spend(t: Tables, as_of: datetime) -> ir.Table:
    """Spend per customer and top-level category on paid orders, with shares and rank."""
    o = t.orders.filter((t.orders.status == "paid") & (t.orders.order_ts < as_of))
    o = o.select("order_id", "customer_id")
    p = t.products.select(
        "product_id",
        category=t.products.category.re_extract(r"^([^/>]+)", 1).strip(),
    )
    i = t.order_items
    lines = i.join(o, "order_id").join(p, "product_id")
    spend = (lines.quantity.cast("float64") * lines.unit_price.cast("float64")) - lines.discount.cast("float64")
    lines = lines.mutate(spend=spend, category=(lines.category == "").ifelse("unknown", lines.category.fill_null("unknown")))
    per = lines.group_by(["customer_id", "category"]).aggregate(spend=lines.spend.sum())
    total = per.spend.sum().over(ibis.window(group_by="customer_id"))
    rank = ibis.row_number().over(
        ibis.window(group_by="customer_id", order_by=[ibis.desc("spend"), "category"])
    )
    per = per.mutate(share=_safe_div(per.spend, total), rank=rank)
    return per.select(*CATEGORY_COLUMNS)


def purchase_days(orders: ir.Table, as_of: datetime) -> ir.Table:
    """Per buyer: distinct purchase days, first and last day, spend on repeat days.

    BTYD convention: purchases on the same day are one purchase.
    """
    paid = orders.filter((orders.status == "paid") & (orders.order_ts < as_of))
    paid = paid.mutate(amount_f=paid.amount.cast("float64"))
    daily = paid.group_by(["customer_id", paid.order_ts.truncate("D").name("day")]).aggregate(
        spend=paid.amount_f.sum()
    )
    daily = daily.mutate(
        day_idx=ibis.row_number().over(ibis.window(group_by="customer_id", order_by="day"))
    )
    return daily.group_by("customer_id").aggregate(
        n_days=daily.count(),
        first_day=daily.day.min(),
        last_day=daily.day.max(),
        repeat_spend=(daily.day_idx > 0).ifelse(daily.spend, 0.0).sum(),
    )


def btyd_summary(orders: ir.Table, as_of: datetime) -> ir.Table:
    """``customer_id, frequency, recency, T, monetary_value`` (days) of every buyer as of
    ``as_of``, in the convention of lifetimes / PyMC-Marketing ``rfm_summary``."""
    d = purchase_days(orders, as_of)
    obs_end = ibis.literal(as_of - timedelta(days=1), type="timestamp")
    frequency = d.n_days - 1
    return d.select(
        "customer_id",
        frequency=frequency,
        recency=_days(d.last_day, d.first_day),
        T=_days(obs_end, d.first_day),
        monetary_value=_safe_div(d.repeat_spend, frequency),
    )


def behaviour_features(t: Tables, as_of: datetime, rules: list[RfmRule]) -> tuple[ir.Table, ir.Table]:
    """Per-customer behavioural features and category shares as of ``as_of`` (exclusive).

    Returns ``(features, category_shares)``; run them on any Ibis backend.
    """
    as_of_lit = ibis.literal(as_of, type="timestamp")
    # BTYD: T runs from the first purchase day to the last observed day (as_of - 1 day)
    obs_end = ibis.literal(as_of - timedelta(days=1), type="timestamp")
    orders = t.orders.filter(t.orders.order_ts < as_of)
    orders = orders.mutate(amount_f=orders.amount.cast("float64"), discount_f=orders.discount.cast("float64"))
    paid = orders.filter(orders.status == "paid")
    since_90 = as_of - timedelta(days=90)

    is_paid = orders.status == "paid"
    disc = is_paid & (orders.discount_f > 0)
    recent = is_paid & (orders.order_ts >= since_90)
    # one pass over the orders: conditional aggregates for every status
    money = orders.group_by("customer_id").aggregate(
        n_orders_all=orders.count(),
        n_cancelled=_count_if(orders.status == "cancelled"),
        n_returned=_count_if(orders.status == "returned"),
        n_orders=_count_if(is_paid),
        total_spend=orders.amount_f.sum(where=is_paid).round(2),  # cents: sums in any order then agree
        total_discount=orders.discount_f.sum(where=is_paid),
        n_discounted=_count_if(disc),
        discounted_spend=orders.amount_f.sum(where=disc).fill_null(0.0),
        first_order_at=orders.order_ts.min(where=is_paid),
        last_order_at=orders.order_ts.max(where=is_paid),
        orders_last_90d=_count_if(recent),
        spend_last_90d=orders.amount_f.sum(where=recent).round(2),
    )
    # BTYD convention: purchases on the same day are one purchase; time in days
    btyd = purchase_days(t.orders, as_of)

    cats = category_spend(t, as_of)
    top = cats.filter(cats["rank"] == 0).select(
        "customer_id", top_category=cats.category, top_category_share=cats.share
    )
    ncat = cats.group_by("customer_id").aggregate(n_categories=cats.count())

    ev = t.events.filter(t.events.event_ts < as_of)
    acts = paid.select("customer_id", ts=paid.order_ts).union(ev.select("customer_id", ts=ev.event_ts))
    acts = acts.mutate(hour=acts.ts.hour(), dow=acts.ts.day_of_week.index())
    rhythm = acts.group_by("customer_id").aggregate(
        weekend_share=_safe_div(_count_if(acts.dow >= 5), acts.count()),
        night_share=_safe_div(_count_if((acts.hour < 6) | (acts.hour >= 22)), acts.count()),
    )
    hours = _argmax(acts.group_by(["customer_id", "hour"]).aggregate(n=acts.count()), "hour")
    days = _argmax(acts.group_by(["customer_id", "dow"]).aggregate(n=acts.count()), "dow")

    since_30 = as_of - timedelta(days=30)
    evagg = ev.group_by("customer_id").aggregate(
        n_events=ev.count(),
        n_views=_count_if(ev.event_type == "view"),
        n_searches=_count_if(ev.event_type == "search"),
        n_cart_adds=_count_if(ev.event_type == "cart"),
        n_favorites=_count_if(ev.event_type == "favorite"),
        n_sessions=ev.session_id.nunique(),
        events_last_30d=_count_if(ev.event_ts >= since_30),
    )
    viewed = ev.filter((ev.event_type == "view") & ev.product_id.notnull()).select("customer_id", "product_id").distinct()
    paid_ids = paid.select("order_id", "customer_id")
    bought = (
        t.order_items.join(paid_ids, "order_id")
        .select("customer_id", "product_id")
        .distinct()
        .mutate(bought=ibis.literal(1))
    )
    vb = viewed.left_join(bought, ["customer_id", "product_id"])
    conv = vb.group_by("customer_id").aggregate(
        n_viewed_products=vb.count(), n_viewed_bought=_count_if(vb.bought.notnull())
    )

    c = t.customers.select("customer_id", "signup_at")
    f = c
    for part in (money, btyd, top, ncat, rhythm, hours, days, evagg, conv):
        f = f.left_join(part, "customer_id").drop("customer_id_right")

    n_days = f.n_days.fill_null(0)
    frequency = (n_days - 1).clip(lower=0)
    recency = _days(f.last_day, f.first_day)
    first_activity = ibis.coalesce(f.signup_at, f.first_order_at)
    buyer = f.n_orders.fill_null(0) > 0
    f = f.mutate(
        tenure_days=_days(as_of_lit, first_activity),
        n_orders=f.n_orders.fill_null(0),
        n_orders_all=f.n_orders_all.fill_null(0),
        total_spend=f.total_spend.fill_null(0.0),
        aov=_safe_div(f.total_spend, f.n_orders),
        recency_days=_days(as_of_lit, f.last_order_at),
        frequency=frequency,
        recency=recency,
        T=_days(obs_end, f.first_day),
        monetary_value=_safe_div(f.repeat_spend, frequency),
        mean_interpurchase_days=_safe_div(recency, frequency),
        orders_last_90d=f.orders_last_90d.fill_null(0),
        spend_last_90d=f.spend_last_90d.fill_null(0.0),
        discount_rate=_safe_div(f.total_discount, f.total_spend + f.total_discount),
        discount_order_share=_safe_div(f.n_discounted, f.n_orders),
        discounted_spend_share=_safe_div(f.discounted_spend, f.total_spend),
        cancel_rate=_safe_div(f.n_cancelled, f.n_orders_all),
        return_rate=_safe_div(f.n_returned, f.n_orders.fill_null(0) + f.n_returned.fill_null(0)),
        n_categories=f.n_categories.fill_null(0),
        peak_hour=f.hour,
        peak_weekday=f.dow,
        n_events=f.n_events.fill_null(0),
        n_views=f.n_views.fill_null(0),
        n_searches=f.n_searches.fill_null(0),
        n_cart_adds=f.n_cart_adds.fill_null(0),
        n_favorites=f.n_favorites.fill_null(0),
        n_sessions=f.n_sessions.fill_null(0),
        events_last_30d=f.events_last_30d.fill_null(0),
        view_to_buy_rate=_safe_div(f.n_viewed_bought, f.n_viewed_products),
        cart_to_order_rate=_safe_div(f.n_orders.fill_null(0), f.n_cart_adds),
        _buyer=buyer,
    )
    f = _rfm_scores(f, rules)
    return f.select(*FEATURE_COLUMNS), cats


def _score(f: ir.Table, col: ir.NumericValue, descending: bool = False) -> ir.IntegerValue:
    """1..5 quintile score among buyers: percent_rank keeps ties together."""
    order = ibis.desc(col) if descending else col
    pr = ibis.percent_rank().over(ibis.window(group_by=f._buyer, order_by=order))
    score = (pr * 5).floor().cast("int64") + 1
    return f._buyer.ifelse(score.clip(upper=5), ibis.null("int64"))


def _rfm_scores(f: ir.Table, rules: list[RfmRule]) -> ir.Table:
    f = f.mutate(
        r_score=_score(f, f.recency_days, descending=True),
        f_score=_score(f, f.n_orders),
        m_score=_score(f, f.total_spend),
    )
    rfm_score = f.r_score.cast("string").concat(f.f_score.cast("string"), f.m_score.cast("string"))
    en, zh = rfm_segment_exprs(f.r_score, f.f_score, f.m_score, rules)
    return f.mutate(rfm_score=rfm_score, rfm_segment=en, rfm_segment_zh=zh)
