"""A 2-D map of customers coloured by segment: PCA of the segmentation matrix, written
as a PNG and as a self-contained interactive HTML page (inline SVG and a few lines of
inline script: hover shows the segment, clicking a legend entry hides or shows it; no
CDN, no network)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

PALETTE = ("#3a7bd5", "#e76f51", "#2a9d8f", "#8d6cab", "#f4a261", "#264653", "#e9c46a", "#d62828", "#6a994e", "#577590")
MAX_POINTS = 5000


def project(X: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    return np.asarray(PCA(n_components=2, random_state=seed).fit_transform(X))


def write_maps(X: np.ndarray, labels: np.ndarray, names: dict[int, str], out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out``.png and ``out``.html; at most 5,000 customers are drawn (a sample)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), size=min(MAX_POINTS, len(X)), replace=False)
    xy, lab = project(X, seed)[idx], labels[idx]
    out.parent.mkdir(parents=True, exist_ok=True)
    from shoplens.fonts import cjk_family

    family = cjk_family("".join(names.values()))  # None: warned, names draw as boxes
    plt.rcParams["font.sans-serif"] = [*([family] if family else []), "DejaVu Sans"]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for seg in sorted(np.unique(lab)):
        m = lab == seg
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.6, color=PALETTE[int(seg) % len(PALETTE)],
                   label=f"{seg}: {names.get(int(seg), '')}")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(markerscale=3, fontsize=8)
    ax.set_title("Customers by segment (PCA)")
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=120, bbox_inches="tight")  # a missing glyph warns: never hidden
    plt.close(fig)

    lo, hi = xy.min(0), xy.max(0)
    scale = (hi - lo)
    scale[scale == 0] = 1
    pts = (xy - lo) / scale * np.array([760, 520]) + np.array([20, 20])
    circles = "".join(
        f'<circle cx="{x:.1f}" cy="{540 - y:.1f}" r="2.5" fill="{PALETTE[int(s) % len(PALETTE)]}" class="s{int(s)}">'
        f"<title>segment {int(s)}: {html.escape(names.get(int(s), ''))}</title></circle>"
        for (x, y), s in zip(pts, lab, strict=True)
    )
    legend = "".join(
        f'<li data-s="{int(s)}" style="color:{PALETTE[int(s) % len(PALETTE)]}">&#9679; {int(s)}: {html.escape(names.get(int(s), ""))} '
        f"({int((lab == s).sum())})</li>"
        for s in sorted(np.unique(lab))
    )
    page = f"""<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>ShopLens segment map</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem}}svg{{border:1px solid #ddd}}li{{cursor:pointer;list-style:none}}
li.off{{opacity:.3}}circle.off{{display:none}}</style></head><body>
<h1>Customers by segment (PCA of the segmentation features)</h1>
<p>{len(idx):,} customers shown. Hover a point for its segment; click a segment to hide or show it.</p>
<svg id="map" width="800" height="560" viewBox="0 0 800 560">{circles}</svg><ul id="legend">{legend}</ul>
<script>
document.querySelectorAll('#legend li').forEach(function (li) {{
  li.addEventListener('click', function () {{
    li.classList.toggle('off');
    document.querySelectorAll('circle.s' + li.dataset.s).forEach(function (c) {{ c.classList.toggle('off'); }});
  }});
}});
</script></body></html>"""
    page_path = out.with_suffix(".html")
    page_path.write_text(page, encoding="utf-8")
    return png, page_path
