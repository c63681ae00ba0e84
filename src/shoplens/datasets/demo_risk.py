"""Abuse patterns planted into the generated demo shop, with the ground truth kept.

GENERATED, like the rest of the demo's behaviour (docs/datasets.md): a few accounts
per pattern are added after the ordinary customers, from a random stream of their own,
so the ordinary customers' data are the same with or without them. The truth goes to
``risk_truth.csv`` (shop customer id, pattern), which ``shoplens evaluate risk`` scores
the risk stage against (docs/risk.md). Patterns:

- ``return_abuse``: many orders, most returned, pricier apparel and electronics
  (wardrobing: buy, wear or use, return);
- ``coupon_abuse``: farms of new accounts on one device and address whose every order
  carries a deep discount;
- ``linked_accounts``: rings of ordinary-looking accounts paying with one card token on
  one device (the coupon farms are linked too);
- ``review_manipulation``: rings of accounts posting near-copies of one five-star review
  of one product within days;
- ``unusual_behaviour``: scrapers (hundreds of views at night, no purchase) and bulk
  buyers (dozens of units a line).

Ordinary customers carry what makes linking hard: each has their own device (some two)
and card token, and about one in forty ships to the address of the customer before
them (a household: two linked accounts, not a ring).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import numpy as np

PATTERNS = ("return_abuse", "coupon_abuse", "linked_accounts", "review_manipulation", "unusual_behaviour")
HOUSEHOLD_EVERY = 40


def _tag(value: str, n: int = 12) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:n]


def order_identifiers(cid: str, index: int, session: int, address: str, previous_address: str | None) -> dict[str, str]:
    """Device, card token and delivery address of an ordinary customer's order (no random
    draws: the rest of the demo's stream stays as it was)."""
    device = f"dev-{_tag(cid)}"
    if int(_tag(cid, 2), 16) < 80 and session % 2 == 0:  # about a third use a second device
        device += "-b"
    shared = previous_address if index % HOUSEHOLD_EVERY == 1 and previous_address else address
    return {"shipping_address": shared, "device_id": device, "payment_ref": f"tok_{_tag(cid + '/pay', 16)}"}


class Planter:
    """Appends planted accounts to the demo's row lists; ``truth`` lists (customer, pattern)."""

    def __init__(self, rng: np.random.Generator, seed: int, end: datetime, products: list[dict[str, Any]],
                 cat_products: dict[str, list[int]], rows: dict[str, list[Any]],
                 texts: dict[str, tuple[str, ...]]) -> None:
        self.rng, self.seed, self.end = rng, seed, end
        self.products, self.cat_products, self.rows, self.texts = products, cat_products, rows, texts
        self.truth: list[dict[str, str]] = []
        self._n = 0

    # ---- building blocks
    def customer(self, signup: datetime, patterns: tuple[str, ...], english: bool = False) -> dict[str, Any]:
        rng = self.rng
        i = self._n
        self._n += 1
        cid = f"U{self.seed:02d}R{i:05d}"
        if english:
            phone = f"+1 {rng.integers(200, 999)}-{rng.integers(200, 999)}-{rng.integers(1000, 9999)}"
            row = {"name": f"Alex Reed{i}", "email": f"a.reed{i}@example.com", "address": f"{i + 1} Oak St, Austin",
                   "id_number": "", "city": "Austin", "region": "TX", "country": "US"}
        else:
            phone = f"1{rng.choice([3, 5, 7, 8, 9])}{rng.integers(0, 10**9):09d}"
            row = {"name": f"赵{i}", "email": f"r{i}@example.cn", "address": f"浙江省杭州市某某街{i + 1}号",
                   "id_number": "", "city": "杭州", "region": "浙江", "country": "CN"}
        cust = {"customer_id": cid, "name": row["name"], "phone": phone, "email": row["email"], "address": row["address"],
                "id_number": row["id_number"], "gender": str(rng.choice(["female", "male"])),
                "birth_year": int(rng.integers(1970, 2004)), "city": row["city"], "region": row["region"],
                "country": row["country"], "channel": "app", "signup_at": signup.strftime("%Y-%m-%d %H:%M:%S")}
        self.rows["customers"].append(cust)
        self.truth += [{"customer_id": cid, "pattern": p} for p in patterns]
        return cust

    def order(self, cust: dict[str, Any], ts: datetime, lines: list[tuple[int, int]], *, status: str = "paid",
              discount_share: float = 0.0, device: str | None = None, payment: str | None = None,
              address: str | None = None) -> str:
        """One order of ``lines`` (product index, quantity) with a discount of ``discount_share``."""
        orders, items = self.rows["orders"], self.rows["order_items"]
        oid = f"O{self.seed:02d}R{len(orders):07d}"
        total = disc = 0.0
        for n, (pid, qty) in enumerate(lines, start=1):
            unit = self.products[pid]["price"]
            d = round(unit * qty * discount_share, 2)
            total += unit * qty - d
            disc += d
            items.append({"order_id": oid, "line_no": n, "product_id": self.products[pid]["product_id"], "quantity": qty,
                          "unit_price": unit, "discount": d})
            self.rows["events"].append((cust["customer_id"], ts - timedelta(minutes=4), "view",
                                        self.products[pid]["product_id"], None, f"{cust['customer_id']}-r{len(orders)}"))
        english = cust["country"] != "CN"
        cid = cust["customer_id"]
        orders.append({"order_id": oid, "customer_id": cid, "order_ts": ts.strftime("%Y/%m/%d %H:%M:%S"),
                       "status": status if english else {"paid": "已完成", "returned": "退货"}[status],
                       "amount": f"{total:.2f}", "discount": f"{disc:.2f}", "currency": "CNY", "channel": "app",
                       "shipping_address": address or cust["address"], "device_id": device or f"dev-{_tag(cid)}",
                       "payment_ref": payment or f"tok_{_tag(cid + '/pay', 16)}"})
        return oid

    def review(self, cust: dict[str, Any], oid: str, pid: int, when: datetime, rating: int, text: str) -> None:
        texts = self.rows["texts"]
        texts.append({"text_id": f"T{self.seed:02d}R{len(texts):07d}", "customer_id": cust["customer_id"], "kind": "review",
                      "product_id": self.products[pid]["product_id"], "order_id": oid, "rating": rating, "text": text,
                      "created_at": when.strftime("%Y-%m-%d %H:%M:%S")})

    def when(self, start: datetime, days: float) -> datetime:
        t = start + timedelta(days=float(self.rng.uniform(0, days)))
        return t.replace(hour=int(self.rng.integers(9, 22)), minute=int(self.rng.integers(60)))

    def pick(self, top: str, pricey: bool = False) -> int:
        pool = self.cat_products[top]
        if pricey:
            prices = np.array([self.products[p]["price"] for p in pool])
            pool = [p for p, v in zip(pool, prices, strict=True) if v >= np.median(prices)]
        return int(self.rng.choice(pool))

    # ---- patterns
    def return_abusers(self, n: int) -> None:
        rng = self.rng
        for _ in range(n):
            signup = self.when(self.end - timedelta(days=700), 200)
            cust = self.customer(signup, ("return_abuse",))
            share = rng.uniform(0.55, 0.85)
            for _k in range(int(rng.integers(7, 15))):
                ts = self.when(signup + timedelta(days=5), (self.end - signup).days - 10)
                top = "服装" if rng.random() < 0.7 else "数码"
                lines = [(self.pick(top, pricey=True), 1) for _ in range(int(rng.integers(1, 4)))]
                self.order(cust, ts, lines, status="returned" if rng.random() < share else "paid")

    def coupon_farms(self, rings: int) -> None:
        rng = self.rng
        tops = list(self.cat_products)
        for r in range(rings):
            device, address = f"dev-farm-{self.seed}-{r}", f"江苏省苏州市某某小区{rng.integers(1, 99)}栋"
            for _ in range(int(rng.integers(4, 8))):
                signup = self.when(self.end - timedelta(days=60), 45)
                cust = self.customer(signup, ("coupon_abuse", "linked_accounts"))
                for _k in range(int(rng.integers(1, 4))):
                    ts = self.when(signup, 10)
                    lines = [(self.pick(tops[int(rng.integers(len(tops)))]), 1)]
                    self.order(cust, ts, lines, discount_share=float(rng.uniform(0.4, 0.6)), device=device, address=address)

    def linked_rings(self, rings: int) -> None:
        rng = self.rng
        tops = list(self.cat_products)
        for r in range(rings):
            device, payment = f"dev-ring-{self.seed}-{r}", f"tok_ring_{self.seed}_{r}"
            for _ in range(int(rng.integers(3, 6))):
                signup = self.when(self.end - timedelta(days=600), 300)
                cust = self.customer(signup, ("linked_accounts",))
                fav = tops[int(rng.integers(len(tops)))]
                for _k in range(int(rng.integers(2, 7))):
                    ts = self.when(signup, (self.end - signup).days - 1)
                    self.order(cust, ts, [(self.pick(fav), int(rng.choice([1, 1, 2])))],
                               discount_share=0.05 if rng.random() < 0.4 else 0.0, device=device, payment=payment)

    def review_rings(self, rings: int) -> None:
        rng = self.rng
        tops = list(self.cat_products)
        for _r in range(rings):
            english = rng.random() < 0.3
            pool = self.texts["en_pos" if english else "zh_pos"]
            base = pool[int(rng.integers(len(pool)))]
            pid = self.pick(tops[int(rng.integers(len(tops)))])
            start = self.when(self.end - timedelta(days=400), 300)
            for k in range(int(rng.integers(4, 8))):
                cust = self.customer(start - timedelta(days=int(rng.integers(5, 60))), ("review_manipulation",), english)
                ts = self.when(start, 3)
                oid = self.order(cust, ts, [(pid, 1)])
                edit = ("!" * (k % 3 + 1)) if english else ("！" * (k % 3 + 1))
                text = base.rstrip("!！。. ") + edit if k % 2 else base
                self.review(cust, oid, pid, ts + timedelta(hours=float(rng.uniform(1, 48))), 5, text)

    def unusual(self, n: int) -> None:
        rng = self.rng
        for k in range(n):
            signup = self.when(self.end - timedelta(days=500), 400)
            cust = self.customer(signup, ("unusual_behaviour",))
            cid = cust["customer_id"]
            if k % 2 == 0:  # a scraper: hundreds of product views at night, nothing bought
                all_products = [p for ps in self.cat_products.values() for p in ps]
                for s in range(int(rng.integers(2, 6))):
                    day = self.when(signup, (self.end - signup).days - 1).replace(hour=int(rng.choice([1, 2, 3, 4])))
                    for v in range(int(rng.integers(60, 150))):
                        pid = int(rng.choice(all_products))
                        self.rows["events"].append((cid, day + timedelta(seconds=7 * v), "view",
                                                    self.products[pid]["product_id"], None, f"{cid}-bot{s}"))
            else:  # a bulk buyer (a reseller): dozens of units a line of cheap goods, at odd hours
                fav = str(rng.choice(["食品", "图书"]))
                for _o in range(int(rng.integers(2, 6))):
                    ts = self.when(signup, (self.end - signup).days - 1).replace(hour=int(rng.choice([2, 3, 4])))
                    self.order(cust, ts, [(self.pick(fav), int(rng.integers(15, 40))) for _ in range(int(rng.integers(1, 3)))])


def plant(rng: np.random.Generator, seed: int, end: datetime, customers: int, products: list[dict[str, Any]],
          cat_products: dict[str, list[int]], rows: dict[str, list[Any]], texts: dict[str, tuple[str, ...]]) -> list[dict[str, str]]:
    """Add every pattern, sized to the shop (about 5% of accounts in all, at least one of
    each); returns the truth."""
    p = Planter(rng, seed, end, products, cat_products, rows, texts)
    p.return_abusers(max(2, customers // 80))
    p.coupon_farms(max(1, customers // 400))
    p.linked_rings(max(1, customers // 400))
    p.review_rings(max(1, customers // 400))
    p.unusual(max(2, customers // 120))
    return p.truth
