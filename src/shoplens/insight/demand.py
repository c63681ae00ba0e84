"""Demand by customer segment x category, forecast from two sides.

- **Time series** (Nixtla's statsforecast): each segment x category's weekly units and
  revenue; AutoETS for smooth series, Croston-SBA for intermittent ones (average
  interval between non-zero weeks above 1.32, the Syntetos-Boylan cut-off), with
  conformal prediction intervals (80% and 95%) from the series' own rolling errors.
- **Bottom-up** from the customers themselves: a BG/NBD fit on the customers'
  purchase histories gives each one's expected purchases week by week; times the
  customer's units per order and category shares (of units and of spend) and average
  order value, summed per segment x category. It covers the customers the shop has:
  new customers' demand is only in the time-series side, which is one reason the two
  disagree (shown per row).

``backtest`` runs both, and the naive and seasonal-naive baselines, at rolling origins
on any transaction table (the demo shop, CDNOW), scoring MASE and WAPE. The glue is
here; the models are statsforecast's and ``models.btyd``'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shoplens.errors import ModelError

WEEK = "W-MON"  # weeks start on Monday (the period's start_time)
INTERMITTENT_ADI = 1.32


def weekly(lines: pd.DataFrame, keys: list[str], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Weekly units and revenue per ``keys`` from order lines (``ts``, ``units``,
    ``revenue``), every week from ``start`` to ``end`` present (zeros filled)."""
    d = lines.assign(week=lines["ts"].dt.to_period("W-SUN").dt.start_time)
    d = d[(d["week"] >= start) & (d["week"] < end)]
    g = d.groupby([*keys, "week"])[["units", "revenue"]].sum()
    weeks = pd.date_range(start, end - pd.Timedelta(days=1), freq=WEEK)
    series = d[keys].drop_duplicates()
    full = series.merge(pd.DataFrame({"week": weeks}), how="cross").set_index([*keys, "week"])
    return full.join(g).fillna(0.0).reset_index()


def _adi(y: np.ndarray) -> float:
    nz = np.flatnonzero(y > 0)
    return float(len(y) / len(nz)) if len(nz) else float("inf")


def ts_forecast(series: pd.DataFrame, h: int, value: str = "units", levels: tuple[int, ...] = (80, 95)) -> pd.DataFrame:
    """Forecast ``value`` of each ``unique_id`` (columns unique_id, ds, value) ``h``
    weeks ahead: AutoETS or Croston-SBA per series, conformal intervals."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, CrostonSBA
    from statsforecast.utils import ConformalIntervals

    df = series.rename(columns={value: "y"})[["unique_id", "ds", "y"]]
    out = []
    for intermittent, part in df.groupby(df.groupby("unique_id")["y"].transform(lambda y: _adi(y.to_numpy()) > INTERMITTENT_ADI)):
        n = int(part.groupby("unique_id").size().min())
        windows = max(1, min(4, (n - 8) // h))
        if n <= h + 4:  # too short for a model or intervals: the mean
            means = part.groupby("unique_id")["y"].mean()
            ds = pd.date_range(part["ds"].max() + pd.Timedelta(weeks=1), periods=h, freq=WEEK)
            f = pd.DataFrame([(u, d, m) for u, m in means.items() for d in ds], columns=["unique_id", "ds", "y_hat"])
            for lv in levels:
                f[f"lo_{lv}"], f[f"hi_{lv}"] = f["y_hat"], f["y_hat"]
            out.append(f.assign(model="mean"))
            continue
        model = CrostonSBA() if intermittent else AutoETS(season_length=1)
        name = "croston_sba" if intermittent else "auto_ets"
        sf = StatsForecast(models=[model], freq=WEEK, n_jobs=1)
        fc = sf.forecast(df=part, h=h, level=list(levels), prediction_intervals=ConformalIntervals(h=h, n_windows=windows))
        col = [c for c in fc.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
        f = pd.DataFrame({"unique_id": fc["unique_id"], "ds": fc["ds"], "y_hat": fc[col].clip(lower=0)})
        for lv in levels:
            f[f"lo_{lv}"] = fc[f"{col}-lo-{lv}"].clip(lower=0).to_numpy()
            f[f"hi_{lv}"] = fc[f"{col}-hi-{lv}"].clip(lower=0).to_numpy()
        out.append(f.assign(model=name))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def bottom_up(orders: pd.DataFrame, origin: pd.Timestamp, h: int, unit_days: float = 7.0) -> pd.DataFrame:
    """Each customer's expected purchases in each of the ``h`` weeks after ``origin``
    from a BG/NBD fit on the orders before it (``customer_id``, ``ts``). Returns
    customer_id, week (1..h), expected."""
    from shoplens.models.btyd import BGNBD

    past = orders[orders["ts"] < origin]
    days = past.groupby(["customer_id", past["ts"].dt.normalize()]).size().reset_index()[["customer_id", "ts"]]
    g = days.groupby("customer_id")["ts"]
    first, last, n = g.min(), g.max(), g.size()
    frequency = (n - 1).to_numpy(dtype=float)
    recency = ((last - first).dt.days / unit_days).to_numpy()
    T = ((origin - first).dt.days / unit_days).to_numpy()
    model = BGNBD().fit(frequency, recency, T)
    cum = [np.zeros(len(n))] + [model.expected_purchases(k * 7.0 / unit_days, frequency, recency, T) for k in range(1, h + 1)]
    rows = [pd.DataFrame({"customer_id": n.index, "week": k, "expected": cum[k] - cum[k - 1]}) for k in range(1, h + 1)]
    return pd.concat(rows, ignore_index=True)


def bottom_up_by(orders: pd.DataFrame, lines: pd.DataFrame, keys: pd.DataFrame, origin: pd.Timestamp,
                 h: int) -> pd.DataFrame:
    """Bottom-up units and revenue per group x category x week ahead. ``orders``:
    customer_id, order_id, ts; ``lines``: order_id, category, units, revenue; ``keys``:
    customer_id, group."""
    exp = bottom_up(orders, origin, h)
    past = lines.merge(orders[orders["ts"] < origin][["order_id", "customer_id"]], on="order_id")
    n_orders = orders[orders["ts"] < origin].groupby("customer_id").size()
    per = past.groupby(["customer_id", "category"])[["units", "revenue"]].sum()
    per = per.div(n_orders.reindex(per.index.get_level_values(0)).to_numpy(), axis=0).reset_index()  # per order
    out = exp.merge(per, on="customer_id").merge(keys, on="customer_id")
    out["units"], out["revenue"] = out["expected"] * out["units"], out["expected"] * out["revenue"]
    return out.groupby(["group", "category", "week"])[["units", "revenue"]].sum().reset_index()


def _mase_scale(history: np.ndarray) -> float:
    d = np.abs(np.diff(history))
    return float(d.mean()) if len(d) and d.mean() > 0 else 1.0


def backtest(orders: pd.DataFrame, lines: pd.DataFrame, h: int = 8, origins: int = 4,
             season: int = 52) -> dict[str, Any]:
    """Rolling-origin backtest of total weekly units: time series (AutoETS/Croston),
    bottom-up (BG/NBD), naive and seasonal naive, at ``origins`` origins ``h`` weeks
    apart ending ``h`` weeks before the data ends. MASE is scaled by the in-sample
    one-step naive error; WAPE = sum |error| / sum actual."""
    all_lines = lines.merge(orders[["order_id", "customer_id", "ts"]], on="order_id")
    start = orders["ts"].min().to_period("W-SUN").start_time
    end = orders["ts"].max().to_period("W-SUN").start_time  # the last (partial) week is left out
    total = weekly(all_lines.assign(all="all"), ["all"], start, end)
    weeks = total["week"].to_numpy()
    y = total["units"].to_numpy()
    scores: dict[str, list[tuple[float, float, float]]] = {m: [] for m in ("time_series", "bottom_up", "naive", "seasonal_naive")}
    for k in range(origins, 0, -1):
        cut = len(y) - k * h
        if cut < 2 * h:
            continue
        origin = pd.Timestamp(weeks[cut])
        hist, actual = y[:cut], y[cut:cut + h]
        preds = {"naive": np.repeat(hist[-1], h),
                 "seasonal_naive": hist[cut - season:cut - season + h] if cut >= season else np.repeat(hist[-1], h)}
        ts = ts_forecast(pd.DataFrame({"unique_id": "all", "ds": weeks[:cut], "units": hist}), h)
        preds["time_series"] = ts["y_hat"].to_numpy()
        try:
            bu = bottom_up(orders, origin, h)
        except ModelError:  # histories a BG/NBD cannot fit at this origin: scored without it
            bu = None
        if bu is not None:
            per_order = all_lines[all_lines["ts"] < origin]["units"].sum() / max(int((orders["ts"] < origin).sum()), 1)
            preds["bottom_up"] = bu.groupby("week")["expected"].sum().to_numpy() * per_order
        scale = _mase_scale(hist)
        for m, p in preds.items():
            err = np.abs(actual - p[:len(actual)])
            scores[m].append((float(err.mean() / scale), float(err.sum()), float(np.abs(actual).sum())))
    out: dict[str, Any] = {"h": h, "origins": len(scores["naive"]), "weeks": len(y)}
    for m, s in scores.items():
        if s:
            out[m] = {"mase": float(np.mean([x[0] for x in s])), "wape": sum(x[1] for x in s) / max(sum(x[2] for x in s), 1e-9)}
    return out
