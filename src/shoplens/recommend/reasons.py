"""The phrases behind each recommendation, in zh and en, read from
``rules/recommend.toml`` (data, not code): one per source, filled with the evidence the
source's own score decomposes into."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

ASPECT_ZH = {"quality": "质量", "price": "价格", "logistics": "物流", "service": "服务", "packaging": "包装",
             "appearance": "外观", "function": "功能", "size": "尺码"}


@cache
def _default_text() -> str:
    return resources.files("shoplens").joinpath("rules/recommend.toml").read_text("utf-8")


def load_rules(path: str | Path | None = None) -> dict[str, Any]:
    """The whole ``recommend.toml`` (the shipped one when ``path`` is None)."""
    return tomllib.loads(Path(path).read_text("utf-8") if path else _default_text())


@dataclass(frozen=True)
class Reasons:
    phrases: dict[str, dict[str, str]]

    @classmethod
    def load(cls, path: str | Path | None = None) -> Reasons:
        return cls(load_rules(path).get("reasons", {}))

    def render(self, source: str, evidence: dict[str, Any]) -> tuple[str, str]:
        """(en, zh) for ``source`` with ``evidence``; a phrase whose evidence is missing
        falls back to the plain popularity phrase rather than printing a blank."""
        p = self.phrases.get(source) or self.phrases["popular"]
        items = evidence.get("items")
        if items is not None and not items:
            p = self.phrases["popular"]
        values = {"count": evidence.get("count", ""), "interval": evidence.get("interval"),
                  "group": evidence.get("group", ""), "aspect": evidence.get("aspect", ""),
                  "aspect_zh": ASPECT_ZH.get(evidence.get("aspect", ""), evidence.get("aspect", ""))}
        if source == "history" and values["interval"] is None:
            return (p.get("en_no_interval", p["en"]).format(**values), p.get("zh_no_interval", p["zh"]).format(**values))
        en = p["en"].format(items=" and ".join(f'"{i}"' for i in items or []), **values)
        zh = p["zh"].format(items="和".join(f"「{i}」" for i in items or []), **values)
        return en, zh
