"""Named RFM segments from rules that are data (a TOML file), compiled to one Ibis
``cases`` expression so they run wherever the features run."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import ibis
import ibis.expr.types as ir

from shoplens.errors import ConfigError

NO_PURCHASE = ("No purchase", "未购买")


@dataclass(frozen=True)
class RfmRule:
    """A segment: R score and FM score ranges (inclusive), English and Chinese names."""

    name: str
    name_zh: str
    r: tuple[int, int]
    fm: tuple[int, int]


def load_rules(source: str = "default") -> list[RfmRule]:
    """Read segment rules: ``default`` (bundled) or a path to a TOML file.

    >>> load_rules()[0].name
    'Champions'
    """
    if source == "default":
        text = resources.files("shoplens").joinpath("rules/rfm_segments.toml").read_text("utf-8")
        origin = "bundled rfm_segments.toml"
    else:
        p = Path(source)
        if not p.exists():
            raise ConfigError(f"[features] rfm_rules: file not found: {p}")
        text, origin = p.read_text("utf-8"), str(p)
    try:
        data = tomllib.loads(text)
        rules = []
        for i, seg in enumerate(data["segment"]):
            extra = set(seg) - {"name", "name_zh", "r", "fm"}
            if extra:
                raise ConfigError(f"{origin}: segment {i}: unknown key(s) {sorted(extra)}")
            r, fm = tuple(seg["r"]), tuple(seg["fm"])
            for label, rng in (("r", r), ("fm", fm)):
                if len(rng) != 2 or not 1 <= rng[0] <= rng[1] <= 5:
                    raise ConfigError(f"{origin}: segment {seg['name']!r}: '{label}' must be [low, high] within 1..5, found {list(rng)}")
            rules.append(RfmRule(seg["name"], seg.get("name_zh", seg["name"]), r, fm))  # type: ignore[arg-type]
    except (KeyError, TypeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{origin}: malformed RFM rules ({err!r}); expected [[segment]] tables with name, r, fm") from None
    return rules


def rfm_segment_exprs(
    r: ir.IntegerValue, f: ir.IntegerValue, m: ir.IntegerValue, rules: list[RfmRule]
) -> tuple[ir.StringValue, ir.StringValue]:
    """English and Chinese segment names; customers without a purchase get 'No purchase'."""
    fm = (f + m + 1) // 2
    conds = [(r.between(*rule.r) & fm.between(*rule.fm)) for rule in rules]
    other = ("Other", "其他")
    en = ibis.cases(*[(c, rule.name) for c, rule in zip(conds, rules, strict=True)], else_=other[0])
    zh = ibis.cases(*[(c, rule.name_zh) for c, rule in zip(conds, rules, strict=True)], else_=other[1])
    return r.isnull().ifelse(NO_PURCHASE[0], en), r.isnull().ifelse(NO_PURCHASE[1], zh)
