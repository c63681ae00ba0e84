"""The HTML report opens offline in a real headless Chromium (Debian's), with no
console errors, and its charts render."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shoplens.jobs import Summary
from shoplens.report import build_report
from shoplens.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_available() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make setup-dev` installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    pytest.importorskip("playwright")


def test_report_renders_in_chromium(demo_shop: Summary, tmp_path: Path) -> None:
    _browser_available()
    from playwright.sync_api import sync_playwright

    with Store.open(demo_shop.folder / "shoplens.duckdb", read_only=True) as st:
        path = build_report(st, tmp_path / "report.html")
    page_html = path.read_text(encoding="utf-8")
    # self-contained: no scripts, nothing linked (SVG's xmlns names are not fetched)
    assert "<script" not in page_html
    assert "Complaints by aspect" in page_html and "Aspect sentiment in customers" in page_html
    assert not any(f'{attr}="http' in page_html for attr in ("src", "href", "xlink:href")) and "url(http" not in page_html
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("svg", "els => els.map(e => e.getBoundingClientRect().width)")
        bars = page.eval_on_selector_all("svg path, svg rect", "els => els.length")
        title = page.title()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith("file://")] == []  # nothing fetched from the network
    assert title == "ShopLens report"
    assert len(widths) == 6 and all(w > 200 for w in widths)  # segments, RFM grid, CLV, churn, aspects, ratings
    assert bars > 50
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_segment_map_png_and_interactive_html(demo_shop: Summary, tmp_path: Path) -> None:
    folder = demo_shop.folder / "shoplens.segments"
    png = folder / f"snap_{demo_shop.build.snapshot_id}-map.png"
    page = png.with_suffix(".html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    text = page.read_text(encoding="utf-8")
    assert 'src="http' not in text and "<circle" in text
    _browser_available()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = browser.new_page()
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(page.as_uri())
        visible = pg.eval_on_selector_all("circle", "els => els.filter(e => getComputedStyle(e).display !== 'none').length")
        pg.click("#legend li >> nth=0")  # hide the first segment
        after = pg.eval_on_selector_all("circle", "els => els.filter(e => getComputedStyle(e).display !== 'none').length")
        pg.screenshot(path=str(tmp_path / "map.png"))
        browser.close()
    assert errors == [] and visible == demo_shop.build.n_customers and 0 < after < visible
