"""Purchase histories at a cut-off, read from the store with the same Ibis expressions as
the features: BTYD summaries (frequency, recency, T, monetary value) and purchase
counts in a window. Models that backtest on earlier windows ask for several cut-offs."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd

from shoplens.features.behaviour import btyd_summary
from shoplens.store import Store


def _dt(d: date | datetime) -> datetime:
    return d if isinstance(d, datetime) else datetime(d.year, d.month, d.day)


class StoreHistory:
    """Histories of the paid orders in ``store``, with times in units of ``unit_days``."""

    def __init__(self, store: Store, unit_days: float = 7.0) -> None:
        self.store = store
        self.unit_days = unit_days
        self._orders = store.ibis().table("orders")

    def summary(self, cutoff: date | datetime) -> pd.DataFrame:
        """Index customer_id; frequency, recency, T (units), monetary_value, of buyers before cutoff."""
        expr = btyd_summary(self._orders, _dt(cutoff))
        df = self.store.con.execute(self.store.ibis().compile(expr)).df().set_index("customer_id").sort_index()
        df["recency"] /= self.unit_days
        df["T"] /= self.unit_days
        return df

    def counts(self, start: date | datetime, end: date | datetime) -> pd.Series:
        """Distinct paid purchase days per customer in [start, end)."""
        rows = self.store.con.execute(
            "SELECT customer_id, count(DISTINCT CAST(order_ts AS DATE)) FROM orders "
            "WHERE status = 'paid' AND order_ts >= ? AND order_ts < ? GROUP BY 1",
            [_dt(start), _dt(end)],
        ).fetchall()
        return pd.Series(dict(rows), dtype=float, name="purchases")

    def first_purchase_range(self, cutoff: date | datetime) -> tuple[datetime, datetime]:
        row = self.store.one(
            "SELECT min(f), max(f) FROM (SELECT min(order_ts) f FROM orders WHERE status = 'paid' "
            "AND order_ts < ? GROUP BY customer_id)",
            [_dt(cutoff)],
        )
        assert row is not None and row[0] is not None
        return row[0], row[1]
