"""Complaint spikes planted into the generated demo shop, with the ground truth kept.

GENERATED (docs/datasets.md): a few weeks in which one product receives a burst of
negative reviews about one aspect (late deliveries, a bad batch, broken packaging),
written by ordinary customers, from a random stream of its own so the rest of the demo
is unchanged. The texts are REAL negative reviews from the same corpora as the rest of
the demo, chosen because they name the aspect (物流/快递, 质量, 包装, 客服; shipping,
quality, customer service). The truth goes to ``insight_truth.csv`` (product id,
aspect, the week's Monday), which ``shoplens evaluate insight`` scores the alerts
against.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

# words that make a corpus review a complaint about the aspect
ASPECT_WORDS = {
    "logistics": (("物流", "快递", "发货", "送货"), ("shipping", "delivery", "shipped")),
    "quality": (("质量", "做工", "坏了"), ("quality", "broke", "defective")),
    "packaging": (("包装",), ("packaging", "package")),
    "service": (("客服", "售后"), ("customer service", "tech support")),
}


def plant_spikes(rng: np.random.Generator, seed: int, start: datetime, end: datetime, customers: list[dict[str, Any]],
                 products: list[dict[str, Any]], texts: list[dict[str, Any]], zh_neg: tuple[str, ...],
                 en_neg: tuple[str, ...], n_spikes: int) -> list[dict[str, str]]:
    """Append the spikes' reviews to ``texts``; returns the truth rows."""
    pools = {a: ([t for t in zh_neg if any(w in t for w in zh)], [t for t in en_neg if any(w in t.lower() for w in en)])
             for a, (zh, en) in ASPECT_WORDS.items()}
    aspects = [a for a, (zh, en) in pools.items() if len(zh) >= 12 and len(en) >= 3]
    weeks = (end - start).days // 7
    truth: list[dict[str, str]] = []
    used: set[tuple[str, str]] = set()
    while len(truth) < n_spikes and aspects:
        aspect = aspects[int(rng.integers(len(aspects)))]
        product = products[int(rng.integers(len(products)))]
        monday = start + timedelta(weeks=int(rng.integers(30, weeks - 1)))
        monday -= timedelta(days=monday.weekday())
        if (product["product_id"], monday.date().isoformat()) in used:
            continue
        used.add((product["product_id"], monday.date().isoformat()))
        for _ in range(int(rng.integers(5, 10))):
            cust = customers[int(rng.integers(len(customers)))]
            zh, en = pools[aspect]
            pool = en if cust["country"] != "CN" else zh
            when = monday + timedelta(days=float(rng.uniform(0, 6.9)))
            texts.append({"text_id": f"T{seed:02d}S{len(texts):07d}", "customer_id": cust["customer_id"],
                          "kind": "review", "product_id": product["product_id"], "order_id": None,
                          "rating": int(rng.integers(1, 3)), "text": pool[int(rng.integers(len(pool)))],
                          "created_at": when.strftime("%Y-%m-%d %H:%M:%S")})
        truth.append({"product_id": product["product_id"], "aspect": aspect, "week": monday.date().isoformat()})
    return truth
