"""The hand-labelled aspect clauses (``data/aspect_eval.tsv``) and which of them are held
out. Its own module so that both the aspect analyser and the learned aspect model
(``aspect_model``, which trains on the non-test rows) read them without importing each
other."""

from __future__ import annotations

from importlib import resources
from typing import Any


def is_test(row: dict[str, Any]) -> bool:
    """Held-out rows (samples ``test`` and ``test2``): never used to train, tune or revise."""
    return str(row["sample"]).startswith("test")


def load_eval_set() -> list[dict[str, Any]]:
    """The hand-labelled clauses: id, lang, sample, labels {aspect: polarity}, clause."""
    rows = []
    text = resources.files("shoplens").joinpath("data/aspect_eval.tsv").read_text("utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    for line in lines[1:]:
        rid, lang, sample, labels, clause = line.split("\t")
        parsed = {} if labels == "-" else dict(x.split(":") for x in labels.split(";"))
        rows.append({"id": int(rid), "lang": lang, "sample": sample, "labels": parsed, "clause": clause})
    return rows
