"""A font that draws Chinese, for the PNG charts (the segment map).

matplotlib falls back to DejaVu Sans, which has no CJK glyphs: Chinese segment names
became empty boxes. ``cjk_family`` finds an installed font whose character map covers
the text to draw (the common CJK families first, then any font that covers it), and
says so plainly when none does. ``make setup`` installs ``fonts-wqy-microhei`` from
Debian where it can. SVG and HTML output keeps text as text: the browser draws it.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

KNOWN = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
         "Microsoft YaHei", "PingFang SC", "SimHei", "Droid Sans Fallback", "AR PL UMing CN")
SAMPLE = "中文客户细分流失风险高价值"
NO_FONT = ("no installed font draws Chinese: Chinese names in PNG charts will show as empty boxes "
           "(install one, e.g. 'apt-get install fonts-wqy-microhei' or 'fonts-noto-cjk'; HTML and SVG are unaffected)")


@lru_cache(maxsize=8)
def covers(path: str, text: str) -> bool:
    """Whether the font file at ``path`` has a glyph for every character of ``text``."""
    from fontTools.ttLib import TTCollection, TTFont

    try:
        fonts = TTCollection(path).fonts if path.lower().endswith(".ttc") else [TTFont(path, lazy=True)]
        chars = {ord(c) for c in text if not c.isspace()}
        return any(chars <= set(f.getBestCmap() or {}) for f in fonts)
    except Exception:  # an unreadable font file covers nothing
        return False


def cjk_family(text: str = SAMPLE) -> str | None:
    """The family name of an installed font that draws ``text`` (and the sample), or None
    with a warning."""
    from matplotlib import font_manager

    need = text + SAMPLE
    entries = sorted(font_manager.fontManager.ttflist, key=lambda f: (f.name not in KNOWN, KNOWN.index(f.name)
                                                                       if f.name in KNOWN else 0, f.name))
    for entry in entries:
        if covers(entry.fname, need):
            return str(entry.name)
    warnings.warn(NO_FONT, UserWarning, stacklevel=2)
    return None
