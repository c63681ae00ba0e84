"""``shoplens recommend`` (a customer's list, or a visitor's from products) and
``shoplens evaluate recommendations`` (the hybrid against the baselines on real data)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from shoplens.cli._common import (
    DEFAULT_CONFIG,
    ConfigOpt,
    _load,
    app,
    console,
    err_console,
    evaluate_app,
)
from shoplens.cli.tools import _print_frame


@app.command()
def recommend(
    customer_id: Annotated[str | None, typer.Argument(
        help="Pseudonymised id (c_...) or, with the secret key, the shop's own id.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    n: Annotated[int, typer.Option("--n", min=1, max=100, help="How many products.")] = 10,
    category: Annotated[str | None, typer.Option(help="Only this category (and those under it).")] = None,
    exclude_purchased: Annotated[bool, typer.Option("--exclude-purchased", help="Drop products the customer bought.")] = False,
    products: Annotated[str | None, typer.Option(
        help="For a visitor the build never saw: product ids they viewed or bought, comma-separated.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Recommended products with the reason for each, from the published snapshot."""
    from shoplens.consent import Ledger
    from shoplens.errors import FilterError
    from shoplens.privacy import candidate_pseudonyms, optional_keys
    from shoplens.recommend.reasons import Reasons
    from shoplens.serving import recommendations as recs
    from shoplens.serving.reader import ProfileReader

    cfg = _load(config)
    reader = ProfileReader(cfg.store_path)
    phrases = Reasons.load(None if cfg.recommend.rules == "default" else cfg.recommend.rules)
    db = reader.db()
    if (customer_id is None) == (products is None):
        raise FilterError("give a customer id or --products (not both)")
    if products is not None:
        out = recs.for_products(db, [p.strip() for p in products.split(",") if p.strip()], n, category, None, phrases)
    else:
        keys = optional_keys(cfg)
        cands = candidate_pseudonyms(customer_id or "", keys)
        found = [c for c in cands if db.execute("SELECT 1 FROM flat WHERE customer_id = ?", [c]).fetchone()]
        cid = found[0] if found else cands[0]
        state = Ledger(cfg.store_path).state(reader.snapshot_id(fresh=False)).get(cid, {})
        personal = state.get("personalisation") is not False and state.get("profiling") is not False
        out = recs.for_customer(db, cid, n, category, exclude_purchased, personal, phrases)
    if as_json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return
    who = out.get("customer_id") or "visitor"
    t = Table(title=f"推荐 recommendations for {who} (served by {out['served']})")
    for col in ("#", "product", "category", "来源 source", "理由 reason"):
        t.add_column(col)
    for r in out["recommendations"]:
        t.add_row(str(r["rank"]), escape(f"{r['name']} ({r['product_id']})"), escape(str(r["category"])),
                  escape(r["source"].split(",")[0]), escape(f"{r['reason_zh']}\n{r['reason']}"))
    console.print(t)
    if customer_id is not None and not out["in_build"]:
        err_console.print("[yellow]not in the published snapshot: the shop's popular list is shown[/]")


@evaluate_app.command("recommendations")
def evaluate_recommendations_cmd(
    dataset: Annotated[str, typer.Option(help="instacart (baskets), movielens (ratings) or demo (the generated shop).")]
    = "instacart",
    as_json: Annotated[bool, typer.Option("--json", help="Print the tables as JSON.")] = False,
) -> None:
    """The hybrid against global/personal popularity, item-kNN, implicit ALS/BPR and EASE
    (last basket held out, full ranking), and cold customers against popularity."""
    from shoplens.recommend.evaluate import evaluate

    with err_console.status(f"evaluating recommendations on {dataset}") as status:
        result = evaluate(dataset, on_info=lambda m: status.update(escape(m)))
    if as_json:
        print(json.dumps({"dataset": dataset, "warm": result.table.to_dict(orient="index"),
                          "cold": result.cold.to_dict(orient="index"), "info": result.info}, default=str, indent=2))
        return
    _print_frame(f"{dataset}: each customer's last basket, ranked over all {result.info['products']:,} products",
                 result.table, 3)
    _print_frame(f"{dataset}: {result.info['cold']} customers left out of the fit (cold)", result.cold, 3)
    console.print(f"[dim]{escape(json.dumps(result.info, default=str))}[/]", soft_wrap=True)
