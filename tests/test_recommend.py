"""Recommendations: the estimator on data with known structure (repeat purchases, products
bought together), faithful reasons, unseen customers served without a retrain, business
rules, and the whole path on the demo shop (build stage, profile slot, CLI, REST API,
audience field) against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
from servers import demo_server
from typer.testing import CliRunner

from shoplens.cli import app
from shoplens.jobs import Summary
from shoplens.recommend import HybridRecommender
from shoplens.recommend.evaluate import metrics, split
from shoplens.recommend.rules import apply_rules

DAY = 86_400.0


def _shop(n_customers: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers with a staple they rebuy every ~10 days, and pairs of products bought
    together (A then its partner B); popular products everyone buys sometimes."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_customers):
        staple = f"S{rng.integers(0, 20)}"
        pair = int(rng.integers(0, 15))
        trio = rng.random() < 0.5  # also buys C with A and B
        t = float(rng.uniform(0, 10))
        for _ in range(int(rng.integers(4, 9))):
            basket = [staple, f"POP{rng.integers(0, 5)}"]
            if rng.random() < 0.5:
                basket += [f"A{pair}", f"B{pair}"] + ([f"C{pair}"] if trio else [])
            rows += [(f"c{c}", p, t * DAY) for p in basket]
            t += float(rng.normal(10, 1.5))
    inter = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts"]).assign(quantity=1.0)
    products = pd.DataFrame({"product_id": sorted(inter["product_id"].unique())})
    products["name"] = "name-" + products["product_id"]
    products["category"] = products["product_id"].str[0].map({"S": "staples", "P": "popular", "A": "gadgets",
                                                              "B": "gadgets", "C": "gadgets"})
    return inter, products


@pytest.fixture(scope="module")
def fitted() -> tuple[HybridRecommender, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    inter, products = _shop()
    train, test = split(type("D", (), {"interactions": inter})())  # type: ignore[arg-type]
    model = HybridRecommender(random_state=0).fit(train, products)
    return model, train, test, products


def test_hybrid_beats_popularity_on_the_held_out_baskets(fitted) -> None:
    model, train, test, _ = fitted
    users = sorted(test["customer_id"].unique())
    recs = model.recommend(users, n=10, exclude_purchased=False)
    ours = metrics(recs.groupby("customer_id")["product_id"].apply(list).to_dict(), test, train, 100)
    pop = train["product_id"].value_counts().index[:10].tolist()
    base = metrics({u: pop for u in users}, test, train, 100)
    assert ours["NDCG@10"] > base["NDCG@10"] + 0.1, (ours, base)
    assert ours["repeat_recall"] > 0.5  # the staples come back


def test_reasons_are_the_scores_own_evidence(fitted) -> None:
    model, train, _test, _ = fitted
    users = sorted(train["customer_id"].unique())[:80]
    recs = pd.concat([model.recommend(users, n=5, exclude_purchased=False),
                      model.recommend(users, n=5, exclude_purchased=True)])
    assert set(recs.columns) == {"customer_id", "rank", "product_id", "score", "source", "reason", "reason_zh"}
    bought = train.groupby("customer_id")["product_id"].apply(set)
    counts = train.drop_duplicates(["customer_id", "product_id", "ts"]).groupby(["customer_id", "product_id"]).size()
    checked = {"history": 0, "items": 0}
    for r in recs.itertuples():
        primary = r.source.split(",")[0]
        if primary == "history":  # the count quoted is the customer's own
            assert f"bought this {counts[(r.customer_id, r.product_id)]} time" in r.reason
            assert f"购买过 {counts[(r.customer_id, r.product_id)]} 次" in r.reason_zh
            checked["history"] += 1
        if primary in ("bought_together", "collaborative"):  # the products named are ones the customer bought
            named = [p.removeprefix("name-") for p in r.reason.split('"')[1::2]]
            assert named and set(named) <= bought[r.customer_id] and r.product_id not in named
            checked["items"] += 1
    assert checked["history"] > 0 and checked["items"] > 0, checked
    first = recs.iloc[: len(recs) // 2]  # one call's lists: ranked by score
    assert (first.groupby("customer_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_unseen_customer_is_served_from_history_without_refit(fitted) -> None:
    """A customer's purchases given at request time under a new id get (nearly) the list
    the fitted customer gets: ALS folds them in, the other sources read the history."""
    model, train, _test, _ = fitted
    overlaps = []
    for cid in sorted(train["customer_id"].unique())[:20]:
        known = model.recommend([cid], n=5, exclude_purchased=False)
        history = train[train["customer_id"] == cid].assign(customer_id="new-" + cid)
        new = model.recommend(["new-" + cid], n=5, exclude_purchased=False, history=history)
        assert (new["source"].str.startswith("fallback:history")).all()
        overlaps.append(len(set(known["product_id"]) & set(new["product_id"])))
    assert np.mean(overlaps) >= 4, overlaps
    bare = model.recommend(["nobody"], n=5)
    assert (bare["source"] == "fallback:popular,popular").all()
    assert bare["product_id"].str.startswith("POP").sum() >= 3


def test_exclude_purchased_drops_everything_bought(fitted) -> None:
    model, train, _test, _ = fitted
    users = sorted(train["customer_id"].unique())[:50]
    out = model.recommend(users, n=10, exclude_purchased=True)
    bought = set(zip(train["customer_id"], train["product_id"], strict=True))
    assert not any((c, p) in bought for c, p in zip(out["customer_id"], out["product_id"], strict=True))


def test_rules_exclude_bury_boost_and_cap() -> None:
    recs = pd.DataFrame({"customer_id": "c", "rank": range(1, 7), "product_id": ["p1", "p2", "p3", "p4", "p5", "p6"]})
    products = pd.DataFrame({"product_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
                             "category": ["x", "x", "x", "y", "y", "z"], "stock": [5, 5, 0, 5, 5, 5]})
    out = apply_rules(recs, products, {"exclude": ["p2"], "bury": ["p1"], "boost": ["p6"], "boost_places": 3,
                                       "max_per_category": 1}, keep=10)
    order = out["product_id"].tolist()
    assert "p2" not in order and "p3" not in order  # excluded, out of stock
    assert order[0] == "p6" and order[-1] == "p1"  # boosted past three, buried last
    assert order.index("p5") > order.index("p4")  # over the cap for y: after the others
    assert out["rank"].tolist() == list(range(1, len(order) + 1))


# ---- the demo shop, end to end ------------------------------------------------------------

@pytest.fixture(scope="module")
def server(demo_shop: Summary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with demo_server(demo_shop, tmp_path_factory, "rec") as srv:
        yield srv


def _get(server: dict, path: str, role: str | None = "service", **params) -> httpx.Response:
    headers = {"X-API-Key": server["keys"][role]} if role else {}
    return httpx.get(server["base"] + path, headers=headers, params=params, timeout=10)


def test_profile_cli_and_api_agree(server: dict) -> None:
    cid = server["example"]
    doc = _get(server, f"/profiles/{cid}", "analyst").json()
    assert 1 <= len(doc["recommendations"]) <= 10
    api = _get(server, f"/profiles/{cid}/recommendations", n=10).json()
    assert api["served"] in ("model", "fallback:segment", "fallback:popular", "fallback:no_consent")
    assert [r["product_id"] for r in api["recommendations"]] == [r["product_id"] for r in doc["recommendations"]]
    assert all(r["reason"] and r["reason_zh"] and r["source"] for r in api["recommendations"])
    cli = CliRunner().invoke(app, ["recommend", cid, "-c", str(server["folder"] / "shoplens.toml"), "--json"])
    assert cli.exit_code == 0, cli.output
    assert '"product_id": "' + api["recommendations"][0]["product_id"] in cli.output


def test_request_time_filters(server: dict) -> None:
    cid = server["example"]
    full = _get(server, f"/profiles/{cid}/recommendations", n=50).json()["recommendations"]
    category = full[-1]["category"].split("/")[0]
    only = _get(server, f"/profiles/{cid}/recommendations", n=5, category=category).json()["recommendations"]
    assert only and all(r["category"].split("/")[0] == category for r in only)
    fresh = _get(server, f"/profiles/{cid}/recommendations", n=20, exclude_purchased="true").json()["recommendations"]
    import sqlite3

    from shoplens.serving.reader import current_name, profiles_dir

    folder = profiles_dir(server["folder"] / "shoplens.duckdb")
    db = sqlite3.connect(folder / (current_name(folder) or ""))
    bought = {p for (p,) in db.execute("SELECT product_id FROM recommendations WHERE customer_id = ? AND purchased = 1",
                                       [cid])}
    assert not bought & {r["product_id"] for r in fresh}
    assert _get(server, f"/profiles/{cid}/recommendations", n=101).status_code == 422
    assert _get(server, f"/profiles/{cid}/recommendations", role=None).status_code == 401


def test_not_in_build_visitor_and_similar(server: dict) -> None:
    out = _get(server, "/profiles/c_notinthebuild/recommendations", n=5).json()
    assert out["in_build"] is False and out["served"] == "fallback:popular" and len(out["recommendations"]) == 5
    some = _get(server, f"/profiles/{server['example']}/recommendations", n=3).json()["recommendations"]
    pid = some[0]["product_id"]
    sim = _get(server, f"/products/{pid}/similar", n=5).json()
    assert sim["product_id"] == pid and any(sim["similar"].values())
    assert _get(server, "/products/NO-SUCH/similar").status_code == 404
    r = httpx.post(server["base"] + "/recommendations", headers={"X-API-Key": server["keys"]["service"]},
                   json={"products": [pid], "n": 5}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["served"] == "fallback:history" and pid not in {
        x["product_id"] for x in body["recommendations"]}
    assert httpx.post(server["base"] + "/recommendations", headers={"X-API-Key": server["keys"]["service"]},
                      json={"products": []}, timeout=10).status_code == 422


def test_likely_to_buy_is_an_audience(server: dict) -> None:
    cid = server["example"]
    pid = _get(server, f"/profiles/{cid}/recommendations", n=1).json()["recommendations"][0]["product_id"]
    r = httpx.post(server["base"] + "/audiences", headers={"X-API-Key": server["keys"]["analyst"]},
                   json={"text": f"likely_to_buy = '{pid}'", "page_size": 1000}, timeout=10)
    assert r.status_code == 200, r.text
    assert cid in r.json()["customer_ids"]
    bad = httpx.post(server["base"] + "/audiences", headers={"X-API-Key": server["keys"]["analyst"]},
                     json={"text": "likely_to_buy > 3"}, timeout=10)
    assert bad.status_code == 400


def test_withdrawn_personalisation_serves_the_popular_list(server: dict) -> None:
    """Last in the module: it withdraws the example customer's personalisation."""
    cid = server["example"]
    before = _get(server, f"/profiles/{cid}/recommendations", n=5).json()
    r = httpx.post(server["base"] + f"/profiles/{cid}/consent", headers={"X-API-Key": server["keys"]["admin"]},
                   json={"purpose": "personalisation", "status": "withdrawn", "source": "test"}, timeout=10)
    assert r.status_code == 200, r.text
    after = _get(server, f"/profiles/{cid}/recommendations", n=5).json()
    assert after["served"] == "fallback:no_consent"
    assert all(x["source"] == "fallback:no_consent" for x in after["recommendations"])
    shop_list = httpx.post(server["base"] + "/recommendations", headers={"X-API-Key": server["keys"]["service"]},
                           json={"products": ["NO-SUCH-PRODUCT"], "n": 5}, timeout=10).json()
    assert shop_list["served"] == "fallback:popular" and shop_list["unknown_products"] == ["NO-SUCH-PRODUCT"]
    assert [x["product_id"] for x in after["recommendations"]] == [x["product_id"] for x in shop_list["recommendations"]]
    assert before["served"] != "fallback:no_consent"
