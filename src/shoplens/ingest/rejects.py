"""Rows the parser could not split, quarantined with no identifier in clear.

A rejected row is only text, so the rules the validation query applies per column are
applied to its words instead: a word that is the raw id of a stored customer, or that
stands where the source keeps the customer id, becomes ``[ID]`` in ``found`` (which is
also PII-masked); a row with a word that is an erased customer's id is quarantined as
``erased`` and keeps none of its values. The raw row itself is kept only Fernet-encrypted.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass

import duckdb

from shoplens.ingest.quarantine import insert_rows
from shoplens.ingest.readers import Reject
from shoplens.ingest.validate import ERASED_EXPECTED, ERASED_FOUND, row_key
from shoplens.privacy import Keys, mask_text
from shoplens.schema import SUBJECT_COLUMN, SUBJECT_PLACEHOLDER, Table

# the words of a raw row that may be an identifier; erasure splits rows the same way, so
# whatever ingest recognised as someone's id, erasure finds again
ID_WORD = re.compile(r"[^\s,;|\t\"'(){}\[\]:=/]+")


@dataclass(frozen=True)
class RejectContext:
    """What is known about the source whose rows were rejected."""

    table: Table
    label: str
    mapping: dict[str, str | None]  # canonical column -> source column
    columns: list[str]  # the source's columns, in order
    delimiter: str | None  # CSV: split rows on it; None: JSON Lines
    salt: str  # the keyed-hash salt of the validation query


def _value(text: str, ctx: RejectContext, canonical: str) -> str | None:
    """Best reading of one canonical column in a rejected row (None when unreadable)."""
    src = ctx.mapping.get(canonical)
    if src is None:
        return None
    if ctx.delimiter is not None:
        try:
            fields = next(csv.reader(io.StringIO(text), delimiter=ctx.delimiter), [])
        except csv.Error:
            return None
        idx = ctx.columns.index(src) if src in ctx.columns else len(fields)
        return fields[idx].strip() or None if idx < len(fields) else None
    m = re.search(re.escape(json.dumps(src, ensure_ascii=False)) + r'\s*:\s*"?([^",}]*)', text)
    return m.group(1).strip() or None if m else None


def _key_values(text: str, ctx: RejectContext) -> list[str] | None:
    values = []
    for k in ctx.table.key:
        if k == "event_id" and ctx.mapping.get(k) is None:
            return None  # generated from the row number: nothing to match a fixed row with
        v = _value(text, ctx, k)
        if v is None:
            return None
        values.append(v)
    return values


def quarantine_rejects(
    con: duckdb.DuckDBPyConnection, keys: Keys, ingest_id: int, ctx: RejectContext, rejects: list[Reject]
) -> None:
    """Insert the rejected rows into the quarantine, identifiers replaced, erased ones empty."""
    if not rejects:
        return
    subject_col = ctx.table.subject
    words: list[set[str]] = []
    own: list[str | None] = []
    for r in rejects:
        text = r.text or r.found
        subject = _value(text, ctx, SUBJECT_COLUMN) if subject_col is not None else None
        own.append(subject)
        words.append(set(ID_WORD.findall(text)) | ({subject} if subject else set()))
    everything = sorted(set().union(*words))
    pseudo = {w: keys.pseudonym(w) for w in everything}
    known = {r[0] for r in con.execute(
        "SELECT customer_id FROM customers WHERE list_contains(?, customer_id)", [list(pseudo.values())]).fetchall()}
    hashes = {w: keys.subject_hash(p) for w, p in pseudo.items()}
    erased = {r[0] for r in con.execute(
        "SELECT subject_hash FROM erased_subjects WHERE list_contains(?, subject_hash)", [list(hashes.values())]).fetchall()}
    rows: list[tuple[object, ...]] = []
    for r, ws, subject in zip(rejects, words, own, strict=True):
        text = r.text or r.found
        if any(hashes[w] in erased for w in ws):
            rows.append((ingest_id, ctx.table.name, ctx.label, r.line, r.row, SUBJECT_COLUMN, ERASED_EXPECTED,
                         ERASED_FOUND, "erased", None, None))
            continue
        if any(c.pii for c in ctx.table.columns):  # a row that did not split may hold names and addresses anywhere
            head = r.found.split(":", 1)[0] if re.match(r"\d+ fields:|invalid JSON", r.found) else "not a JSON object"
            found = f"{head} (row withheld: it may hold personal data; the encrypted row is kept)"
            rows.append((ingest_id, ctx.table.name, ctx.label, r.line, r.row, "(row)", r.expected, found,
                         "unparseable row", keys.fernet.encrypt(text.encode()).decode(),
                         row_key(ctx.salt, _key_values(text, ctx), text)))
            continue
        found = r.found
        ids = {w for w in ws if pseudo[w] in known} | ({subject} if subject else set())
        for w in sorted(ids, key=len, reverse=True):  # even short ids: over-redacting a reject costs little
            found = re.sub(rf"(?<![0-9A-Za-z]){re.escape(w)}(?![0-9A-Za-z])", SUBJECT_PLACEHOLDER, found)
        rows.append((ingest_id, ctx.table.name, ctx.label, r.line, r.row, "(row)", r.expected, mask_text(found),
                     "unparseable row", keys.fernet.encrypt(text.encode()).decode(),
                     row_key(ctx.salt, _key_values(text, ctx), text)))
    insert_rows(con, rows)
